"""Tasks the acceptance tests run on real worker processes.

``build(url)`` makes an app with every task registered; the workers load ``app`` (its
store comes from ``ROTA_STORE``, which the fleet sets), and a test builds a client of the
same tasks on its own store URL. Each worker process is told its name through
``ROTA_TEST_NODE`` and where to record runs through ``ROTA_TEST_RUNS`` (a directory).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any

from rota import Retry, Rota

RUNS_FILE = "runs.log"


def node_name() -> str:
    return os.environ.get("ROTA_TEST_NODE", "?")


def runs_dir() -> Path:
    return Path(os.environ["ROTA_TEST_RUNS"])


def append_line(name: str, line: str) -> None:
    """One ``O_APPEND`` write per line: lines from many processes never interleave."""
    fd = os.open(runs_dir() / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_lines(directory: Path, name: str = RUNS_FILE) -> list[list[str]]:
    """The records written by ``append_line``, split into fields."""
    path = directory / name
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def build(store: str | None = None) -> Rota:
    app = Rota(store)

    @app.task(name="acc.square")
    def square(x: int, ms: int = 0) -> dict[str, Any]:
        """Sync (runs in a thread of the worker, the default)."""
        time.sleep(ms / 1000)
        return {"value": x * x, "node": node_name(), "pid": os.getpid()}

    @app.task(name="acc.async_double")
    async def async_double(x: int, ms: int = 0) -> dict[str, Any]:
        """Async (runs on the worker's event loop)."""
        await asyncio.sleep(ms / 1000)
        return {"value": 2 * x, "node": node_name(), "pid": os.getpid()}

    @app.task(name="acc.add")
    def add(a: int, b: int = 0) -> int:
        return a + b

    # in a pool process: the fencing tests freeze the worker while its run goes on
    @app.task(name="acc.record", retries=3, backoff=0.1, backoff_max=0.5, isolation="process")
    def record(key: str, seconds: float) -> dict[str, Any]:
        """Log the start and the end of every run (a nonce names the run), so a test
        can tell which runs were cut short and which one the store kept."""
        nonce = uuid.uuid4().hex[:12]
        node, pid = node_name(), os.getpid()
        append_line(RUNS_FILE, f"start {key} {nonce} {node} {pid} {time.time():.6f}")
        time.sleep(seconds)
        append_line(RUNS_FILE, f"end {key} {nonce} {node} {pid} {time.time():.6f}")
        return {"key": key, "nonce": nonce, "node": node, "pid": pid}

    @app.task(name="acc.always_fails", backoff=0.1, backoff_max=0.2)
    def always_fails(message: str) -> None:
        raise ValueError(message)

    @app.task(name="acc.retry_then_ok", backoff=5.0)
    def retry_then_ok(key: str, failures: int, delay: float) -> int:
        """Asks for a retry (after ``delay`` s) ``failures`` times, then returns the run
        count. The runs are counted in a file, since a task cannot see its attempt."""
        append_line(f"retry-{key}.log", f"{key} {time.time():.6f}")
        runs = len(read_lines(runs_dir(), f"retry-{key}.log"))
        if runs <= failures:
            raise Retry(delay=delay, reason=f"run {runs}: not yet")
        return runs

    @app.task(name="acc.sleepy", isolation="process")  # killed at its timeout
    def sleepy(seconds: float) -> str:
        time.sleep(seconds)
        return "woke up"

    @app.task(name="acc.async_sleepy")
    async def async_sleepy(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "woke up"

    @app.task(name="acc.crash", isolation="process")
    def crash(code: int) -> None:
        """Takes its pool process down without a word."""
        os._exit(code)

    return app


app = build()
