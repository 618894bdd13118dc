"""The process pool's child process: set-up after the fork, signal handlers, the job loop.

Signals in a child: SIGINT and SIGTERM do not interrupt a job (the parent runs shutdown);
SIGTERM makes the child exit once its current job is done. SIGUSR1 raises
:class:`~rota.core.errors.JobCancelled` inside the running task (a graceful cancel, see
:meth:`rota.worker.pool.ProcessPool.cancel`) and sets ``rota.cancel_requested()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import inspect
import os
import signal
import socket
import sys
import threading
from types import FrameType
from typing import Any

import orjson

from rota.app import Rota, Task
from rota.core.errors import JobCancelled, Retry
from rota.core.outcomes import ExecKind, ExecResult
from rota.telemetry.logs import job_context
from rota.telemetry.tracing import carries_trace, child_context
from rota.worker.cancel import child_state
from rota.worker.frames import READ_SIZE, read_body, reply_frame
from rota.worker.runner import encode_result, error_result, prepare, retry_result

_inherited: list[Any] = []  # objects the child must keep alive but never use


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


def _exit_child(code: int) -> None:
    _flush_std()
    os._exit(code)


def _on_sigusr1(signum: int, frame: FrameType | None) -> None:
    if child_state.running:
        child_state.cancelled = True
        child_state.running = False  # raise once: let the task clean up in peace
        raise JobCancelled("job cancelled")


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    child_state.exit_requested = True
    if child_state.idle:
        _exit_child(0)


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


def _set_up_child(app: Rota, inherited_fds: list[int], parent_pid: int) -> None:
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


def _call_task(task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any]) -> ExecResult:
    try:
        try:
            child_state.running, child_state.cancelled = True, False
            value = task.fn(*args, **kwargs)
            if inspect.iscoroutine(value):
                value = asyncio.run(value)
        finally:
            child_state.running = False
    except JobCancelled:
        return ExecResult(ExecKind.CANCELLED, error="cancelled")
    except Retry as exc:
        return retry_result(exc)
    except BaseException as exc:  # SystemExit, KeyboardInterrupt: reported, not obeyed
        return error_result(exc)
    return encode_result(value)


def _run_job(app: Rota, task_name: str, payload: str) -> ExecResult:
    prepared = prepare(app, task_name, payload)
    if isinstance(prepared, ExecResult):
        return prepared
    task, args, kwargs = prepared
    if not carries_trace(payload):
        return _call_task(task, args, kwargs)
    with child_context(payload):  # a traced job: its trace context is current
        return _call_task(task, args, kwargs)


def child_main(app: Rota, sock: socket.socket, inherited_fds: list[int], parent_pid: int) -> None:
    """The child's whole life: set up, then run the jobs the parent sends until it closes
    the socket (or dies, or sends SIGTERM)."""
    _set_up_child(app, inherited_fds, parent_pid)
    sock.setblocking(True)
    rfile = sock.makefile("rb", buffering=READ_SIZE)
    while True:
        child_state.idle = True
        if child_state.exit_requested:
            _exit_child(0)
        try:
            body = read_body(rfile)
        except OSError:
            body = None
        if body is None:
            _exit_child(0)  # the parent closed the socket (or died)
            return
        child_state.idle = False
        try:
            _job_id, task_name, payload, *rest = orjson.loads(body)
            fields = rest[0] if rest and isinstance(rest[0], dict) else None
            with job_context(fields):
                result = _run_job(app, task_name, payload)
        except BaseException as exc:  # never die silently
            result = error_result(exc)
        reply = reply_frame(result, child_state.exit_requested)
        _flush_std()
        try:
            sock.sendall(reply)
        except OSError:
            _exit_child(0)
