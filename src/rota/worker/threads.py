"""Sync tasks in threads of the worker process (the default way sync tasks run).

One thread per job at a time, ``size`` threads. A job over its timeout, or cancelled, gets
an exception raised inside its thread (``PyThreadState_SetAsyncExc``, as Dramatiq's time
limits do): :class:`TimeLimitExceeded` or :class:`~rota.core.errors.JobCancelled`. Python
delivers it at the task's next bytecode, so a task blocked in a C call (``time.sleep``, a
socket read) sees it only when that call returns. Its outcome is reported at once either
way; a thread that does not stop is left to finish and is replaced, so the runner keeps
``size`` threads free for new jobs. A task that must be killable at any instant, or that
may crash its process, runs in the process pool instead (``@app.task(isolation="process")``
or ``rota worker --isolation process``).

Same interface as :class:`rota.worker.pool.ProcessPool`: ``start``, ``run``, ``cancel``,
``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import inspect
import logging
import queue
import threading
from collections.abc import Mapping
from typing import Any

from rota.app import Rota
from rota.core.errors import JobCancelled, Retry
from rota.core.outcomes import ExecKind, ExecResult
from rota.telemetry.logs import job_context
from rota.telemetry.tracing import carries_trace, child_context
from rota.worker.cancel import thread_state
from rota.worker.runner import encode_result, error_result, prepare, retry_result, timeout_result

__all__ = ["ThreadRunner", "TimeLimitExceeded"]

log = logging.getLogger("rota.worker.threads")


class TimeLimitExceeded(BaseException):
    """Raised inside a sync task running in a thread when its job's timeout passes."""


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    """Have thread ``thread_id`` raise ``exc`` at its next bytecode (``None``: forget a
    pending one)."""
    obj = ctypes.py_object(exc) if exc is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), obj)


class _Job:
    __slots__ = (
        "abandoned",
        "cancelled",
        "fields",
        "fut",
        "id",
        "loop",
        "payload",
        "state",
        "task_name",
        "thread",
        "timeout",
        "timer",
    )

    def __init__(
        self,
        job_id: str,
        task_name: str,
        payload: str,
        timeout: float | None,
        fields: Mapping[str, Any] | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.id = job_id
        self.task_name = task_name
        self.payload = payload
        self.timeout = timeout
        self.fields = fields
        self.loop = loop
        self.fut: asyncio.Future[ExecResult] = loop.create_future()
        self.thread: int | None = None  # the thread running it, while it runs
        self.state = "waiting"  # waiting -> running -> done
        self.cancelled = False  # read by rota.cancel_requested() in its thread
        self.timer: asyncio.TimerHandle | None = None
        self.abandoned = False  # reported while its thread still ran it


_STOP = None
OVERDUE = 0.2  # seconds a task has to stop once its exception is raised before its
# outcome is reported without it and its thread replaced


class ThreadRunner:
    """Runs sync tasks in ``size`` threads of this process."""

    def __init__(self, app: Rota, size: int) -> None:
        if size < 1:
            raise ValueError("a thread runner needs at least one thread")
        self.app = app
        self.size = size
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # job.state and the async exceptions raised
        self._jobs: dict[str, _Job] = {}
        self._threads: set[threading.Thread] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for _ in range(self.size):
            self._spawn()

    def _spawn(self) -> None:
        t = threading.Thread(target=self._serve, name="rota-task", daemon=True)
        self._threads.add(t)
        t.start()

    # ---- the event loop's side ------------------------------------------------------
    async def run(
        self,
        job_id: str,
        task_name: str,
        payload: str,
        timeout: float | None,
        log_fields: Mapping[str, Any] | None = None,
    ) -> ExecResult:
        """Run one job in a thread and return how it ended (FIFO when all are busy)."""
        if self._loop is None or self._closing:
            raise RuntimeError("the thread runner is not running")
        if job_id in self._jobs:
            raise ValueError(f"job {job_id} is already running in this runner")
        job = _Job(job_id, task_name, payload, timeout, log_fields, self._loop)
        self._jobs[job_id] = job
        self._queue.put(job)
        try:
            return await job.fut
        finally:
            if self._jobs.get(job_id) is job:
                del self._jobs[job_id]
            if job.timer is not None:
                job.timer.cancel()

    async def cancel(self, job_id: str, grace: float = 0.0) -> None:
        """Stop a job: its ``run()`` returns ``cancelled``. A job not started yet never
        starts; a running one gets :class:`JobCancelled` raised in its thread and has
        ``grace`` seconds to end; after that (at once if ``grace`` is 0) it is reported
        cancelled and its thread, left to finish, is replaced."""
        job = self._jobs.get(job_id)
        if job is None or job.fut.done():
            return
        with self._lock:
            job.cancelled = True
            state = job.state
            if state == "waiting":
                job.state = "done"  # the thread that dequeues it skips it
            elif state == "running" and job.thread is not None:
                _raise_in(job.thread, JobCancelled)
        if state == "waiting":
            self._resolve(job, ExecResult(ExecKind.CANCELLED, error="cancelled before it started"))
            return
        if grace > 0:
            await asyncio.wait([job.fut], timeout=grace)
        if not job.fut.done():
            self._abandon(
                job, ExecResult(ExecKind.CANCELLED, error="cancelled (thread left running)")
            )

    async def close(self, grace: float = 5.0) -> None:
        """Take no more jobs; wait up to ``grace`` seconds for running ones, then report
        them ``crashed`` (their threads are daemons: they die with the process)."""
        self._closing = True
        pending = [j.fut for j in self._jobs.values() if not j.fut.done()]
        if pending and grace > 0:
            await asyncio.wait(pending, timeout=grace)
        for job in list(self._jobs.values()):
            with self._lock:
                job.state = "done"
            self._resolve(
                job, ExecResult(ExecKind.CRASHED, error=f"worker shut down after {grace} s grace")
            )
        for _ in self._threads:
            self._queue.put(_STOP)

    def _on_timeout(self, job: _Job) -> None:
        with self._lock:
            if job.state == "running" and job.thread is not None:
                _raise_in(job.thread, TimeLimitExceeded)
        # A task running Python code stops at once; one blocked in a C call does not.
        job.timer = job.loop.call_later(OVERDUE, self._overdue, job)

    def _overdue(self, job: _Job) -> None:
        if not job.fut.done():
            self._abandon(job, timeout_result(job.timeout))

    def _abandon(self, job: _Job, result: ExecResult) -> None:
        """Report ``job`` now although its thread still runs it: that thread exits when
        the task returns, and a new one takes its place."""
        job.abandoned = True
        self._resolve(job, result)
        log.warning("job %s: %s; its thread is left to finish", job.id, result.error)
        if not self._closing:
            self._spawn()

    @staticmethod
    def _resolve(job: _Job, result: ExecResult) -> None:
        if not job.fut.done():
            job.fut.set_result(result)

    def _started(self, job: _Job) -> None:
        if job.timeout is not None and not job.fut.done():
            job.timer = job.loop.call_later(job.timeout, self._on_timeout, job)

    def _ended(self, job: _Job, result: ExecResult) -> None:
        if job.timer is not None:
            job.timer.cancel()
        self._resolve(job, result)

    # ---- the threads' side ---------------------------------------------------------
    def _serve(self) -> None:
        me = threading.current_thread()
        ident = threading.get_ident()
        try:
            while True:
                job = self._queue.get()
                if job is None:
                    return
                with self._lock:
                    if job.state != "waiting":
                        continue
                    job.state, job.thread = "running", ident
                if job.timeout is not None:
                    job.loop.call_soon_threadsafe(self._started, job)
                result = self._work(job, ident)
                if job.abandoned:  # reported without it and replaced: retire
                    return
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    job.loop.call_soon_threadsafe(self._ended, job, result)
        finally:
            self._threads.discard(me)

    def _work(self, job: _Job, ident: int) -> ExecResult:
        thread_state.job = job
        result: ExecResult
        try:
            try:
                result = self._call(job)
            finally:
                self._settle(job, ident)
        except TimeLimitExceeded:  # raised outside the task, as it returned
            result = timeout_result(job.timeout)
        except JobCancelled:
            result = ExecResult(ExecKind.CANCELLED, error="cancelled")
        finally:
            thread_state.job = None
        return result

    def _settle(self, job: _Job, ident: int) -> None:
        """Mark ``job`` done and drop an exception raised for it that has not fired yet,
        so that none reaches the thread's next job."""
        while True:
            try:
                with self._lock:
                    job.state = "done"
                    _raise_in(ident, None)
                return
            except (TimeLimitExceeded, JobCancelled):
                continue

    def _call(self, job: _Job) -> ExecResult:
        prepared = prepare(self.app, job.task_name, job.payload)
        if isinstance(prepared, ExecResult):
            return prepared
        task, args, kwargs = prepared
        with job_context(job.fields):
            try:
                if carries_trace(job.payload):
                    with child_context(job.payload):
                        value = self._invoke(task.fn, args, kwargs)
                else:
                    value = self._invoke(task.fn, args, kwargs)
            except TimeLimitExceeded:
                return timeout_result(job.timeout)
            except JobCancelled:
                return ExecResult(ExecKind.CANCELLED, error="cancelled")
            except Retry as exc:
                return retry_result(exc)
            except BaseException as exc:  # SystemExit, KeyboardInterrupt: reported
                return error_result(exc)
        return encode_result(value)

    @staticmethod
    def _invoke(fn: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        value = fn(*args, **kwargs)
        if inspect.iscoroutine(value):
            value = asyncio.run(value)
        return value
