"""Logging set-up: readable text by default, one JSON object per line when asked.

Every line about a job carries four structured fields, ``job``, ``task``, ``node`` and
``attempt``, passed as ``extra=job_log_fields(job, node_id)``. The JSON format writes
them as keys of the line's object; the text format appends them to the line as
``job=… task=… node=… attempt=…``.

While a worker runs a job, :func:`job_context` makes those fields the default of every
record logged in that job's context (the task's own ``logging`` calls included, on the
event loop and in the process that runs a sync task); :class:`JobContextFilter`, which
:func:`setup_logging` installs on its handler, adds them to records that lack them.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Mapping
from typing import Any, Protocol

import orjson

JOB_FIELDS = ("job", "task", "node", "attempt")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",  # Python 3.12+
}
_current: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "rota_job_log_fields", default=None
)


class _JobLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def task(self) -> str: ...
    @property
    def attempts(self) -> int: ...


def job_log_fields(job: _JobLike, node_id: str) -> dict[str, Any]:
    """The structured fields of a log line about ``job`` on node ``node_id``:
    ``log.info("...", extra=job_log_fields(job, node_id))``."""
    return {"job": job.id, "task": job.task, "node": node_id, "attempt": job.attempts}


class job_context:
    """Records logged inside (this thread, this asyncio task) default to ``fields``.
    A plain class rather than ``contextlib.contextmanager``: it runs once per job."""

    __slots__ = ("_fields", "_token")

    def __init__(self, fields: Mapping[str, Any] | None) -> None:
        self._fields = fields

    def __enter__(self) -> None:
        self._token = _current.set(self._fields)

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)


def current_job_fields() -> Mapping[str, Any] | None:
    """The fields :func:`job_context` set here, if any."""
    return _current.get()


class JobContextFilter(logging.Filter):
    """Adds the fields of the current :func:`job_context` to records that lack them.
    Attach it to a handler (a logger's filters do not see records from its children)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _current.get()
        if fields:
            for key, value in fields.items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with any ``extra=`` fields (job, task, node, attempt)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update(_extras(record))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exc"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(data, default=str).decode()


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if not text or any(c in text for c in ' ="\\\n\t'):
        return orjson.dumps(text).decode()  # quoted, escaped
    return text


class TextFormatter(logging.Formatter):
    """A readable line; a job's fields follow the message as ``job=… task=… node=…
    attempt=…`` (before any traceback). Other ``extra=`` fields are left to the JSON format
    (libraries use them for their own ends, e.g. uvicorn's ``color_message``)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = record.__dict__
        parts = [f"{k}={_text_value(fields[k])}" for k in JOB_FIELDS if k in fields]
        return f"{line} {' '.join(parts)}" if parts else line


def setup_logging(level: str = "INFO", json: bool = False, prefix: str = "") -> None:
    """Configure the root logger for a rota process (worker, scheduler, CLI)."""
    handler = logging.StreamHandler(sys.stderr)
    if json:
        handler.setFormatter(JsonFormatter())
    else:
        fmt = f"%(asctime)s %(levelname)-7s {prefix}%(name)s: %(message)s"
        handler.setFormatter(TextFormatter(fmt, datefmt="%H:%M:%S"))
    handler.addFilter(JobContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
