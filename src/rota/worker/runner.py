"""Run task code and describe how it ended, as an :class:`~rota.core.outcomes.ExecResult`.

``async def`` tasks run on the node's own event loop through :func:`run_async`; sync tasks
run in the process pool (:mod:`rota.worker.pool`), whose children use the same helpers to
look tasks up (:func:`prepare`) and to describe results and exceptions.
"""

from __future__ import annotations

import asyncio
import inspect
import traceback
from types import TracebackType
from typing import Any

from rota.app import Rota, Task
from rota.core.errors import Retry
from rota.core.outcomes import ExecKind, ExecResult
from rota.core.payload import decode_arguments, dumps

MAX_ERROR = 1000  # characters kept of a one-line error


def one_line(text: str) -> str:
    """The first line of ``text`` (with " ..." when there were more), at most ``MAX_ERROR``
    characters."""
    lines = text.strip().splitlines()
    line = lines[0].strip() if lines else ""
    if len(lines) > 1:
        line += " ..."
    if len(line) > MAX_ERROR:
        line = line[: MAX_ERROR - 3] + "..."
    return line


def describe_exception(exc: BaseException) -> str:
    """One line: ``"ValueError: bad width"`` (module-qualified unless a builtin)."""
    cls = type(exc)
    name = cls.__qualname__
    if cls.__module__ not in ("builtins", "__main__"):
        name = f"{cls.__module__}.{name}"
    try:
        message = one_line(str(exc))
    except Exception:  # a broken __str__ must not break error reporting
        message = "<exception str() failed>"
    return f"{name}: {message}" if message else name


def _format_traceback(exc: BaseException) -> str:
    """The traceback without the runner's own calling frame."""
    tb: TracebackType | None = exc.__traceback__
    if tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    try:
        return "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception:  # pragma: no cover - defensive
        return describe_exception(exc) + "\n"


def error_result(exc: BaseException) -> ExecResult:
    """The task raised ``exc``."""
    return ExecResult(
        ExecKind.ERROR, error=describe_exception(exc), traceback=_format_traceback(exc)
    )


def retry_result(exc: Retry) -> ExecResult:
    """The task raised :class:`rota.Retry`."""
    delay = None if exc.delay is None else float(exc.delay)
    return ExecResult(
        ExecKind.RETRY,
        error=f"Retry: {one_line(str(exc.reason))}",
        traceback=_format_traceback(exc),
        retry_delay=delay,
    )


def timeout_result(timeout: float | None) -> ExecResult:
    """The task ran past ``timeout`` seconds."""
    return ExecResult(ExecKind.TIMEOUT, error=f"timed out after {float(timeout or 0.0)} s")


def encode_result(value: Any) -> ExecResult:
    """A task's return value as an ``ok`` result, or an ``error`` if it is not JSON."""
    try:
        text = dumps(value, "return value")
    except Exception as exc:  # InvalidPayload, with the reason
        return ExecResult(ExecKind.ERROR, error=one_line(str(exc)))
    return ExecResult(ExecKind.OK, result=text)


def prepare(
    app: Rota, task_name: str, payload: str
) -> tuple[Task[Any, Any], list[Any], dict[str, Any]] | ExecResult:
    """Look the task up and decode its arguments: ``(task, args, kwargs)``, or a fatal
    ``error`` result for an unknown task or a corrupt payload (dead-letter those)."""
    try:
        task = app.get_task(task_name)
    except LookupError as exc:  # UnknownTask
        return ExecResult(ExecKind.ERROR, error=one_line(str(exc)), fatal=True)
    try:
        args, kwargs = decode_arguments(payload)
    except Exception as exc:  # CorruptPayload (anything else is corruption too)
        return ExecResult(
            ExecKind.ERROR, error=f"corrupt payload: {one_line(str(exc))}", fatal=True
        )
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
            return timeout_result(timeout)
        return error_result(exc)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        return ExecResult(ExecKind.CANCELLED, error="cancelled")
    except Retry as exc:
        return retry_result(exc)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit and friends are the task's errors
        return error_result(exc)
    return encode_result(value)
