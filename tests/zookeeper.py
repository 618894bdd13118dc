"""A private ZooKeeper 3.8 server for tests and benchmarks (Debian's ``zookeeperd``): a
config in a temporary folder, a free loopback port, started with ``zkServer.sh start`` and
stopped by its process id (SIGTERM, then SIGKILL), even when the test fails. A test that
needs one skips when it cannot start, and fails under ``ROTA_REQUIRE_SERVICES=1``."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

ZK_SERVER = Path("/usr/share/zookeeper/bin/zkServer.sh")
TICK_MS = 500  # session timeouts from 1 s (2 ticks) to 10 s (20 ticks)
TEST_SESSION_TIMEOUT = 2.0  # what tests ask for: a lost node is dead in about 2 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def four_letter(port: int, word: str = "ruok", timeout: float = 1.0) -> str:
    """Send a four-letter command; the answer, or "" when the server does not answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(word.encode())
            chunks = []
            while chunk := s.recv(4096):
                chunks.append(chunk)
            return b"".join(chunks).decode(errors="replace")
    except OSError:
        return ""


class ZooKeeperServer:
    """One standalone server on ``port`` with its data in ``root``."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.data = root / "data"
        self.cfg = root / "zoo.cfg"
        self.pidfile = root / "zk.pid"
        self.pid: int | None = None
        self.data.mkdir(parents=True, exist_ok=True)
        self.cfg.write_text(
            f"tickTime={TICK_MS}\n"
            f"dataDir={self.data}\n"
            f"clientPort={self.port}\n"
            "clientPortAddress=127.0.0.1\n"
            "admin.enableServer=false\n"
            "4lw.commands.whitelist=ruok,srvr,envi\n"
            # Keep the test server's files small and its start fast.
            "snapCount=10000\n"
            "preAllocSize=1024\n"
        )

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, root: str = "/rota", session_timeout: float = TEST_SESSION_TIMEOUT) -> str:
        return f"zookeeper://{self.hosts}{root}?session_timeout={session_timeout:g}"

    def start(self, timeout: float = 60.0) -> None:
        """Start it and wait until it answers ``ruok``; raises RuntimeError if it does not."""
        if not ZK_SERVER.exists() or shutil.which("java") is None:
            raise RuntimeError("ZooKeeper is not installed (apt-get install zookeeperd)")
        env = {
            **os.environ,
            "ZOO_LOG_DIR": str(self.root),
            "ZOOPIDFILE": str(self.pidfile),
            "SERVER_JVMFLAGS": "-Xmx192m -XX:+UseSerialGC -XX:TieredStopAtLevel=1",
        }
        with (self.root / "start.log").open("ab") as out:
            subprocess.run(
                [str(ZK_SERVER), "start", str(self.cfg)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid is None and self.pidfile.exists():
                text = self.pidfile.read_text().strip()
                self.pid = int(text) if text.isdigit() else None
            if self.pid is not None and four_letter(self.port) == "imok":
                return
            if self.pid is not None and not _alive(self.pid):
                break
            time.sleep(0.1)
        log = self.root / "start.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        self.stop()
        raise RuntimeError(f"ZooKeeper did not start on port {self.port}: {tail}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Stop it by pid: ``sig`` (SIGTERM: a clean stop; SIGKILL: a crash), then SIGKILL
        if it is still there after ``timeout``."""
        pid, self.pid = self.pid, None
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        self.pidfile.unlink(missing_ok=True)

    def restart(self, downtime: float = 1.0, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        time.sleep(downtime)
        self.start()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie child of ours counts as gone, and is reaped)."""
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextlib.contextmanager
def zookeeper_server(root: Path) -> Iterator[ZooKeeperServer]:
    """A started private server, stopped by pid afterwards whatever happens; skips (or
    fails under ROTA_REQUIRE_SERVICES=1) when it cannot start."""
    from tests.stores import skip_or_fail

    root.mkdir(parents=True, exist_ok=True)
    server = ZooKeeperServer(root)
    try:
        try:
            server.start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            skip_or_fail(f"cannot start a private ZooKeeper: {exc}")
        yield server
    finally:
        server.stop(signal.SIGKILL, timeout=5.0)
