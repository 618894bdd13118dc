"""Run task code on a worker node.

Sync tasks run in a :class:`ProcessPool` of forked child processes, one job per child at
a time, so that a job over its timeout (or cancelled) is stopped by killing the process
that runs it. ``async def`` tasks run on the node's own event loop through
:func:`run_async`. Both paths produce an :class:`ExecResult`.

Wire protocol between the pool and a child (a Unix socket pair): frames of a 4-byte
big-endian length followed by a JSON array (orjson; no pickle). Parent to child: ``(job_id, task_name, payload,
log_fields)`` (the job's structured log fields, which the child's log records carry while the
job runs; see :func:`rota.telemetry.logs.job_context`);
child to parent: the fields of an ``ExecResult`` plus a "retiring" flag (the child exits
after this reply). The parent never blocks: it reads with ``loop.add_reader`` and notices a
child's death through a pidfd (Linux) or the process sentinel.

Signals in a child: SIGINT and SIGTERM do not interrupt a job (the parent runs shutdown);
SIGTERM makes the child exit once its current job is done. SIGUSR1 raises
:class:`JobCancelled` inside the running task (a graceful cancel, see
:meth:`ProcessPool.cancel`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import inspect
import logging
import multiprocessing
import multiprocessing.util
import os
import signal
import socket
import struct
import sys
import threading
import traceback
from collections import deque
from collections.abc import Mapping, Sequence
from types import FrameType, TracebackType
from typing import Any

import orjson

from rota.app import Rota, Task
from rota.core.errors import JobCancelled, Retry
from rota.core.outcomes import ExecKind, ExecResult
from rota.core.payload import decode_arguments, dumps
from rota.telemetry.logs import job_context
from rota.telemetry.tracing import carries_trace, child_context
from rota.worker.cancel import child_state as _state

__all__ = [
    "ExecKind",
    "ExecResult",
    "ProcessPool",
    "describe_exception",
    "encode_result",
    "prepare",
    "run_async",
]

log = logging.getLogger("rota.worker.executor")


_HEADER = struct.Struct("!I")
_MAX_ERROR = 1000  # characters kept of a one-line error
_READ_SIZE = 256 * 1024


# ---- helpers shared by both paths ------------------------------------------------------
def _encode_frame(fields: list[Any]) -> bytes:
    """One message body as JSON. What JSON cannot carry (a payload a damaged row returned as
    bytes, lone surrogates in an exception message) is escaped into text rather than lost:
    the child then reports such a payload as corrupt."""
    try:
        return orjson.dumps(fields)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return orjson.dumps([_as_text(f) for f in fields])


def _as_text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode()
    return value


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    line = lines[0].strip() if lines else ""
    if len(lines) > 1:
        line += " ..."
    if len(line) > _MAX_ERROR:
        line = line[: _MAX_ERROR - 3] + "..."
    return line


def describe_exception(exc: BaseException) -> str:
    """One line: ``"ValueError: bad width"`` (module-qualified unless a builtin)."""
    cls = type(exc)
    name = cls.__qualname__
    if cls.__module__ not in ("builtins", "__main__"):
        name = f"{cls.__module__}.{name}"
    try:
        message = _one_line(str(exc))
    except Exception:  # a broken __str__ must not break error reporting
        message = "<exception str() failed>"
    return f"{name}: {message}" if message else name


def _format_traceback(exc: BaseException) -> str:
    """The traceback without the executor's own calling frame."""
    tb: TracebackType | None = exc.__traceback__
    if tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    try:
        return "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception:  # pragma: no cover - defensive
        return describe_exception(exc) + "\n"


def _error_result(exc: BaseException) -> ExecResult:
    return ExecResult("error", error=describe_exception(exc), traceback=_format_traceback(exc))


def _retry_result(exc: Retry) -> ExecResult:
    delay = None if exc.delay is None else float(exc.delay)
    return ExecResult(
        "retry",
        error=f"Retry: {_one_line(str(exc.reason))}",
        traceback=_format_traceback(exc),
        retry_delay=delay,
    )


def _timed_out(timeout: float | None) -> ExecResult:
    return ExecResult("timeout", error=f"timed out after {float(timeout or 0.0)} s")


def _died(code: int | None) -> str:
    if code is None:
        return "worker process died (exit code unknown)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"worker process died (exit code {code}, {name})"
    return f"worker process died (exit code {code})"


def encode_result(value: Any) -> ExecResult:
    """A task's return value as an ``ok`` result, or an ``error`` if it is not JSON."""
    try:
        text = dumps(value, "return value")
    except Exception as exc:  # InvalidPayload, with the reason
        return ExecResult("error", error=_one_line(str(exc)))
    return ExecResult("ok", result=text)


def prepare(
    app: Rota, task_name: str, payload: str
) -> tuple[Task[Any, Any], list[Any], dict[str, Any]] | ExecResult:
    """Look the task up and decode its arguments: ``(task, args, kwargs)``, or a fatal
    ``error`` result for an unknown task or a corrupt payload (dead-letter those)."""
    try:
        task = app.get_task(task_name)
    except LookupError as exc:  # UnknownTask
        return ExecResult("error", error=_one_line(str(exc)), fatal=True)
    try:
        args, kwargs = decode_arguments(payload)
    except Exception as exc:  # CorruptPayload (anything else is corruption too)
        return ExecResult("error", error=f"corrupt payload: {_one_line(str(exc))}", fatal=True)
    return task, args, kwargs


async def run_async(
    task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any], timeout: float | None
) -> ExecResult:
    """Await ``task.fn(*args, **kwargs)`` on the running loop, within ``timeout`` seconds.

    Kinds: ``ok``, ``error``, ``retry``, ``timeout`` (the deadline passed), ``cancelled``
    (the asyncio task running this was cancelled: the cancellation is absorbed and the
    task's cancel count restored). ``KeyboardInterrupt`` propagates.
    """
    scope = None if timeout is None else asyncio.timeout(timeout)
    try:
        if scope is None:  # no deadline: no timer to arm and cancel for every job
            value = task.fn(*args, **kwargs)
            if inspect.isawaitable(value):
                value = await value
        else:
            async with scope:
                value = task.fn(*args, **kwargs)
                if inspect.isawaitable(value):
                    value = await value
    except TimeoutError as exc:
        if scope is not None and scope.expired():
            return _timed_out(timeout)
        return _error_result(exc)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        return ExecResult("cancelled", error="cancelled")
    except Retry as exc:
        return _retry_result(exc)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit and friends are the task's errors
        return _error_result(exc)
    return encode_result(value)


# ---- the child process -----------------------------------------------------------------
_inherited: list[Any] = []  # objects the child must keep alive but never use


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


def _child_exit(code: int) -> None:
    _flush_std()
    os._exit(code)


def _on_sigusr1(signum: int, frame: FrameType | None) -> None:
    if _state.running:
        _state.cancelled = True
        _state.running = False  # raise once: let the task clean up in peace
        raise JobCancelled("job cancelled")


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _state.exit_requested = True
    if _state.idle:
        _child_exit(0)


def _ignore_signal(signum: int, frame: FrameType | None) -> None:
    """SIGINT: the parent handles shutdown. A Python no-op handler rather than SIG_IGN, so
    that programs the task starts do not inherit an ignored SIGINT."""


def _set_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # best effort: the socket closing still stops an idle child
        pass


def _setup_child(app: Rota, inherited_fds: list[int], parent_pid: int) -> None:
    # Other children's sockets (and our own parent end): holding them would hide the
    # parent's death from those children.
    for fd in inherited_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    # Signals: drop handlers inherited from the parent (asyncio's included).
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        try:
            handler = signal.getsignal(sig)
            if callable(handler):
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            continue
    signal.signal(signal.SIGINT, _ignore_signal)
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGUSR1, _on_sigusr1)
    _set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)
    # The parent's event loop is not ours: let tasks use asyncio.run().
    asyncio.events._set_running_loop(None)
    with contextlib.suppress(Exception):
        asyncio.set_event_loop(None)
    # The parent's store connections are not ours either: a task that submits jobs opens
    # its own. Keep the old ones referenced so no finalizer ever runs on them here.
    _inherited.append(app._local)
    app._local = threading.local()


def _call_in_child(task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any]) -> ExecResult:
    try:
        try:
            _state.running, _state.cancelled = True, False
            value = task.fn(*args, **kwargs)
            if inspect.iscoroutine(value):
                value = asyncio.run(value)
        finally:
            _state.running = False
    except JobCancelled:
        return ExecResult("cancelled", error="cancelled")
    except Retry as exc:
        return _retry_result(exc)
    except BaseException as exc:  # SystemExit, KeyboardInterrupt: reported, not obeyed
        return _error_result(exc)
    return encode_result(value)


def _execute(app: Rota, task_name: str, payload: str) -> ExecResult:
    prepared = prepare(app, task_name, payload)
    if isinstance(prepared, ExecResult):
        return prepared
    task, args, kwargs = prepared
    if not carries_trace(payload):
        return _call_in_child(task, args, kwargs)
    with child_context(payload):  # a traced job: its trace context is current
        return _call_in_child(task, args, kwargs)


def _child_main(app: Rota, sock: socket.socket, inherited_fds: list[int], parent_pid: int) -> None:
    _setup_child(app, inherited_fds, parent_pid)
    sock.setblocking(True)
    rfile = sock.makefile("rb", buffering=_READ_SIZE)
    header_size = _HEADER.size
    while True:
        _state.idle = True
        if _state.exit_requested:
            _child_exit(0)
        try:
            header = rfile.read(header_size)
            if len(header) < header_size:
                _child_exit(0)  # the parent closed the socket (or died)
            (size,) = _HEADER.unpack(header)
            body = rfile.read(size)
            if len(body) < size:
                _child_exit(0)
        except OSError:
            _child_exit(0)
        _state.idle = False
        try:
            _job_id, task_name, payload, *rest = orjson.loads(body)
            fields = rest[0] if rest and isinstance(rest[0], dict) else None
            with job_context(fields):
                result = _execute(app, task_name, payload)
        except BaseException as exc:  # never die silently
            result = _error_result(exc)
        reply = _encode_frame(
            [
                result.kind,
                result.result,
                result.error,
                result.traceback,
                result.retry_delay,
                result.fatal,
                _state.exit_requested,
            ]
        )
        _flush_std()
        try:
            sock.sendall(_HEADER.pack(len(reply)) + reply)
        except OSError:
            _child_exit(0)


# ---- the pool (parent side) --------------------------------------------------------------
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
            self._resolve(job, ExecResult("cancelled", error="cancelled before it started"))
            return
        if grace > 0:
            with contextlib.suppress(OSError):
                os.kill(child.pid, signal.SIGUSR1)
            await asyncio.wait([job.fut], timeout=grace)
            if job.fut.done() or job.child is not child:
                return
        self._resolve(job, ExecResult("cancelled", error="cancelled (worker process killed)"))
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
                job, ExecResult("crashed", error="worker shut down before the job started")
            )
        running = [child.job.fut for child in self._children if child.job is not None]
        if running and grace > 0:
            await asyncio.wait(running, timeout=grace)
        for child in list(self._children):
            if child.job is not None:
                self._resolve(
                    child.job,
                    ExecResult(
                        "crashed", error=f"worker shut down: job killed after {grace} s grace"
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
        body = _encode_frame([job.id, job.task_name, job.payload, job.log_fields])
        data = _HEADER.pack(len(body)) + body
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
        self._resolve(job, _timed_out(job.timeout))
        self._kill(child)

    def _abandon(self, job: _Job) -> None:
        """The caller of ``run()`` was cancelled: nobody wants this job any more."""
        child = job.child
        if child is None:
            with contextlib.suppress(ValueError):
                self._waiting.remove(job)
            return
        self._resolve(job, ExecResult("cancelled", error="cancelled"))
        self._kill(child)

    def _on_readable(self, child: _Child) -> None:
        try:
            data = child.sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._on_eof(child)
            return
        self._feed(child, data)

    def _feed(self, child: _Child, data: bytes) -> None:
        header_size = _HEADER.size
        buf = child.buf
        if not buf and len(data) >= header_size:  # fast path: exactly one whole frame
            (size,) = _HEADER.unpack_from(data)
            if len(data) == header_size + size:
                self._on_reply(child, orjson.loads(memoryview(data)[header_size:]))
                return
        buf += data
        while len(buf) >= header_size:
            (size,) = _HEADER.unpack_from(buf)
            end = header_size + size
            if len(buf) < end:
                break
            message = orjson.loads(bytes(buf[header_size:end]))
            del buf[:end]
            self._on_reply(child, message)

    def _on_reply(self, child: _Child, message: list[Any]) -> None:
        if child.killed:
            return
        *fields, retiring = message
        if retiring:
            child.retiring = True
        job = child.job
        if job is not None:
            if job.cancel_requested:
                result = ExecResult("cancelled", error="cancelled")
            else:
                result = ExecResult(*fields)
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
                data = child.sock.recv(_READ_SIZE)
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
                self._resolve(job, ExecResult("cancelled", error="cancelled"))
            else:
                self._resolve(job, ExecResult("crashed", error=_died(code)))
        if code not in (0, None) and not child.killed:
            log.warning(
                "rota executor: child process %d died (exit code %s)%s",
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
                target=_child_main,
                args=(self.app, child_sock, inherited, os.getpid()),
                name=f"rota-executor-{self._spawned}",
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
                log.error("rota executor: cannot start a child process: %s", exc)
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
