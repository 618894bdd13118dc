"""Redis wake-ups: waits return within milliseconds of the change (scheduler, nodes, result
waiters, the asyncio claims), and wake-up lists never grow."""

from __future__ import annotations

import asyncio
import functools
import random
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from rota.core.model import Assignment, Lease
from rota.core.outcomes import Outcome, OutcomeKind
from rota.core.states import JobState

pytest.importorskip("redis")

import redis

from rota.store.redis.store import RedisStore
from tests.store.redis.helpers import TTL, job, keys_of, latency, leader, node

# ---- wake-ups ----------------------------------------------------------------------------


def test_wake_ups_arrive_within_milliseconds(
    store: RedisStore, connect: Callable[..., RedisStore]
) -> None:
    sched = connect()
    lease = leader(sched)
    spec = node()
    store.register_node(spec)
    assign_lat, pending_lat, result_lat = [], [], []
    for _ in range(5):
        j = job()
        sched.wait_for_pending(0)  # take the wake-up an earlier step left
        pending_lat.append(
            latency(lambda: sched.wait_for_pending(5), functools.partial(store.submit, [j]))
        )
        assign_lat.append(
            latency(
                lambda: store.wait_for_assignments(spec.id, 5),
                functools.partial(sched.assign, lease, [Assignment(j.id, spec.id)]),
            )
        )
        (r,) = store.start_jobs(spec.id, 1, TTL)
        ok = Outcome(r.id, r.token, OutcomeKind.SUCCEEDED, result="1")
        result_lat.append(
            latency(
                functools.partial(sched.wait_for_results, [r.id], 5),
                functools.partial(store.complete, [ok]),
            )
        )
    for lat in (assign_lat, pending_lat, result_lat):
        assert statistics.median(lat) < 0.05, lat
        assert max(lat) < 1.0, lat


def test_wait_for_assignments_returns_at_once_when_work_is_there(store: RedisStore) -> None:
    spec = node()
    store.register_node(spec)
    j = job()
    store.submit([j])
    store.assign(leader(store), [Assignment(j.id, spec.id)])
    for _ in range(2):  # the wake-up is consumed, the assigned job is still there
        start = time.monotonic()
        store.wait_for_assignments(spec.id, 2)
        assert time.monotonic() - start < 0.5
    start = time.monotonic()
    store.wait_for_assignments(node().id, 0.2)
    assert 0.15 < time.monotonic() - start < 1.5


def test_async_claims_start_what_a_wake_up_brings(store: RedisStore) -> None:
    """wait_and_start blocks on the node's wake-up list with start_jobs pipelined behind
    it: an assignment comes back already started, within milliseconds; an idle wait
    returns nothing once its timeout passes; completions go through complete_and_start."""
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    claims = store.async_claims()
    other = RedisStore(store.url)

    async def run() -> None:
        start = time.monotonic()
        assert await claims.wait_and_start(spec.id, 4, TTL, 0.2) == []
        assert 0.15 < time.monotonic() - start < 1.5
        j = job()
        other.submit([j])
        waiting = asyncio.ensure_future(claims.wait_and_start(spec.id, 4, TTL, 5))
        await asyncio.sleep(0.15)  # let it block
        assert not waiting.done()
        start = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: other.assign(lease, [Assignment(j.id, spec.id)])
        )
        (rec,) = await waiting
        assert time.monotonic() - start < 0.5
        assert rec.id == j.id and rec.state is JobState.RUNNING and rec.attempts == 1
        assert rec.lease_expires_at is not None and rec.started_at is not None
        # work already assigned: no blocking, and no more than the limit
        more = [job(i) for i in range(3)]
        other.submit(more)
        other.assign(lease, [Assignment(m.id, spec.id) for m in more])
        got = await claims.wait_and_start(spec.id, 2, TTL, 5)
        assert [r.id for r in got] == [m.id for m in more[:2]]
        done = [Outcome(r.id, r.token, OutcomeKind.SUCCEEDED, result="1") for r in [rec, *got]]
        accepted, nxt = await claims.complete_and_start(done, spec.id, 5, TTL)
        assert accepted == [True] * 3 and [r.id for r in nxt] == [more[2].id]
        assert await claims.wait_and_start(spec.id, 0, TTL, 0.05) == []
        await claims.close()

    try:
        asyncio.run(run())
        assert store.count_jobs() == {
            ("default", JobState.SUCCEEDED): 3,
            ("default", JobState.RUNNING): 1,
        }
    finally:
        other.close()


def test_a_woken_scheduler_gets_its_snapshot_with_the_wake_up(
    store: RedisStore, connect: Callable[..., RedisStore]
) -> None:
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    store.wait_for_pending(0)  # take the wake-up the registration left
    producer = connect()
    j = job()
    got: list[Any] = []

    def wait() -> None:
        got.append(store.wait_for_pending_snapshot(5, lease, 100, 100, 10))

    elapsed = latency(wait, lambda: producer.submit([j]))
    assert elapsed < 0.5
    nodes, page = got[0].nodes, got[0].pending
    assert [p.id for p in page] == [j.id] and [n.id for n in nodes] == [spec.id]
    assert store.assign(lease, [Assignment(j.id, spec.id)]) == 1
    # idle: the snapshot is taken when the wait times out; a stale lease gets none
    assert store.wait_for_pending_snapshot(0.05, lease, 100, 100, 10) is not None
    stale = Lease(lease.name, lease.holder, lease.token + 1, lease.expires_at, 0.0)
    assert store.wait_for_pending_snapshot(0.05, stale, 100, 100, 10) is None


def test_many_waiters_on_one_result_all_wake(
    store: RedisStore, connect: Callable[..., RedisStore]
) -> None:
    spec = node()
    store.register_node(spec)
    j = job()
    store.submit([j])
    store.assign(leader(store), [Assignment(j.id, spec.id)])
    (r,) = store.start_jobs(spec.id, 1, TTL)
    waiters = [connect() for _ in range(3)]
    got: list[int] = []

    def wait(s: RedisStore) -> None:
        got.append(len(s.wait_for_results([r.id, r.id], 5)))

    threads = [threading.Thread(target=wait, args=(s,)) for s in waiters]
    for t in threads:
        t.start()
    time.sleep(0.2)
    start = time.monotonic()
    store.complete([Outcome(r.id, r.token, OutcomeKind.SUCCEEDED, result="1")])
    for t in threads:
        t.join(5)
    assert got == [1, 1, 1] and time.monotonic() - start < 1.0


def test_waiting_for_many_results_finishing_in_any_order(
    store: RedisStore, connect: Callable[..., RedisStore], raw: redis.Redis
) -> None:
    spec = node()
    store.register_node(spec)
    jobs = [job(i) for i in range(300)]
    store.submit(jobs)
    store.assign(leader(store), [Assignment(j.id, spec.id) for j in jobs])
    started = store.start_jobs(spec.id, 300, TTL)
    unwatched = started[:50]  # finished before anyone waits: no done list for them
    store.complete([Outcome(r.id, r.token, OutcomeKind.SUCCEEDED, result="1") for r in unwatched])
    assert not [k for k in keys_of(raw, store.prefix) if ":done:" in k]
    worker = connect()
    rest = started[50:]
    random.shuffle(rest)

    def finish() -> None:
        time.sleep(0.2)
        for i in range(0, len(rest), 25):
            batch = rest[i : i + 25]
            worker.complete([Outcome(r.id, r.token, OutcomeKind.SUCCEEDED) for r in batch])
            time.sleep(0.01)

    t = threading.Thread(target=finish)
    t.start()
    start = time.monotonic()
    done = store.wait_for_results([j.id for j in jobs], 10)
    took = time.monotonic() - start
    t.join(10)
    assert len(done) == 300 and all(r.state is JobState.SUCCEEDED for r in done)
    assert took < 5
    partial = store.wait_for_results([jobs[0].id, "missing"], 0.3)
    assert [r.id for r in partial] == [jobs[0].id]


def test_wake_lists_never_grow(store: RedisStore, raw: redis.Redis) -> None:
    spec = node()
    store.register_node(spec)
    lease = leader(store)
    for _ in range(20):
        j = job()
        store.submit([j])
        store.assign(lease, [Assignment(j.id, spec.id)])
    assert raw.llen(store.key("wake", "sched")) == 1
    assert raw.llen(store.key("wake", "node", spec.id)) == 1
