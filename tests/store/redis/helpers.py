"""Shared helpers of the Redis store tests: records to submit, the leader's lease, keys of
a prefix, a flow that touches every kind of key, wake-up latency."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rota.core.model import Assignment, Lease, NewJob, NodeSpec, NodeState, ScheduleRecord
from rota.core.outcomes import Outcome, OutcomeKind
from rota.core.payload import encode_arguments
from rota.core.states import JobState
from rota.store import SCHEDULER_LEASE

pytest.importorskip("redis")

import redis

from rota.store.redis.store import RedisStore

SRC = Path(__file__).resolve().parents[3] / "src" / "rota" / "store" / "redis"
TTL = 30.0


def job(*args: object, priority: int = 0, retries: int = 0, **extra: Any) -> NewJob:
    return NewJob(
        id=uuid.uuid4().hex,
        task="t",
        queue=extra.pop("queue", "default"),
        payload=encode_arguments(list(args), {}),
        priority=priority,
        max_attempts=retries + 1,
        **extra,
    )


def node(name: str = "n") -> NodeSpec:
    return NodeSpec(id=f"{name}-{uuid.uuid4().hex[:8]}", name=name, slots=4, prefetch=0)


def leader(store: RedisStore, holder: str = "sched") -> Lease:
    lease = store.acquire_lease(SCHEDULER_LEASE, holder, TTL)
    assert lease is not None
    return lease


def keys_of(r: redis.Redis, prefix: str) -> list[str]:
    return sorted(r.scan_iter(match=f"{prefix}*", count=1000))


def full_flow(store: RedisStore) -> None:
    """Touch every kind of key: jobs in each state, nodes, leases, stats, results."""
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    done, failing, waiting, later = job(), job(retries=1), job(), job(delay=60)
    store.submit([done, failing, waiting, later])
    store.assign(lease, [Assignment(j.id, spec.id) for j in (done, failing, waiting)])
    started = {r.id: r for r in store.start_jobs(spec.id, 2, TTL)}
    outcomes = []
    for r in started.values():
        kind = OutcomeKind.SUCCEEDED if r.id == done.id else OutcomeKind.FAILED
        outcomes.append(Outcome(r.id, r.token, kind, result="1", retry_delay=30))
    store.complete(outcomes)
    store.heartbeat(spec.id, [], TTL)
    store.put_stats("scheduler", {"x": 1})
    store.wait_for_pending(0.01)
    store.wait_for_assignments(spec.id, 0.01)
    store.wait_for_results([done.id], 0.5)
    store.list_jobs(queue="default")
    store.list_nodes()
    store.count_jobs()
    store.promote_due(lease, 10)
    store.reap(lease, 60)
    gone = node("gone")
    store.register_node(gone)
    store.set_node_state(gone.id, NodeState.STOPPED)
    store.prune(3600)
    # workflows, unique keys, concurrency keys, schedules: leave each kind of key behind
    parent, other = job(), job(unique_key="u", concurrency_key="c", concurrency_limit=1)
    child = job(depends_on=(parent.id,))
    late = job(depends_on=(done.id,))  # its parent is final: "settle" until resolved
    store.submit([parent, other, child, late])
    store.assign(lease, [Assignment(other.id, spec.id)])
    store.concurrency_usage(["c"])
    store.put_schedules([ScheduleRecord("s", "{}")])
    store.fire_schedule(lease, "s", 60.0, None)
    store.list_schedules()


def latency(wait: Callable[[], object], act: Callable[[], object]) -> float:
    """Seconds between ``act`` being called and a thread blocked in ``wait`` returning."""
    woke: list[float] = []

    def waiter() -> None:
        wait()
        woke.append(time.monotonic())

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.15)  # let it block
    assert not woke, "returned before anything happened"
    start = time.monotonic()
    act()
    t.join(5)
    assert woke
    return woke[0] - start


def state_of_job(store: RedisStore, job_id: str) -> JobState:
    rec = store.get_job(job_id)
    assert rec is not None
    return rec.state
