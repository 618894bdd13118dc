"""Builders for the allocation-policy tests: nodes, pending and running jobs."""

from __future__ import annotations

from rota.core.model import AllocSpec, NodeRecord, NodeSpec, NodeState, PendingJob, RunningJob


def node(
    node_id: str,
    *,
    slots: int = 4,
    resources: dict[str, float] | None = None,
    labels: dict[str, str] | None = None,
    queues: tuple[str, ...] = ("default",),
    running: int = 0,
    used: dict[str, float] | None = None,
) -> NodeRecord:
    spec = NodeSpec(
        id=node_id,
        name=node_id,
        slots=slots,
        prefetch=0,
        resources=resources or {},
        labels=labels or {},
        queues=queues,
    )
    return NodeRecord(spec, NodeState.LIVE, 0.0, 0.0, 0, running, used or {})


def pending(
    job_id: str,
    *,
    priority: int = 0,
    seq: int = 0,
    resources: dict[str, float] | None = None,
    queue: str = "default",
    timeout: float | None = None,
    enqueued_at: float = 0.0,
    **alloc: object,
) -> PendingJob:
    return PendingJob(
        id=job_id,
        queue=queue,
        priority=priority,
        seq=seq,
        resources=resources or {},
        labels={},
        affinity={},
        alloc=AllocSpec(**alloc),  # type: ignore[arg-type]
        timeout=timeout,
        enqueued_at=enqueued_at,
    )


def run(
    job_id: str,
    node_id: str,
    *,
    priority: int = 0,
    resources: dict[str, float] | None = None,
    started_at: float = 0.0,
    timeout: float | None = None,
    preempted_at: float | None = None,
    queue: str = "default",
    **alloc: object,
) -> RunningJob:
    return RunningJob(
        id=job_id,
        node_id=node_id,
        priority=priority,
        resources=resources or {},
        started_at=started_at,
        timeout=timeout,
        alloc=AllocSpec(**alloc),  # type: ignore[arg-type]
        preempted_at=preempted_at,
        queue=queue,
    )


def busy(node_id: str, jobs: list[RunningJob], **kwargs: object) -> NodeRecord:
    """A node whose load is ``jobs``."""
    used: dict[str, float] = {}
    for r in jobs:
        for k, v in r.resources.items():
            used[k] = used.get(k, 0.0) + v
    return node(node_id, running=len(jobs), used=used, **kwargs)  # type: ignore[arg-type]
