"""OpenTelemetry spans for submit and run, linked through the job's payload.

Off by default. On when ``Rota(..., tracing=True)`` or ``ROTA_TRACING=1`` **and** the
``opentelemetry`` API is importable (``pip install rota[tracing]``). Then:

* submitting a job opens a producer span ``rota.submit <task>`` and writes the W3C trace
  context (``traceparent``, ``tracestate``, as the configured propagator injects it) into
  the payload, next to the arguments: ``{"args": [...], "kwargs": {...}, "trace": {...}}``;
* the worker runs the job inside a consumer span ``rota.run <task>`` whose parent is that
  context, with the job id, task, queue, attempt and node as attributes, and the outcome
  (``rota.outcome``; status ``ERROR`` and an ``exception`` event when the attempt failed).

Spans go to whatever ``TracerProvider`` the process configured (the OpenTelemetry SDK, an
exporter); without one the API's no-op provider drops them.

When tracing is off the cost is one boolean check per submit and per run: callers test
``app.tracing`` before calling anything here, and this module imports ``opentelemetry``
only from functions that run when tracing is on.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from rota.core.outcomes import ExecKind
from rota.core.payload import encode_arguments

if TYPE_CHECKING:
    from rota.core.model import JobRecord
    from rota.core.outcomes import ExecResult

__all__ = [
    "ENV_VAR",
    "carries_trace",
    "child_context",
    "trace_carrier",
    "traced_payload",
    "traced_run",
    "tracing_enabled",
    "with_current_context",
]

log = logging.getLogger("rota.tracing")
ENV_VAR = "ROTA_TRACING"
TRACER_NAME = "rota"
_TRUE = {"1", "true", "yes", "on"}
_warned = False


def tracing_enabled(flag: bool | None = None) -> bool:
    """Whether to trace: ``flag`` if given, else ``$ROTA_TRACING``; and only if the
    OpenTelemetry API can be imported (a warning, once, if it cannot)."""
    global _warned
    wanted = flag if flag is not None else os.environ.get(ENV_VAR, "").lower() in _TRUE
    if not wanted:
        return False
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        if not _warned:
            _warned = True
            log.warning(
                "tracing asked for but opentelemetry is not installed "
                "(pip install rota[tracing]): tracing stays off"
            )
        return False
    return True


def _tracer() -> Any:
    from opentelemetry import trace

    return trace.get_tracer(TRACER_NAME)


def traced_payload(
    task: str, queue: str, args: Sequence[Any], kwargs: dict[str, Any], limit: int
) -> str:
    """``encode_arguments`` inside a ``rota.submit <task>`` producer span, with the span's
    context carried in the payload under ``"trace"``."""
    from opentelemetry import propagate, trace

    with _tracer().start_as_current_span(
        f"rota.submit {task}",
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "rota",
            "messaging.operation.type": "send",
            "messaging.destination.name": queue,
            "rota.task": task,
            "rota.queue": queue,
        },
    ):
        text = encode_arguments(args, kwargs, limit)
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    if not carrier:  # a non-recording span and no propagator output: nothing to carry
        return text
    # ``text`` is a JSON object: add the key without encoding the arguments again.
    return f'{text[:-1]},"trace":{orjson.dumps(carrier).decode()}}}'


def trace_carrier(payload: str | bytes) -> dict[str, str]:
    """The ``"trace"`` object of a payload (empty if it has none or is not JSON)."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {}
    carrier = data.get("trace") if isinstance(data, dict) else None
    if not isinstance(carrier, dict):
        return {}
    return {str(k): v for k, v in carrier.items() if isinstance(v, str)}


def _record_outcome(span: Any, result: ExecResult) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("rota.outcome", str(result.kind))
    if result.kind in (ExecKind.OK, ExecKind.CANCELLED):
        return  # status left unset, as instrumentations do for success
    error = result.error or str(result.kind)
    kind, sep, message = error.partition(": ")
    attributes = {
        "exception.type": kind if sep and " " not in kind else str(result.kind),
        "exception.message": message if sep and " " not in kind else error,
    }
    if result.traceback:
        attributes["exception.stacktrace"] = result.traceback
    span.add_event("exception", attributes)
    if result.retry_delay is not None:
        span.set_attribute("rota.retry_delay", result.retry_delay)
    span.set_status(Status(StatusCode.ERROR, error))


async def traced_run(
    run: Callable[[JobRecord], Awaitable[ExecResult]], job: JobRecord, node_id: str
) -> ExecResult:
    """``await run(job)`` inside a ``rota.run <task>`` consumer span, child of the context
    the job's payload carries; the span is current while the job runs (an async task's
    own spans nest under it)."""
    from opentelemetry import propagate, trace

    parent = propagate.extract(trace_carrier(job.payload))
    with _tracer().start_as_current_span(
        f"rota.run {job.task}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "rota",
            "messaging.operation.type": "process",
            "messaging.destination.name": job.queue,
            "messaging.message.id": job.id,
            "rota.job.id": job.id,
            "rota.task": job.task,
            "rota.queue": job.queue,
            "rota.attempt": job.attempts,
            "rota.node": node_id,
        },
        record_exception=True,
        set_status_on_exception=True,
    ) as span:
        result = await run(job)
        _record_outcome(span, result)
        return result


def with_current_context(payload: str) -> str:
    """``payload`` with its ``"trace"`` key set to the current context (the ``rota.run``
    span, when called inside it), so that a sync task run in a pool process has its own
    spans nested under the run span (see :func:`child_context`)."""
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    data = orjson.loads(payload)
    if not carrier or not isinstance(data, dict):
        return payload
    data["trace"] = carrier
    return orjson.dumps(data).decode()


_TAIL = 4096  # the "trace" key is the payload's last one: look for it near the end only


def carries_trace(payload: str) -> bool:
    """Whether ``payload`` may carry a trace context (cheap: a look at its end)."""
    return payload.find('"trace":', max(0, len(payload) - _TAIL)) >= 0


@contextlib.contextmanager
def child_context(payload: str) -> Iterator[None]:
    """In a pool process: make the trace context carried by ``payload`` current while the
    task runs (check :func:`carries_trace` first). A no-op when the payload has none, and
    when opentelemetry is not installed."""
    carrier = trace_carrier(payload)
    try:
        from opentelemetry import context, propagate
    except ImportError:
        carrier = {}
    if not carrier:
        yield
        return
    token = context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        context.detach(token)
