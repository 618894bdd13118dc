"""Rows of the PostgreSQL store's queries <-> rota records."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import orjson

from rota.core.model import (
    AllocSpec,
    JobRecord,
)
from rota.core.states import JobState

EMPTY_JSON = "{}"


def short_hash(text: str, n: int = 16) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()[:n]


def floats_of(value: Any) -> dict[str, float]:
    return {str(k): float(v) for k, v in (value or {}).items()}


def json_text(value: dict[str, Any]) -> str:
    return orjson.dumps(value).decode() if value else EMPTY_JSON


def job_from_row(row: Sequence[Any]) -> JobRecord:
    """A ``JobRecord`` from a row listing the columns in the order of its fields."""
    (id_, task, queue, payload, priority, state, attempts, max_attempts, timeout, resources,
     labels, affinity, backoff_base, backoff_max, created_at, scheduled_at, node_id, token,
     started_at, finished_at, lease_expires_at, result, error, traceback, cancel_requested,
     seq, depends_on, pass_results, workflow_id, unique_key, concurrency_key, concurrency_limit,
     rate_limit, alloc, preempted_at, preemptions) = row  # fmt: skip
    return JobRecord(
        id=id_,
        task=task,
        queue=queue,
        payload=payload,
        priority=priority,
        state=JobState(state),
        attempts=attempts,
        max_attempts=max_attempts,
        timeout=timeout,
        resources=floats_of(resources),
        labels=dict(labels or {}),
        affinity=dict(affinity or {}),
        backoff_base=backoff_base,
        backoff_max=backoff_max,
        created_at=created_at,
        scheduled_at=scheduled_at,
        node_id=node_id,
        token=token,
        started_at=started_at,
        finished_at=finished_at,
        lease_expires_at=lease_expires_at,
        result=result,
        error=error,
        traceback=traceback,
        cancel_requested=cancel_requested,
        seq=seq,
        depends_on=tuple(depends_on) if depends_on else (),  # NULL columns: the defaults
        pass_results=bool(pass_results),
        workflow_id=workflow_id,
        unique_key=unique_key,
        concurrency_key=concurrency_key,
        concurrency_limit=concurrency_limit or 0,
        rate_limit=rate_limit,
        alloc=AllocSpec.from_json(alloc),
        preempted_at=preempted_at,
        preemptions=preemptions or 0,
    )
