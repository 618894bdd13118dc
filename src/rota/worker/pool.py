"""The process pool (parent side): sync tasks run in forked child processes, one job per
child at a time, so that a job over its timeout (or cancelled) is stopped by killing the
process that runs it.

The parent never blocks: it talks to each child over a Unix socket pair
(:mod:`rota.worker.frames`), reads with ``loop.add_reader`` and notices a child's death
through a pidfd (Linux) or the process sentinel. The child's side is
:mod:`rota.worker.child`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.util
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from rota.app import Rota
from rota.core.outcomes import ExecKind, ExecResult
from rota.worker.child import child_main
from rota.worker.frames import READ_SIZE, decode_reply, job_frame, split_frames
from rota.worker.runner import timeout_result

__all__ = ["ProcessPool"]

log = logging.getLogger("rota.worker.pool")


def _describe_death(code: int | None) -> str:
    if code is None:
        return "worker process died (exit code unknown)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"worker process died (exit code {code}, {name})"
    return f"worker process died (exit code {code})"


class _Job:
    __slots__ = (
        "cancel_requested",
        "child",
        "fut",
        "id",
        "log_fields",
        "payload",
        "task_name",
        "timeout",
        "timer",
    )

    def __init__(
        self,
        job_id: str,
        task_name: str,
        payload: str,
        timeout: float | None,
        fut: asyncio.Future[ExecResult],
        log_fields: Mapping[str, Any] | None = None,
    ) -> None:
        self.id = job_id
        self.task_name = task_name
        self.payload = payload
        self.timeout = timeout
        self.fut = fut
        self.log_fields = log_fields
        self.child: _Child | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.cancel_requested = False


class _Child:
    __slots__ = (
        "buf",
        "exited",
        "job",
        "killed",
        "pid",
        "pidfd",
        "proc",
        "reading",
        "retiring",
        "sender",
        "sock",
        "watch_fd",
    )

    def __init__(
        self,
        proc: multiprocessing.process.BaseProcess,
        pid: int,
        sock: socket.socket,
        pidfd: int,
        watch_fd: int,
        exited: asyncio.Future[None],
    ) -> None:
        self.proc = proc
        self.pid = pid
        self.sock = sock
        self.pidfd = pidfd  # -1 when pidfds are not available
        self.watch_fd = watch_fd  # pidfd, or the multiprocessing sentinel
        self.exited = exited
        self.buf = bytearray()
        self.job: _Job | None = None
        self.killed = False  # SIGKILL sent by us: ignore anything it still says
        self.retiring = False  # it exits after its current reply: give it no more jobs
        self.reading = True
        self.sender: asyncio.Task[None] | None = None


def _kill_pids(children: set[_Child]) -> None:
    """Finalizer (pool collected, or interpreter exit before ``close``): kill children."""
    for child in list(children):
        with contextlib.suppress(OSError):
            os.kill(child.pid, signal.SIGKILL)


def _pidfd_open(pid: int) -> int:
    if sys.platform == "linux":
        try:
            return os.pidfd_open(pid)
        except (OSError, AttributeError):
            return -1
    return -1  # pragma: no cover - non-Linux


class ProcessPool:
    """``size`` forked child processes running sync tasks, one job each at a time.

    Every method must be called from the event loop that ran :meth:`start`.
    """

    def __init__(self, app: Rota, size: int, close_fds: Sequence[int] = ()) -> None:
        """``close_fds``: descriptors of the parent that children must not keep open (a
        listening socket, say)."""
        if size < 1:
            raise ValueError(f"a process pool needs at least one process, not {size}")
        self.app = app
        self.size = size
        self.close_fds = tuple(close_fds)
        self._ctx = multiprocessing.get_context("fork")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._children: set[_Child] = set()  # started and not yet reaped
        self._idle: deque[_Child] = deque()
        self._waiting: deque[_Job] = deque()  # run() calls waiting for a child, FIFO
        self._jobs: dict[str, _Job] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._respawn_timer: asyncio.TimerHandle | None = None
        self._respawn_delay = 0.1
        self._started = False
        self._closing = False
        self._closed = False
        self._spawned = 0
        self._finalizer: multiprocessing.util.Finalize[None] | None = None

    # ---- public ------------------------------------------------------------------
    @property
    def busy(self) -> int:
        """Jobs running in a child right now."""
        return sum(1 for child in self._children if child.job is not None)

    @property
    def waiting(self) -> int:
        """``run()`` calls waiting for a free child."""
        return len(self._waiting)

    @property
    def pids(self) -> list[int]:
        """Process ids of the live children."""
        return [child.pid for child in self._children if not child.killed]

    def pid_of(self, job_id: str) -> int | None:
        """The pid of the child running ``job_id`` (``None`` if it is not running)."""
        job = self._jobs.get(job_id)
        return None if job is None or job.child is None else job.child.pid

    async def start(self) -> None:
        """Fork the children (they inherit the app's task registry)."""
        if self._started:
            raise RuntimeError("the process pool was already started")
        self._loop = asyncio.get_running_loop()
        self._started = True
        # Kill children if the pool is dropped, or at exit before close() (this runs before
        # multiprocessing joins its children, which would otherwise wait forever).
        self._finalizer = multiprocessing.util.Finalize(
            self, _kill_pids, args=(self._children,), exitpriority=100
        )
        for _ in range(self.size):
            self._release(self._spawn())

    async def run(
        self,
        job_id: str,
        task_name: str,
        payload: str,
        timeout: float | None,
        log_fields: Mapping[str, Any] | None = None,
    ) -> ExecResult:
        """Run one job in a child and return how it ended. Waits (FIFO) for a free child.
        ``log_fields`` (``rota.telemetry.logs.job_log_fields``): carried by the pool's log lines about
        this job, and by every record the child logs while it runs the job."""
        if not self._started or self._loop is None:
            raise RuntimeError("the process pool is not started")
        if self._closing:
            raise RuntimeError("the process pool is closed")
        if job_id in self._jobs:
            raise ValueError(f"job {job_id} is already running in this pool")
        job = _Job(job_id, task_name, payload, timeout, self._loop.create_future(), log_fields)
        self._jobs[job_id] = job
        try:
            self._submit(job)
            return await job.fut
        except asyncio.CancelledError:
            self._abandon(job)
            raise
        finally:
            if self._jobs.get(job_id) is job:
                del self._jobs[job_id]

    async def cancel(self, job_id: str, grace: float = 0.0) -> None:
        """Stop a job: its ``run()`` returns kind ``cancelled``.

        A job still waiting for a child never starts. A running job with ``grace > 0`` first
        gets :class:`JobCancelled` raised inside it (SIGUSR1); if its child answers within
        ``grace`` seconds the child is reused, otherwise (and at once when ``grace`` is 0)
        the child is killed and replaced. Returns once the job is stopped.
        """
        job = self._jobs.get(job_id)
        if job is None or job.fut.done():
            return
        job.cancel_requested = True
        child = job.child
        if child is None:
            with contextlib.suppress(ValueError):
                self._waiting.remove(job)
            self._resolve(job, ExecResult(ExecKind.CANCELLED, error="cancelled before it started"))
            return
        if grace > 0:
            with contextlib.suppress(OSError):
                os.kill(child.pid, signal.SIGUSR1)
            await asyncio.wait([job.fut], timeout=grace)
            if job.fut.done() or job.child is not child:
                return
        self._resolve(
            job, ExecResult(ExecKind.CANCELLED, error="cancelled (worker process killed)")
        )
        self._kill(child)

    async def close(self, grace: float = 5.0) -> None:
        """Stop taking jobs, wait up to ``grace`` seconds for running ones, then kill every
        child. Jobs still running then, or never started, end as ``crashed`` (lost to the
        shutdown, not the task's fault)."""
        if not self._started or self._closed:
            self._closed = True
            return
        if self._closing:  # another close() is under way: wait for it
            while not self._closed:
                await asyncio.sleep(0.01)
            return
        self._closing = True
        if self._respawn_timer is not None:
            self._respawn_timer.cancel()
        while self._waiting:
            job = self._waiting.popleft()
            self._resolve(
                job, ExecResult(ExecKind.CRASHED, error="worker shut down before the job started")
            )
        running = [child.job.fut for child in self._children if child.job is not None]
        if running and grace > 0:
            await asyncio.wait(running, timeout=grace)
        for child in list(self._children):
            if child.job is not None:
                self._resolve(
                    child.job,
                    ExecResult(
                        ExecKind.CRASHED,
                        error=f"worker shut down: job killed after {grace} s grace",
                    ),
                )
            self._kill(child)
        exits = [child.exited for child in self._children]
        if exits:
            await asyncio.wait(exits, timeout=5.0)
        for child in list(self._children):  # unreapable: let go of them anyway
            self._finish(child, None)
        for task in list(self._background):
            task.cancel()
        if self._finalizer is not None:
            self._finalizer.cancel()
        self._closed = True

    # ---- dispatch ----------------------------------------------------------------
    def _submit(self, job: _Job) -> None:
        if self._idle:
            self._dispatch(job, self._idle.pop())
        else:
            self._waiting.append(job)

    def _release(self, child: _Child) -> None:
        """``child`` is free: give it the next waiting job, or park it."""
        while self._waiting:
            job = self._waiting.popleft()
            if not job.fut.done():
                self._dispatch(job, child)
                return
        self._idle.append(child)

    def _dispatch(self, job: _Job, child: _Child) -> None:
        assert self._loop is not None
        child.job = job
        job.child = child
        data = job_frame(job.id, job.task_name, job.payload, job.log_fields)
        try:
            sent = child.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            # The child is gone and never saw this job: hand it to another child.
            child.job = None
            job.child = None
            self._waiting.appendleft(job)
            self._kill(child)
            if self._idle and self._waiting and self._waiting[0] is job:
                self._dispatch(self._waiting.popleft(), self._idle.pop())
            return
        if sent < len(data):
            child.sender = self._background_task(self._send_rest(child, job, data[sent:]))
        if job.timeout is not None:
            job.timer = self._loop.call_later(max(job.timeout, 0.0), self._on_timeout, job)

    async def _send_rest(self, child: _Child, job: _Job, rest: bytes) -> None:
        assert self._loop is not None
        try:
            await self._loop.sock_sendall(child.sock, rest)
        except OSError:
            if child.job is job:  # broken pipe: the child died; its exit reports it
                self._hard_kill(child)
        finally:
            child.sender = None

    def _background_task(self, coro: Any) -> asyncio.Task[None]:
        assert self._loop is not None
        task: asyncio.Task[None] = self._loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # ---- outcomes ----------------------------------------------------------------
    def _resolve(self, job: _Job, result: ExecResult) -> None:
        """End ``job`` with ``result`` (first resolution wins) and detach it from its child."""
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        child = job.child
        if child is not None and child.job is job:
            child.job = None
        job.child = None
        if not job.fut.done():
            job.fut.set_result(result)

    def _on_timeout(self, job: _Job) -> None:
        job.timer = None
        child = job.child
        if child is None or job.fut.done():
            return
        self._resolve(job, timeout_result(job.timeout))
        self._kill(child)

    def _abandon(self, job: _Job) -> None:
        """The caller of ``run()`` was cancelled: nobody wants this job any more."""
        child = job.child
        if child is None:
            with contextlib.suppress(ValueError):
                self._waiting.remove(job)
            return
        self._resolve(job, ExecResult(ExecKind.CANCELLED, error="cancelled"))
        self._kill(child)

    def _on_readable(self, child: _Child) -> None:
        try:
            data = child.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._on_eof(child)
            return
        self._feed(child, data)

    def _feed(self, child: _Child, data: bytes) -> None:
        for message in split_frames(child.buf, data):
            self._on_reply(child, message)

    def _on_reply(self, child: _Child, message: list[Any]) -> None:
        if child.killed:
            return
        result, retiring = decode_reply(message)
        if retiring:
            child.retiring = True
        job = child.job
        if job is not None:
            if job.cancel_requested:
                result = ExecResult(ExecKind.CANCELLED, error="cancelled")
            self._resolve(job, result)
        if not child.retiring and child.job is None:
            self._release(child)

    def _on_eof(self, child: _Child) -> None:
        """The child's socket closed: it died (or closed it, which is as bad). Its exit
        (through the pidfd) reports the job with the real exit status."""
        self._stop_reading(child)
        self._hard_kill(child)

    def _on_exit(self, child: _Child) -> None:
        """The child's process ended (its pidfd or sentinel is readable)."""
        assert self._loop is not None
        with contextlib.suppress(Exception):
            self._loop.remove_reader(child.watch_fd)
        if child.reading and not child.killed:
            self._drain(child)  # replies it sent just before dying still count
        code = child.proc.exitcode
        if code is not None:
            self._finish(child, code)
        else:
            self._background_task(self._reap(child))

    async def _reap(self, child: _Child) -> None:
        """Without a pidfd the sentinel can fire just before the exit status is ready."""
        delay = 0.001
        for _ in range(200):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
            code = child.proc.exitcode
            if code is not None:
                self._finish(child, code)
                return
        self._finish(child, None)

    def _drain(self, child: _Child) -> None:
        while child.reading and not child.killed:
            try:
                data = child.sock.recv(READ_SIZE)
            except OSError:
                return
            if not data:
                return
            self._feed(child, data)

    def _finish(self, child: _Child, code: int | None) -> None:
        """The child is gone for good: report its job, free its resources, replace it."""
        if child not in self._children:
            return
        self._children.discard(child)
        assert self._loop is not None
        self._stop_reading(child)
        with contextlib.suppress(Exception):
            self._loop.remove_reader(child.watch_fd)
        if child.sender is not None:
            child.sender.cancel()
            child.sender = None
            with contextlib.suppress(Exception):
                self._loop.remove_writer(child.sock.fileno())
        child.sock.close()
        if child.pidfd >= 0:
            with contextlib.suppress(OSError):
                os.close(child.pidfd)
            child.pidfd = -1
        with contextlib.suppress(Exception):
            child.proc.close()
        with contextlib.suppress(ValueError):
            self._idle.remove(child)
        job = child.job
        if job is not None:
            if job.cancel_requested:
                self._resolve(job, ExecResult(ExecKind.CANCELLED, error="cancelled"))
            else:
                self._resolve(job, ExecResult(ExecKind.CRASHED, error=_describe_death(code)))
        if code not in (0, None) and not child.killed:
            log.warning(
                "rota process pool: child process %d died (exit code %s)%s",
                child.pid,
                code,
                "" if job is None else " running a job",
                extra=None if job is None else job.log_fields,
            )
        if not child.exited.done():
            child.exited.set_result(None)
        if not self._closing:
            self._replace()

    # ---- children ----------------------------------------------------------------
    def _spawn(self) -> _Child:
        loop = self._loop
        assert loop is not None
        parent_sock, child_sock = socket.socketpair()
        inherited = [parent_sock.fileno(), *self.close_fds]
        for other in self._children:
            for fd in (other.sock.fileno(), other.pidfd):
                if fd >= 0:
                    inherited.append(fd)
        self._spawned += 1
        try:
            proc = self._ctx.Process(
                target=child_main,
                args=(self.app, child_sock, inherited, os.getpid()),
                name=f"rota-pool-{self._spawned}",
                daemon=False,  # tasks may use multiprocessing themselves
            )
            proc.start()
        except BaseException:
            parent_sock.close()
            child_sock.close()
            raise
        child_sock.close()
        parent_sock.setblocking(False)
        pid = proc.pid
        assert pid is not None
        pidfd = _pidfd_open(pid)
        watch_fd = pidfd if pidfd >= 0 else proc.sentinel
        child = _Child(proc, pid, parent_sock, pidfd, watch_fd, loop.create_future())
        self._children.add(child)
        loop.add_reader(parent_sock.fileno(), self._on_readable, child)
        loop.add_reader(watch_fd, self._on_exit, child)
        return child

    def _replace(self) -> None:
        """Bring the pool back to ``size`` children (retrying if fork fails)."""
        if self._closing or self._respawn_timer is not None:
            return
        while sum(1 for child in self._children if not child.killed) < self.size:
            try:
                child = self._spawn()
            except Exception as exc:
                log.error("rota process pool: cannot start a child process: %s", exc)
                assert self._loop is not None
                self._respawn_timer = self._loop.call_later(self._respawn_delay, self._respawn)
                self._respawn_delay = min(self._respawn_delay * 2, 5.0)
                return
            self._respawn_delay = 0.1
            self._release(child)

    def _respawn(self) -> None:
        self._respawn_timer = None
        self._replace()

    def _stop_reading(self, child: _Child) -> None:
        if child.reading:
            child.reading = False
            assert self._loop is not None
            with contextlib.suppress(Exception):
                self._loop.remove_reader(child.sock.fileno())

    def _hard_kill(self, child: _Child) -> None:
        with contextlib.suppress(ValueError):
            self._idle.remove(child)
        child.retiring = True  # never dispatch to it again
        with contextlib.suppress(OSError):
            os.kill(child.pid, signal.SIGKILL)

    def _kill(self, child: _Child) -> None:
        """SIGKILL ``child`` on purpose (its job, if any, was already resolved). Its exit
        is noticed through the pidfd, which starts the replacement."""
        if child.killed:
            return
        child.killed = True
        if child.job is not None:
            child.job.child = None
            child.job = None
        self._stop_reading(child)
        self._hard_kill(child)
        if not self._closing:
            self._replace()
