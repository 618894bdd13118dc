"""Sync tasks in threads of the worker (rota.worker.threads.ThreadRunner): results,
timeouts and cancels raised inside the thread, and a thread that does not stop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from rota import Rota, cancel_requested
from rota.core.errors import JobCancelled
from rota.core.outcomes import ExecKind
from rota.core.payload import encode_arguments
from rota.worker.threads import ThreadRunner

T = TypeVar("T")
app = Rota("sqlite:///:memory:")
release = threading.Event()


@app.task(name="t.add")
def add(a: int, b: int) -> int:
    return a + b


@app.task(name="t.spin")
def spin(seconds: float) -> str:
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # Python code: an exception raised here stops it
        pass
    return "finished"


@app.task(name="t.polite")
def polite(seconds: float) -> str:
    try:
        spin(seconds)
    except JobCancelled:
        return f"stopped, cancel_requested={cancel_requested()}"
    return "finished"


@app.task(name="t.blocked")
def blocked() -> str:
    release.wait(30)  # a C call: nothing raised in the thread stops it
    return "released"


@app.task(name="t.thread")
def thread_name() -> str:
    return threading.current_thread().name


def args(*a: Any) -> str:
    return encode_arguments(list(a), {})


def with_runner(size: int, body: Callable[[ThreadRunner], Awaitable[T]]) -> T:
    async def main() -> T:
        runner = ThreadRunner(app, size)
        await runner.start()
        try:
            return await body(runner)
        finally:
            await runner.close(0)

    return asyncio.run(main())


def test_results_and_errors() -> None:
    async def body(r: ThreadRunner) -> None:
        ok = await r.run("1", "t.add", args(2, 3), None)
        assert (ok.kind, ok.result) == (ExecKind.OK, "5")
        bad = await r.run("2", "t.add", args("x", 1), None)
        assert bad.kind is ExecKind.ERROR and "TypeError" in (bad.error or "")
        assert (await r.run("3", "t.thread", args(), None)).result == '"rota-task"'

    with_runner(2, body)


def test_a_timeout_stops_python_code_and_the_thread_is_reused() -> None:
    async def body(r: ThreadRunner) -> None:
        res = await r.run("1", "t.spin", args(30), 0.2)
        assert (res.kind, res.error) == (ExecKind.TIMEOUT, "timed out after 0.2 s")
        assert (await r.run("2", "t.add", args(1, 1), None)).result == "2"

    with_runner(1, body)


def test_a_cancel_raises_in_the_task_which_may_clean_up() -> None:
    async def body(r: ThreadRunner) -> None:
        job = asyncio.ensure_future(r.run("1", "t.polite", args(30), None))
        await asyncio.sleep(0.2)
        await r.cancel("1", grace=10)
        res = await job
        assert res.result == '"stopped, cancel_requested=True"'

    with_runner(1, body)


def test_a_blocked_task_is_reported_and_its_thread_replaced() -> None:
    async def body(r: ThreadRunner) -> None:
        res = await r.run("1", "t.blocked", args(), 0.2)
        assert res.kind is ExecKind.TIMEOUT
        job = asyncio.ensure_future(r.run("2", "t.blocked", args(), None))
        await asyncio.sleep(0.1)
        await r.cancel("2", grace=0.2)
        assert (await job).kind is ExecKind.CANCELLED
        # both threads are still blocked; the runner has new ones for new jobs
        assert (await r.run("3", "t.add", args(1, 2), None)).result == "3"
        waiting = asyncio.ensure_future(r.run("4", "t.add", args(0, 0), None))
        await r.cancel("4")  # never started, or done already: either way it ends
        assert (await waiting).kind in (ExecKind.CANCELLED, ExecKind.OK)

    try:
        with_runner(1, body)
    finally:
        release.set()
