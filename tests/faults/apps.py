"""Tasks the fault-injection suite runs on real worker processes.

The workers load ``app`` (its store comes from ``ROTA_STORE``); a test builds a client of
the same tasks with ``build(url)``. Runs are logged with one ``O_APPEND`` write per line
into ``$ROTA_TEST_RUNS/runs.log`` (``start|end key nonce node pid time``), through the
acceptance suite's helpers.

``ROTA_FAULT_SKEW`` (seconds) moves this process's wall clock: ``time.time``,
``time.time_ns`` and ``datetime.now``/``utcnow`` run that far ahead. A worker loads this
module before it registers, so the whole worker (and its pool children, which import the
app too) lives with a skewed clock, while the store keeps its own.
"""

from __future__ import annotations

import asyncio
import ctypes
import datetime as _dt
import os
import time
import uuid
from typing import Any

from rota import Rota
from tests.acceptance.apps.basic import RUNS_FILE, append_line, node_name


def _install_skew(seconds: float) -> None:
    real_time, real_time_ns = time.time, time.time_ns

    def fake_time() -> float:
        return real_time() + seconds

    def fake_time_ns() -> int:
        return real_time_ns() + int(seconds * 1e9)

    class SkewedDateTime(_dt.datetime):
        @classmethod
        def now(cls, tz: _dt.tzinfo | None = None) -> SkewedDateTime:
            return cls.fromtimestamp(fake_time(), tz)

        @classmethod
        def utcnow(cls) -> SkewedDateTime:
            return cls.fromtimestamp(fake_time(), _dt.UTC).replace(tzinfo=None)

    time.time = fake_time
    time.time_ns = fake_time_ns
    _dt.datetime = SkewedDateTime  # type: ignore[misc]


SKEW = float(os.environ.get("ROTA_FAULT_SKEW", "0") or 0)
if SKEW:
    _install_skew(SKEW)


def build(store: str | None = None) -> Rota:
    app = Rota(store)

    @app.task(name="fault.record", retries=10, backoff=0.05, backoff_max=0.2)
    async def record(key: str, ms: int = 0) -> dict[str, Any]:
        """Async: runs on the worker's own event loop, so it dies with the worker.
        Logs its start and its end (a nonce names the run)."""
        nonce = uuid.uuid4().hex[:12]
        node, pid = node_name(), os.getpid()
        append_line(RUNS_FILE, f"start {key} {nonce} {node} {pid} {time.time():.6f}")
        await asyncio.sleep(ms / 1000)
        append_line(RUNS_FILE, f"end {key} {nonce} {node} {pid} {time.time():.6f}")
        return {"key": key, "nonce": nonce, "node": node, "pid": pid}

    @app.task(name="fault.clock")
    def clock() -> dict[str, Any]:
        """What the worker's pool process believes the time is."""
        return {"time": time.time(), "node": node_name(), "pid": os.getpid()}

    @app.task(name="fault.hang", timeout=1.0, isolation="process")
    def hang() -> None:
        """Sync, never returns (the pool process must be killed at the timeout)."""
        while True:
            time.sleep(3600)

    @app.task(name="fault.async_hang", timeout=1.0)
    async def async_hang() -> None:
        await asyncio.Event().wait()

    @app.task(name="fault.exit", retries=2, backoff=0.05, backoff_max=0.1, isolation="process")
    def exit_now(code: int) -> None:
        """Takes its pool process down without a word."""
        append_line("crash.log", f"exit {os.getpid()}")
        os._exit(code)

    @app.task(name="fault.segfault", retries=2, backoff=0.05, backoff_max=0.1, isolation="process")
    def segfault() -> None:
        """Dereferences NULL: SIGSEGV in the pool process."""
        append_line("crash.log", f"segv {os.getpid()}")
        ctypes.string_at(0)

    @app.task(name="fault.echo", retries=2, backoff=0.05, backoff_max=0.1)
    def echo(value: Any = None) -> Any:
        return value

    @app.task(name="fault.kw")
    def kw(*args: Any, **kwargs: Any) -> None:
        """Takes anything (for submit-side input tests)."""

    return app


app = build()
