"""What rota sends back to a producer: a job's final outcome as one JSON object."""

from __future__ import annotations

from typing import Any

import orjson

from rota.core.model import JobRecord


def outcome(record: JobRecord) -> dict[str, Any]:
    """``{"job_id", "task", "state", "result", "error", "attempts", "finished_at"}`` of a
    final job: ``state`` is ``succeeded`` (``result`` is the return value), ``dead`` or
    ``upstream_failed`` (``error``), or ``cancelled``."""
    try:
        result = record.result_value()
    except Exception:  # a damaged result row still gets a reply
        result = None
    return {
        "job_id": record.id,
        "task": record.task,
        "state": record.state.value,
        "result": result,
        "error": record.error,
        "attempts": record.attempts,
        "finished_at": record.finished_at,
    }


def invalid_outcome(reason: str) -> dict[str, Any]:
    """The reply to a message that was dead-lettered as invalid (no job exists)."""
    return {"job_id": None, "task": None, "state": "invalid", "result": None, "error": reason}


def encode(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data)
