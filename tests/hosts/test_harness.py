"""The harness itself: each cut cuts (and only the cut host), heals, the latency proxy adds
its delay, and nothing the network made outlives it."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from tests.hosts.netns import NetnsUnavailable, Network, sh
from tests.hosts.services import LatencyProxy
from tests.stores import skip_or_fail

PROBE = """
import socket, sys, time
t = time.monotonic()
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5) as s:
        s.sendall(b"ping\\n")
        s.settimeout(1.5)
        ok = s.recv(16) == b"ping\\n"
    print("ok" if ok else "bad", time.monotonic() - t)
except OSError as exc:
    print(type(exc).__name__, time.monotonic() - t)
"""


@pytest.fixture
def echo(network: Network) -> Iterator[tuple[str, int]]:
    """A TCP echo server on the bridge address."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((network.gateway, 0))
    srv.listen(64)
    srv.settimeout(0.2)
    stop = threading.Event()

    def answer(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(2)
            with contextlib.suppress(OSError):
                conn.sendall(conn.recv(16))

    def serve() -> None:
        # One thread per connection: the half-open connections a lossy link leaves behind
        # (a lost FIN) must not queue a later probe behind their 2 s read timeouts.
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield network.gateway, srv.getsockname()[1]
    stop.set()
    thread.join(5)
    srv.close()


def probe(network: Network, host: str, target: tuple[str, int]) -> tuple[str, float]:
    out = network.hosts[host].run("python3", "-c", PROBE, target[0], str(target[1]))
    word, seconds = out.split()
    return word, float(seconds)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "cut, failure",
    [
        ("link_down", "OSError"),  # ENETUNREACH at once
        ("blackhole", "OSError"),
        ("drop", "TimeoutError"),  # silent
        ("reject", "ConnectionRefusedError"),  # TCP reset
        ("mute", "TimeoutError"),
        ("deafen", "TimeoutError"),
    ],
)
def test_each_cut_cuts_one_host_and_heals(
    network: Network, echo: tuple[str, int], cut: str, failure: str
) -> None:
    assert probe(network, "w1", echo)[0] == "ok"
    getattr(network.hosts["w1"], cut)()
    word, _ = probe(network, "w1", echo)
    assert word != "ok"
    if failure != "OSError":
        assert word == failure
    assert probe(network, "w2", echo)[0] == "ok", "a cut on w1 reached w2"
    network.hosts["w1"].heal()
    assert probe(network, "w1", echo)[0] == "ok"


@pytest.mark.timeout(60)
def test_loss_drops_some_packets_not_all(network: Network, echo: tuple[str, int]) -> None:
    host = network.hosts["w1"]
    host.loss(50)
    rules = host.run("nft", "list", "ruleset")
    assert "numgen random mod 100 < 50" in rules
    # 30 short connects: with half the packets gone each way, some make it, some do not.
    code = (
        "import socket, sys\n"
        "ok = 0\n"
        "for _ in range(30):\n"
        "    try:\n"
        "        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.3).close()\n"
        "        ok += 1\n"
        "    except OSError:\n"
        "        pass\n"
        "print(ok)\n"
    )
    made = int(host.run("python3", "-c", code, echo[0], str(echo[1])))
    assert 0 < made < 30, made
    host.heal()
    assert probe(network, "w1", echo)[0] == "ok"


@pytest.mark.timeout(60)
def test_latency_proxy_delays_each_way(network: Network, echo: tuple[str, int]) -> None:
    direct = min(probe(network, "w1", echo)[1] for _ in range(3))
    with LatencyProxy(network.gateway, echo, delay=0.2) as proxy:
        word, slow = probe(network, "w1", (network.gateway, proxy.port))
    assert word == "ok"
    assert slow >= direct + 0.35  # 0.2 s each way


@pytest.mark.timeout(60)
def test_destroy_leaves_nothing() -> None:
    try:
        net = Network.create(["a", "b"])
    except NetnsUnavailable as exc:
        skip_or_fail(f"hosts as network namespaces are not available: {exc}")
    child = subprocess.Popen([*net.hosts["a"].prefix(), "sleep", "300"])
    time.sleep(0.2)
    net.destroy()
    assert child.wait(10) != 0
    names = sh("ip", "netns", "list")
    links = sh("ip", "-o", "link", "show")
    assert net.tag not in names and net.tag not in links
