"""Workflows, unique keys and concurrency keys on Redis: plain jobs never touch the flow keys,
counts return to zero, keys are let go, replays and expired parents."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from rota.core.model import Assignment, NewJob, NodeState
from rota.core.outcomes import Outcome, OutcomeKind
from rota.core.states import JobState

pytest.importorskip("redis")

import redis

from rota.store.redis.store import RedisStore
from tests.store.redis.helpers import TTL, job, keys_of, leader, node, state_of_job

# ---- workflows, unique keys, concurrency keys --------------------------------------------------
FLOW_KEYS = ("settle", "concurrency", "unique:", "children:", "schedules")


def test_plain_jobs_never_touch_the_flow_keys(store: RedisStore, raw: redis.Redis) -> None:
    """Jobs that use none of the new features leave no trace in the flow bookkeeping: the
    hot paths read the flow fields in the HMGET they already make and write nothing more."""
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    ok, failing, cancelled, released, lost = job(), job(retries=1), job(), job(), job()
    store.submit([ok, failing, cancelled, released, lost])
    store.assign(lease, [Assignment(j.id, spec.id) for j in (ok, failing, cancelled, released)])
    started = {r.id: r for r in store.start_jobs(spec.id, 3, TTL)}
    store.complete(
        [
            Outcome(r.id, r.token, OutcomeKind.SUCCEEDED if r.id == ok.id else OutcomeKind.FAILED)
            for r in started.values()
        ]
    )
    for j in (cancelled, lost):
        store.cancel(j.id)
    rest = store.get_jobs([released.id])
    store.release_jobs(spec.id, [(r.id, r.token) for r in rest])
    assert store.resolve_dependencies(lease, 100) == 0
    base = f"{store.prefix}:{{{store.prefix}}}:"
    for key in keys_of(raw, store.prefix):
        assert not key.removeprefix(base).startswith(FLOW_KEYS), key
    for h in store._hashes([ok.id, failing.id, cancelled.id, released.id, lost.id]):
        assert not {"children", "depends_on", "concurrency_key", "unique_key"} & set(h)


def test_concurrency_counts_return_to_zero_on_every_path(
    store: RedisStore, raw: redis.Redis
) -> None:
    lease = leader(store)
    a, b = node("a"), node("b")
    store.register_node(a)
    store.register_node(b)

    def keyed(**kw: Any) -> NewJob:
        return job(concurrency_key="k", concurrency_limit=9, **kw)

    done, retried, cancelled, released, reaped, expired = (keyed(retries=1) for _ in range(6))
    on_a = [done, retried, cancelled, released, expired]
    store.submit([*on_a, reaped])
    store.assign(lease, [Assignment(j.id, a.id) for j in on_a])
    store.assign(lease, [Assignment(reaped.id, b.id)])
    assert store.concurrency_usage(["k"]) == {"k": 6}
    store.cancel(cancelled.id)  # assigned: cancelled at once
    assert store.concurrency_usage(["k"]) == {"k": 5}
    recs = {r.id: r for r in store.start_jobs(a.id, 4, 0.05)}  # short leases
    assert store.concurrency_usage(["k"]) == {"k": 5}  # assigned -> running: unchanged
    store.complete(
        [
            Outcome(done.id, recs[done.id].token, OutcomeKind.SUCCEEDED),
            Outcome(retried.id, recs[retried.id].token, OutcomeKind.FAILED, retry_delay=60),
        ]
    )
    assert store.concurrency_usage(["k"]) == {"k": 3}
    store.release_jobs(a.id, [(released.id, recs[released.id].token)])
    assert store.concurrency_usage(["k"]) == {"k": 2}
    store.set_node_state(b.id, NodeState.STOPPED)
    time.sleep(0.1)  # the lease of `expired` (running on a) runs out
    report = store.reap(lease, 60)
    assert (report.requeued, report.retried) == (1, 1)
    assert store.concurrency_usage(["k"]) == {}
    assert raw.hgetall(store.key("concurrency")) == {}  # fields at 0 are deleted


def test_unique_key_is_let_go_when_final_and_expires_with_unique_for(
    store: RedisStore, raw: redis.Redis
) -> None:
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    a = job(unique_key="k1")
    b = job(unique_key="k2", unique_for=30)
    store.submit([a, b])
    assert raw.get(store.key("unique", "k1")) == a.id and raw.ttl(store.key("unique", "k1")) == -1
    assert 25 < raw.pttl(store.key("unique", "k2")) / 1000 <= 30
    store.assign(lease, [Assignment(a.id, spec.id)])
    (r,) = store.start_jobs(spec.id, 1, TTL)
    store.complete([Outcome(r.id, r.token, OutcomeKind.SUCCEEDED)])
    store.cancel(b.id)
    assert raw.exists(store.key("unique", "k1"), store.key("unique", "k2")) == 0


def test_a_replayed_unique_submit_returns_the_same_ids(store: RedisStore) -> None:
    held = job(unique_key="k")
    store.submit([held])
    import orjson

    from rota.store.redis.codec import submit_args

    fresh = job(unique_key="other")
    call = store._fcall_command("submit", submit_args([job(unique_key="k"), fresh]), rid="r1")
    first = store._fcall(call)
    again = store._fcall(call)
    assert first == again == [held.id, fresh.id]
    assert orjson.loads(submit_args([job()])[0])[0][7:] == []  # plain: no extra fields
    assert submit_args([job()])[1] == ""  # and no specials


def test_a_child_of_a_deduplicated_parent_depends_on_the_holder(store: RedisStore) -> None:
    holder = job(unique_key="k")
    store.submit([holder])
    dup = job(unique_key="k")
    child = job(depends_on=(dup.id,))
    grandchild = job(depends_on=(child.id, dup.id))
    assert store.submit([dup, child, grandchild]) == [holder.id, child.id, grandchild.id]
    c, g = store.get_jobs([child.id, grandchild.id])
    assert c.depends_on == (holder.id,) and g.depends_on == (child.id, holder.id)
    first, second = job(unique_key="n"), job(unique_key="n")  # holder earlier in the batch
    kid = job(depends_on=(second.id,))
    assert store.submit([first, second, kid]) == [first.id, first.id, kid.id]
    rec = store.get_job(kid.id)
    assert rec is not None and rec.depends_on == (first.id,) and rec.state is JobState.WAITING


def test_resolve_honours_its_limit_and_continues(store: RedisStore, raw: redis.Redis) -> None:
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    parent = job()
    kids = [job(depends_on=(parent.id,)) for _ in range(25)]
    store.submit([parent, *kids])
    store.assign(lease, [Assignment(parent.id, spec.id)])
    (r,) = store.start_jobs(spec.id, 1, TTL)
    store.complete([Outcome(r.id, r.token, OutcomeKind.SUCCEEDED)])
    assert raw.zrange(store.key("settle"), 0, -1) == [parent.id]
    assert [store.resolve_dependencies(lease, 10) for _ in range(4)] == [10, 10, 5, 0]
    assert store.count_jobs() == {
        ("default", JobState.SUCCEEDED): 1,
        ("default", JobState.PENDING): 25,
    }
    assert raw.exists(store.key("settle"), store.key("children", parent.id)) == 0


def test_upstream_failed_after_the_parent_result_expired(
    connect: Callable[..., RedisStore], url: str
) -> None:
    """A parent gone from Redis (its result TTL passed) counts as failed: the child is not
    run on a guess."""
    store = connect(url + "&result_ttl=1")
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    a, b = job(), job()
    child = job(depends_on=(a.id, b.id))
    store.submit([a, b, child])
    store.assign(lease, [Assignment(a.id, spec.id)])
    (r,) = store.start_jobs(spec.id, 1, TTL)
    store.complete([Outcome(r.id, r.token, OutcomeKind.SUCCEEDED)])
    assert store.resolve_dependencies(lease, 10) == 0  # b is still pending
    time.sleep(2.1)
    store.cancel(b.id)
    assert store.resolve_dependencies(lease, 10) == 1
    rec = store.get_job(child.id)
    assert rec is not None and rec.state is JobState.UPSTREAM_FAILED
    assert rec.error == f"upstream failed: parent {a.id} is gone"


def test_a_parent_retried_before_resolve_keeps_its_children(store: RedisStore) -> None:
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    parent = job()
    child = job(depends_on=(parent.id,))
    store.submit([parent, child])

    def run_parent(kind: OutcomeKind) -> None:
        store.assign(lease, [Assignment(parent.id, spec.id)])
        (r,) = store.start_jobs(spec.id, 1, TTL)
        store.complete([Outcome(r.id, r.token, kind)])

    run_parent(OutcomeKind.FATAL)  # dead: "settle" holds it
    assert store.retry_dead([parent.id]) == 1  # ...but it goes again before resolve runs
    assert store.resolve_dependencies(lease, 10) == 0
    assert state_of_job(store, child.id) is JobState.WAITING
    run_parent(OutcomeKind.SUCCEEDED)
    assert store.resolve_dependencies(lease, 10) == 1
    assert state_of_job(store, child.id) is JobState.PENDING
