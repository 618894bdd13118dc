"""Servers the hosts reach over the bridge: a private ``redis-server`` bound to the bridge
address, ``socat`` forwarding the bridge address to the machine's PostgreSQL, and a small
user-space latency proxy (this kernel has no netem)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.hosts.netns import Network

PG_HOST, PG_PORT, PG_DB = "127.0.0.1", 5432, "test"


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def wait_port(address: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answers on {address}:{port}") from None
            time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


@contextmanager
def private_redis(net: Network, workdir: Path) -> Iterator[str]:
    """A ``redis-server`` on the bridge address (free port, nothing on disk); its URL base
    ``redis://addr:port/0``. Killed by pid on the way out."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed")
    port = free_port(net.gateway)
    log = (workdir / f"redis-{port}.log").open("wb")
    proc = subprocess.Popen(
        ["redis-server", "--bind", net.gateway, "--port", str(port), "--save", "",
         "--appendonly", "no", "--protected-mode", "no", "--dir", str(workdir)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    net.add_pid(proc.pid)
    try:
        wait_port(net.gateway, port)
        yield f"redis://{net.gateway}:{port}/0"
    finally:
        _stop(proc)
        log.close()


@contextmanager
def socat_forward(net: Network, to_host: str, to_port: int, workdir: Path) -> Iterator[int]:
    """``socat`` listening on the bridge address (free port) and forwarding each connection
    to ``to_host:to_port``; the port. Killed by pid on the way out."""
    if shutil.which("socat") is None:
        raise RuntimeError("socat is not installed")
    port = free_port(net.gateway)
    log = (workdir / f"socat-{port}.log").open("wb")
    proc = subprocess.Popen(
        ["socat", f"TCP-LISTEN:{port},bind={net.gateway},reuseaddr,fork,backlog=512",
         f"TCP:{to_host}:{to_port}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    net.add_pid(proc.pid)
    try:
        wait_port(net.gateway, port)
        yield port
    finally:
        _stop(proc)  # its forked children die with their connections
        log.close()


@contextmanager
def postgres_via_socat(net: Network, workdir: Path) -> Iterator[str]:
    """A fresh schema on the machine's PostgreSQL, reached through socat on the bridge
    address; its URL. The schema is dropped afterwards."""
    import psycopg

    schema = f"rota_hosts_{uuid.uuid4().hex[:12]}"
    with socat_forward(net, PG_HOST, PG_PORT, workdir) as port:
        try:
            yield f"postgresql://postgres@{net.gateway}:{port}/{PG_DB}?schema={schema}"
        finally:
            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(
                    f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{PG_DB}", autocommit=True
                ) as conn,
            ):
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


class LatencyProxy:
    """An asyncio TCP forwarder (in a thread of its own) that holds every chunk ``delay``
    seconds before passing it on, each way: user-space latency for one host's link."""

    def __init__(self, listen: str, target: tuple[str, int], delay: float) -> None:
        self.listen, self.target, self.delay = listen, target, delay
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True, name="latency-proxy")
        self._server: asyncio.Server | None = None

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("latency proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, self.listen, 0)
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy ``reader`` to ``writer``, each chunk ``delay`` late (order kept)."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def later() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - self._loop.time()))
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(later())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((self._loop.time() + self.delay, data))
        except OSError:
            pass
        finally:
            queue.put_nowait((0.0, b""))
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await sender
            with contextlib.suppress(OSError):
                writer.close()
