"""Rows of the SQLite store's queries <-> rota records, and the parameters of its inserts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import orjson

from rota.core.model import (
    AllocSpec,
    JobRecord,
    NewJob,
    NodeSpec,
    PendingJob,
    RunningJob,
)
from rota.core.states import JobState


def json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


# Rows are turned into records positionally (a third of the cost of keywords, on the
# path every started job takes), so the queries' column order must be the records' field
# order: checked once here, on import.
_JOB_FIELDS = (
    "id", "task", "queue", "payload", "priority", "state", "attempts", "max_attempts",
    "timeout", "resources", "labels", "affinity", "backoff_base", "backoff_max",
    "created_at", "scheduled_at", "node_id", "token", "started_at", "finished_at",
    "lease_expires_at", "result", "error", "traceback", "cancel_requested", "seq",
    "depends_on", "pass_results", "workflow_id", "unique_key", "concurrency_key",
    "concurrency_limit", "rate_limit", "alloc", "preempted_at", "preemptions",
)  # fmt: skip
_PENDING_FIELDS = (
    "id", "queue", "priority", "seq", "resources", "labels", "affinity", "task",
    "concurrency_key", "concurrency_limit", "rate_limit", "alloc", "timeout", "enqueued_at",
)  # fmt: skip
for _record, _names in ((JobRecord, _JOB_FIELDS), (PendingJob, _PENDING_FIELDS)):
    if tuple(f.name for f in fields(_record))[: len(_names)] != _names:
        raise RuntimeError(
            f"rota.store.sqlite reads {_record.__name__} fields in the order {_names}"
        )


def job_from_row(row: Sequence[Any]) -> JobRecord:
    """A ``JobRecord`` from a row in the column order of the ``get_jobs`` query."""
    r, loads = row, orjson.loads
    return JobRecord(
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        JobState(r[5]),
        r[6],
        r[7],
        r[8],
        loads(r[9]),
        loads(r[10]),
        loads(r[11]),
        r[12],
        r[13],
        r[14],
        r[15],
        r[16],
        r[17],
        r[18],
        r[19],
        r[20],
        r[21],
        r[22],
        r[23],
        bool(r[24]),
        r[25],
        tuple(loads(r[26])) if r[26] else (),
        bool(r[27]),
        r[28],
        r[29],
        r[30],
        r[31],
        r[32],
        AllocSpec.from_json(r[33]),
        r[34],
        r[35],
    )


def pending_from_row(row: Sequence[Any]) -> PendingJob:
    """A ``PendingJob`` from a row of the ``pending_first`` / ``pending_after`` queries."""
    r, loads = row, orjson.loads
    return PendingJob(
        r[0],
        r[1],
        r[2],
        r[3],
        loads(r[4]),
        loads(r[5]),
        loads(r[6]),
        r[7],
        r[8],
        r[9],
        r[10],
        AllocSpec.from_json(r[11]),
        r[12],
        r[13],
    )


def running_from_row(row: Sequence[Any]) -> RunningJob:
    """A ``RunningJob`` from a row of the ``running_jobs`` query."""
    r = row
    return RunningJob(
        r[0],
        r[1],
        r[2],
        orjson.loads(r[3]),
        r[4],
        r[5],
        AllocSpec.from_json(r[6]),
        r[7],
        bool(r[8]),
        r[9],
    )


def started_jobs(rows: list[Any]) -> list[JobRecord]:
    """Jobs from ``start_jobs`` rows, highest priority then oldest first (``RETURNING``
    gives no order)."""
    jobs = [job_from_row(r) for r in rows]
    jobs.sort(key=lambda j: (-j.priority, j.seq))
    return jobs


def node_spec_to_json(spec: NodeSpec) -> str:
    return json_text(
        {
            "id": spec.id,
            "name": spec.name,
            "slots": spec.slots,
            "prefetch": spec.prefetch,
            "resources": spec.resources,
            "labels": spec.labels,
            "queues": list(spec.queues),
            "host": spec.host,
            "pid": spec.pid,
        }
    )


def node_spec_from_json(text: str | bytes) -> NodeSpec:
    d = orjson.loads(text)
    return NodeSpec(
        id=d["id"],
        name=d["name"],
        slots=d["slots"],
        prefetch=d["prefetch"],
        resources=d["resources"],
        labels=d["labels"],
        queues=tuple(d["queues"]),
        host=d.get("host", ""),
        pid=d.get("pid", 0),
    )


def job_insert_params(job: NewJob, now: float, parents: tuple[str, ...] | None) -> dict[str, Any]:
    """The parameters of ``insert_job`` (``parents is None``) or ``insert_flow_job`` for
    ``job``; a job with parents starts waiting."""
    due = job.eta if job.eta is not None else now + job.delay
    row = {
        "id": job.id,
        "task": job.task,
        "queue": job.queue,
        "payload": job.payload,
        "priority": job.priority,
        "state": "scheduled" if due > now else "pending",
        "max_attempts": job.max_attempts,
        "timeout": job.timeout,
        "resources": json_text(job.resources),
        "labels": json_text(job.labels),
        "affinity": json_text(job.affinity),
        "backoff_base": job.backoff_base,
        "backoff_max": job.backoff_max,
        "now": now,
        "scheduled_at": due,
        "alloc": job.alloc.to_json(),
    }
    if parents is not None:
        if parents:
            row["state"] = "waiting"
        row["depends_on"] = json_text(list(parents)) if parents else None
        row["pass_results"] = int(job.pass_results)
        row["workflow_id"] = job.workflow_id
        row["unique_key"] = job.unique_key
        row["concurrency_key"] = job.concurrency_key
        row["concurrency_limit"] = job.concurrency_limit
        row["rate_limit"] = job.rate_limit
    return row
