"""Running tasks: sync tasks in a pool of forked child processes (rota.worker.pool), async
tasks on the loop (rota.worker.runner)."""

from __future__ import annotations

import asyncio
import ctypes
import faulthandler
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from rota import JobCancelled, Retry, Rota
from rota.core.outcomes import ExecKind, ExecResult
from rota.core.payload import encode_arguments
from rota.worker.pool import ProcessPool
from rota.worker.runner import encode_result, prepare, run_async

T = TypeVar("T")

app = Rota("sqlite:///:memory:")


@app.task(name="add")
def add(a: int, b: int = 0) -> int:
    return a + b


@app.task(name="noop")
def noop() -> None:
    return None


@app.task(name="fail")
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(name="retry_later")
def retry_later(delay: float) -> None:
    raise Retry(delay=delay, reason="not yet")


@app.task(name="not_json")
def not_json() -> Any:
    return {1, 2, 3}


@app.task(name="sleep")
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="mark_then_sleep")
def mark_then_sleep(path: str, seconds: float) -> float:
    Path(path).write_text("running")
    time.sleep(seconds)
    return seconds


@app.task(name="exit_hard")
def exit_hard(code: int) -> None:
    os._exit(code)


@app.task(name="segfault")
def segfault() -> None:
    faulthandler.disable()  # keep the test output quiet
    ctypes.string_at(0)


@app.task(name="sys_exit")
def sys_exit() -> None:
    raise SystemExit(3)


@app.task(name="interrupt")
def interrupt() -> None:
    raise KeyboardInterrupt


@app.task(name="pid")
def pid() -> int:
    return os.getpid()


@app.task(name="echo")
def echo(value: Any) -> Any:
    return value


@app.task(name="cleanup_on_cancel")
def cleanup_on_cancel(path: str) -> None:
    Path(path).write_text("running")
    try:
        time.sleep(30)
    except JobCancelled:
        Path(path).write_text("cleaned up")
        raise


@app.task(name="async_in_child")
async def async_in_child(x: int) -> int:
    await asyncio.sleep(0)
    return x * 2


@app.task(name="async_add")
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@app.task(name="async_sleep")
async def async_sleep(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


@app.task(name="async_fail")
async def async_fail() -> None:
    await asyncio.sleep(0)
    raise RuntimeError("boom")


@app.task(name="async_retry")
async def async_retry() -> None:
    raise Retry(delay=2.5)


@app.task(name="async_own_timeout")
async def async_own_timeout() -> None:
    raise TimeoutError("upstream timed out")


def payload(*args: Any, **kwargs: Any) -> str:
    return encode_arguments(args, kwargs)


def with_pool(size: int, body: Callable[[ProcessPool], Awaitable[T]]) -> T:
    """Run ``body(pool)`` with a started pool, closed afterwards (children reaped)."""

    async def main() -> T:
        pool = ProcessPool(app, size)
        await pool.start()
        try:
            return await body(pool)
        finally:
            await pool.close(grace=0)
            assert pool.pids == []

    return asyncio.run(main())


def alive(process_id: int) -> bool:
    try:
        os.kill(process_id, 0)
    except ProcessLookupError:
        return False
    # a zombie still "exists": look at its state
    try:
        state = Path(f"/proc/{process_id}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def wait_for_pid(pool: ProcessPool, job_id: str) -> int:
    for _ in range(500):
        found = pool.pid_of(job_id)
        if found is not None:
            return found
        await asyncio.sleep(0.005)
    raise AssertionError(f"job {job_id} never started")


async def wait_for_file(path: Path) -> None:
    """Until a task wrote ``path``: its child is set up (signal handlers included)."""
    for _ in range(2000):
        if path.exists():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{path} was never written")


# ---- results ---------------------------------------------------------------------------
def test_ok_result_is_json_text() -> None:
    async def body(pool: ProcessPool) -> None:
        res = await pool.run("j1", "add", payload(2, b=3), None)
        assert res == ExecResult(ExecKind.OK, result="5")
        res = await pool.run("j2", "noop", payload(), 5.0)
        assert res.kind == "ok" and res.result == "null"

    with_pool(1, body)


def test_exception_gives_one_line_error_and_traceback() -> None:
    async def body(pool: ProcessPool) -> None:
        res = await pool.run("j", "fail", payload("bad width"), None)
        assert res.kind == "error" and not res.fatal
        assert res.error == "ValueError: bad width"
        assert res.traceback is not None
        assert "Traceback" in res.traceback and "in fail" in res.traceback
        assert "raise ValueError(message)" in res.traceback
        assert "_call_task" not in res.traceback  # the runner's own frame is left out
        # the child survives an exception and goes on
        assert (await pool.run("j2", "add", payload(1), None)).result == "1"

    with_pool(1, body)


def test_retry_carries_its_delay() -> None:
    async def body(pool: ProcessPool) -> None:
        res = await pool.run("j", "retry_later", payload(7.5), None)
        assert res.kind == "retry" and res.retry_delay == 7.5
        assert res.error == "Retry: not yet" and res.traceback is not None

    with_pool(1, body)


def test_non_json_return_value_is_an_error() -> None:
    async def body(pool: ProcessPool) -> None:
        res = await pool.run("j", "not_json", payload(), None)
        assert res.kind == "error" and not res.fatal
        assert res.error is not None and "return value" in res.error and "not JSON" in res.error

    with_pool(1, body)


def test_system_exit_and_keyboard_interrupt_are_reported_as_errors() -> None:
    async def body(pool: ProcessPool) -> None:
        res = await pool.run("j1", "sys_exit", payload(), None)
        assert res.kind == "error" and res.error == "SystemExit: 3"
        res = await pool.run("j2", "interrupt", payload(), None)
        assert res.kind == "error" and res.error == "KeyboardInterrupt"
        assert (await pool.run("j3", "add", payload(4), None)).result == "4"

    with_pool(1, body)


def test_corrupt_payload_and_unknown_task_are_fatal() -> None:
    async def body(pool: ProcessPool) -> None:
        res = await pool.run("j1", "add", "{not json", None)
        assert res.kind == "error" and res.fatal
        assert res.error is not None and res.error.startswith("corrupt payload:")
        res = await pool.run("j2", "add", '{"args": 1}', None)
        assert res.fatal and res.error is not None and res.error.startswith("corrupt payload:")
        res = await pool.run("j3", "no.such.task", payload(), None)
        assert res.kind == "error" and res.fatal
        assert res.error is not None and "no.such.task" in res.error
        # A damaged row can come back as bytes that are not UTF-8: still a clear verdict.
        res = await pool.run("j4", "add", b'{"args": [1, \xff]}', None)  # type: ignore[arg-type]
        assert res.fatal and res.error is not None and res.error.startswith("corrupt payload:")

    with_pool(1, body)


def test_async_task_sent_to_the_pool_runs_in_the_child() -> None:
    async def body(pool: ProcessPool) -> None:
        res = await pool.run("j", "async_in_child", payload(21), None)
        assert res == ExecResult(ExecKind.OK, result="42")

    with_pool(1, body)


def test_large_arguments_and_results_cross_the_pipe() -> None:
    big = "x" * 900_000  # more than a socket buffer holds: partial writes and reads

    async def body(pool: ProcessPool) -> None:
        results = await asyncio.gather(
            *(pool.run(f"j{i}", "echo", payload(big + str(i)), None) for i in range(3))
        )
        assert [r.result for r in results] == [f'"{big}{i}"' for i in range(3)]

    with_pool(2, body)


# ---- timeouts, crashes, cancel ----------------------------------------------------------
def test_timeout_kills_the_child_and_the_pool_still_works() -> None:
    async def body(pool: ProcessPool) -> None:
        before = set(pool.pids)
        started = time.monotonic()
        res = await pool.run("slow", "sleep", payload(30), 0.3)
        assert time.monotonic() - started < 2.0
        assert res.kind == "timeout" and res.error == "timed out after 0.3 s"
        assert (await pool.run("next", "add", payload(1, b=1), 1.0)).result == "2"
        assert len(pool.pids) == 1 and set(pool.pids) != before
        for old in before:
            for _ in range(200):
                if not alive(old):
                    break
                await asyncio.sleep(0.01)
            assert not alive(old)

    with_pool(1, body)


def test_exit_and_segfault_crash_and_the_pool_recovers() -> None:
    async def body(pool: ProcessPool) -> None:
        res = await pool.run("j1", "exit_hard", payload(3), None)
        assert res.kind == "crashed"
        assert res.error == "worker process died (exit code 3)"
        res = await pool.run("j2", "segfault", payload(), None)
        assert res.kind == "crashed"
        assert res.error == "worker process died (exit code -11, SIGSEGV)"
        results = await asyncio.gather(
            *(pool.run(f"k{i}", "add", payload(i), None) for i in range(4))
        )
        assert [r.result for r in results] == ["0", "1", "2", "3"]
        assert len(pool.pids) == 2

    with_pool(2, body)


def test_child_killed_from_outside_crashes_its_job() -> None:
    async def body(pool: ProcessPool) -> None:
        job = asyncio.create_task(pool.run("j", "sleep", payload(30), None))
        os.kill(await wait_for_pid(pool, "j"), signal.SIGKILL)
        res = await job
        assert res.kind == "crashed" and res.error == "worker process died (exit code -9, SIGKILL)"
        assert (await pool.run("j2", "add", payload(5), None)).result == "5"

    with_pool(1, body)


def test_idle_child_killed_from_outside_is_replaced() -> None:
    async def body(pool: ProcessPool) -> None:
        (victim,) = pool.pids
        os.kill(victim, signal.SIGKILL)
        for _ in range(200):
            if pool.pids and victim not in pool.pids:
                break
            await asyncio.sleep(0.01)
        assert len(pool.pids) == 1 and victim not in pool.pids
        assert (await pool.run("j", "add", payload(2), None)).result == "2"

    with_pool(1, body)


def test_sigterm_lets_a_child_finish_its_job_then_it_is_replaced(tmp_path: Path) -> None:
    marker = tmp_path / "running"

    async def body(pool: ProcessPool) -> None:
        job = asyncio.create_task(pool.run("j", "mark_then_sleep", payload(str(marker), 0.3), None))
        child = await wait_for_pid(pool, "j")
        await wait_for_file(marker)  # a signal before the child's set-up would kill it
        os.kill(child, signal.SIGTERM)
        assert (await job).kind == "ok"
        res = await pool.run("j2", "pid", payload(), None)
        assert res.kind == "ok" and res.result != str(child)

    with_pool(1, body)


def test_no_descriptors_leak() -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def body(pool: ProcessPool) -> None:
        await pool.run("a", "exit_hard", payload(1), None)
        await pool.run("b", "sleep", payload(5), 0.05)
        job = asyncio.create_task(pool.run("c", "sleep", payload(5), None))
        await wait_for_pid(pool, "c")
        await pool.cancel("c")
        await job
        assert (await pool.run("d", "add", payload(1), None)).kind == "ok"

    before = open_fds()
    with_pool(2, body)
    assert open_fds() == before


def test_sigint_does_not_stop_a_child(tmp_path: Path) -> None:
    marker = tmp_path / "running"

    async def body(pool: ProcessPool) -> None:
        job = asyncio.create_task(pool.run("j", "mark_then_sleep", payload(str(marker), 0.3), None))
        child = await wait_for_pid(pool, "j")
        await wait_for_file(marker)
        os.kill(child, signal.SIGINT)
        assert (await job).kind == "ok"

    with_pool(1, body)


def test_cancel_kills_the_child_and_replaces_it() -> None:
    async def body(pool: ProcessPool) -> None:
        job = asyncio.create_task(pool.run("j", "sleep", payload(30), None))
        child = await wait_for_pid(pool, "j")
        started = time.monotonic()
        await pool.cancel("j")
        res = await job
        assert time.monotonic() - started < 1.0
        assert res.kind == "cancelled"
        assert (await pool.run("j2", "pid", payload(), None)).result != str(child)
        await pool.cancel("unknown job")  # no-op

    with_pool(1, body)


def test_cancel_with_grace_lets_the_task_clean_up(tmp_path: Path) -> None:
    marker = tmp_path / "marker"

    async def body(pool: ProcessPool) -> None:
        job = asyncio.create_task(pool.run("j", "cleanup_on_cancel", payload(str(marker)), None))
        child = await wait_for_pid(pool, "j")
        await wait_for_file(marker)  # in the task: SIGUSR1 raises JobCancelled there
        await pool.cancel("j", grace=5.0)
        assert (await job).kind == "cancelled"
        assert marker.read_text() == "cleaned up"
        # it answered within the grace period: the same child goes on
        assert (await pool.run("j2", "pid", payload(), None)).result == str(child)

    with_pool(1, body)


def test_cancel_of_a_waiting_job_never_starts_it() -> None:
    async def body(pool: ProcessPool) -> None:
        first = asyncio.create_task(pool.run("a", "sleep", payload(0.2), None))
        second = asyncio.create_task(pool.run("b", "add", payload(1), None))
        await asyncio.sleep(0.05)
        assert pool.waiting == 1
        await pool.cancel("b")
        assert (await second).kind == "cancelled"
        assert (await first).kind == "ok"

    with_pool(1, body)


def test_cancelling_the_caller_kills_the_job() -> None:
    async def body(pool: ProcessPool) -> None:
        job = asyncio.create_task(pool.run("j", "sleep", payload(30), None))
        child = await wait_for_pid(pool, "j")
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        assert pool.busy == 0
        assert (await pool.run("j2", "pid", payload(), None)).result != str(child)

    with_pool(1, body)


# ---- concurrency and lifecycle ------------------------------------------------------------
def test_jobs_beyond_size_wait_in_fifo_order() -> None:
    async def body(pool: ProcessPool) -> None:
        started = time.monotonic()
        jobs = [
            asyncio.create_task(pool.run(f"j{i}", "sleep", payload(0.2), None)) for i in range(4)
        ]
        await asyncio.sleep(0.05)
        assert pool.busy == 2 and pool.waiting == 2
        assert all(r.kind == "ok" for r in await asyncio.gather(*jobs))
        assert 0.35 < time.monotonic() - started < 1.5  # two rounds, not one, not four

    with_pool(2, body)

    async def fifo(pool: ProcessPool) -> None:
        order: list[int] = []

        async def one(i: int) -> None:
            await pool.run(f"f{i}", "add", payload(i), None)
            order.append(i)

        await asyncio.gather(*(one(i) for i in range(8)))
        assert order == list(range(8))

    with_pool(1, fifo)


def test_duplicate_job_id_and_not_started_are_refused() -> None:
    async def main() -> None:
        pool = ProcessPool(app, 1)
        with pytest.raises(RuntimeError):
            await pool.run("j", "add", payload(1), None)
        await pool.start()
        try:
            job = asyncio.create_task(pool.run("j", "sleep", payload(0.1), None))
            await asyncio.sleep(0.01)
            with pytest.raises(ValueError):
                await pool.run("j", "add", payload(1), None)
            assert (await job).kind == "ok"
        finally:
            await pool.close()
        with pytest.raises(RuntimeError):
            await pool.run("k", "add", payload(1), None)

    asyncio.run(main())


def test_close_waits_for_running_jobs_up_to_grace_then_kills() -> None:
    async def main() -> None:
        pool = ProcessPool(app, 2)
        await pool.start()
        children = list(pool.pids)
        quick = asyncio.create_task(pool.run("quick", "sleep", payload(0.1), None))
        slow = asyncio.create_task(pool.run("slow", "sleep", payload(30), None))
        queued = asyncio.create_task(pool.run("queued", "add", payload(1), None))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await pool.close(grace=0.5)
        assert 0.4 < time.monotonic() - started < 2.0
        assert (await quick).kind == "ok"
        res = await slow
        assert res.kind == "crashed" and res.error is not None and "shut down" in res.error
        assert (await queued).kind == "crashed"
        assert pool.pids == [] and pool.busy == 0
        assert not any(alive(p) for p in children)

    asyncio.run(main())


def test_children_die_with_their_parent(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio, os, sys, time
        from rota import Rota
        from rota.worker.pool import ProcessPool

        app = Rota("sqlite:///:memory:")

        @app.task(name="sleep")
        def sleep(s):
            time.sleep(s)

        async def main():
            pool = ProcessPool(app, 2)
            await pool.start()
            job = asyncio.ensure_future(pool.run("j", "sleep", '{"args":[30],"kwargs":{}}', None))
            await asyncio.sleep(0.1)
            print(" ".join(map(str, pool.pids)), flush=True)
            os._exit(0)  # no cleanup at all

        asyncio.run(main())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=20, check=True
    )
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(alive(p) for p in pids)


def test_throughput_of_no_op_jobs() -> None:
    async def body(pool: ProcessPool) -> float:
        n = 600
        started = time.perf_counter()
        results = await asyncio.gather(
            *(pool.run(f"n{i}", "noop", payload(), 10.0) for i in range(n))
        )
        elapsed = time.perf_counter() - started
        assert all(r.kind == "ok" for r in results)
        return n / elapsed

    rate = with_pool(2, body)
    assert rate > 300  # loose: the real figure on 2 cores is far higher; this catches a stall


# ---- helpers shared with the async path --------------------------------------------------
def test_encode_result_and_prepare() -> None:
    assert encode_result([1, "a", None]) == ExecResult(ExecKind.OK, result='[1,"a",null]')
    bad = encode_result(float("nan"))
    assert bad.kind == "error" and not bad.fatal
    prepared = prepare(app, "add", payload(1, b=2))
    assert not isinstance(prepared, ExecResult)
    assert prepared[0] is add and prepared[1:] == ([1], {"b": 2})
    unknown = prepare(app, "nope", payload())
    assert isinstance(unknown, ExecResult) and unknown.fatal


def test_run_async_kinds() -> None:
    async def main() -> None:
        assert await run_async(async_add, [1, 2], {}, None) == ExecResult(ExecKind.OK, result="3")
        res = await run_async(async_fail, [], {}, 5.0)
        assert res.kind == "error" and res.error == "RuntimeError: boom"
        assert res.traceback is not None and "async_fail" in res.traceback
        res = await run_async(async_retry, [], {}, None)
        assert res.kind == "retry" and res.retry_delay == 2.5
        res = await run_async(async_sleep, [5], {}, 0.1)
        assert res.kind == "timeout" and res.error == "timed out after 0.1 s"
        res = await run_async(async_own_timeout, [], {}, 5.0)  # the task's own TimeoutError
        assert res.kind == "error" and res.error == "TimeoutError: upstream timed out"

        job = asyncio.create_task(run_async(async_sleep, [5], {}, None))
        await asyncio.sleep(0.01)
        job.cancel()
        res = await job
        assert res.kind == "cancelled"

    asyncio.run(main())
