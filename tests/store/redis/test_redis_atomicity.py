"""Atomicity of the Redis scripts under concurrency: processes racing on the same jobs, threads
racing for the lease, replayed requests, all-or-none submits, fencing."""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from rota.core.errors import LeaseLost, SubmitError
from rota.core.model import Assignment, Lease
from rota.core.outcomes import Outcome, OutcomeKind
from rota.core.states import JobState

pytest.importorskip("redis")


from rota.store.redis.store import RedisStore
from tests.store.redis.helpers import TTL, job, leader, node


# ---- atomicity under concurrency --------------------------------------------------------
def _at(when: float) -> None:
    """Sleep until wall-clock ``when`` so that processes start racing together."""
    time.sleep(max(0.0, when - time.time()))


def _assign_all(
    when: float, url: str, lease: tuple[str, str, int], node_id: str, ids: list[str]
) -> int:
    s = RedisStore(url)
    try:
        s.now()  # connected before the race starts
        _at(when)
        random.shuffle(ids)
        lease_obj = Lease(lease[0], lease[1], lease[2], 0.0, 0.0)
        return sum(s.assign(lease_obj, [Assignment(i, node_id)]) for i in ids)
    finally:
        s.close()


def _start_all(when: float, url: str, node_id: str, n: int) -> list[tuple[str, int]]:
    s = RedisStore(url)
    try:
        s.now()
        _at(when)
        got: list[tuple[str, int]] = []
        for _ in range(n):
            got += [(r.id, r.token) for r in s.start_jobs(node_id, 3, TTL)]
        return got
    finally:
        s.close()


def _complete_all(when: float, url: str, done: list[tuple[str, int]]) -> list[bool]:
    s = RedisStore(url)
    try:
        s.now()
        _at(when)
        out: list[bool] = []
        for i in range(0, len(done), 7):
            out += s.complete(
                [Outcome(j, t, OutcomeKind.SUCCEEDED, result="1") for j, t in done[i : i + 7]]
            )
        return out
    finally:
        s.close()


def test_processes_racing_on_the_same_jobs_never_double_book(store: RedisStore) -> None:
    lease = leader(store)
    nodes = [node(f"n{i}") for i in range(4)]
    for spec in nodes:
        store.register_node(spec)
    jobs = [job(i, priority=i % 3) for i in range(120)]
    store.submit(jobs)
    ids = [j.id for j in jobs]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        lease_t = (lease.name, lease.holder, lease.token)
        when = time.time() + 2  # spawned workers need a moment to import
        placed = pool.starmap(
            _assign_all, [(when, store.url, lease_t, n.id, list(ids)) for n in nodes]
        )
        assert sum(placed) == len(jobs)  # each job placed exactly once, by one process
        records = store.get_jobs(ids)
        assert all(r.state is JobState.ASSIGNED and r.token >= 1 for r in records)
        assert len({r.token for r in records}) == len(jobs)  # tokens are never handed out twice
        per_node = {n.id: sum(r.node_id == n.id for r in records) for n in nodes}
        loads = {n.id: n.assigned for n in store.list_nodes()}
        assert loads == per_node and sum(loads.values()) == len(jobs)

        # four processes start the jobs of one node at once: each job starts once
        busy = max(per_node, key=lambda k: per_node[k])
        started = pool.starmap(_start_all, [(time.time() + 0.5, store.url, busy, 20)] * 4)
        flat = [x for part in started for x in part]
        assert len(flat) == len(set(flat)) == per_node[busy]

        # four processes report the same outcomes: the same report is idempotent (each
        # copy accepted), and each job is moved and counted once
        accepted = pool.starmap(_complete_all, [(time.time() + 0.5, store.url, flat)] * 4)
    per_job = [sum(a[i] for a in accepted) for i in range(len(flat))]
    assert per_job == [4] * len(flat)
    assert all(len(store.job_attempts(job_id)) == 1 for job_id, _ in flat)
    counts = store.count_jobs()
    assert counts[("default", JobState.SUCCEEDED)] == len(flat)
    assert counts.get(("default", JobState.ASSIGNED), 0) == len(jobs) - len(flat)
    assert {n.id: n.in_flight for n in store.list_nodes()}[busy] == 0


def test_threads_racing_for_the_lease_get_one_token(connect: Callable[..., RedisStore]) -> None:
    stores = [connect() for _ in range(8)]
    barrier = threading.Barrier(len(stores))
    got: list[Lease | None] = []

    def grab(s: RedisStore, i: int) -> None:
        barrier.wait()
        got.append(s.acquire_lease("L", f"h{i}", 5))

    threads = [threading.Thread(target=grab, args=(s, i)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    winners = [g for g in got if g is not None]
    assert len(winners) == 1
    current = stores[0].get_lease("L")
    assert current is not None and (current.holder, current.token) == (
        winners[0].holder,
        winners[0].token,
    )


def test_a_replayed_request_runs_once(store: RedisStore) -> None:
    """A script re-sent after a lost reply (same request id) returns the first reply."""
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    jobs = [job(), job()]
    store.submit(jobs)
    store.assign(lease, [Assignment(j.id, spec.id) for j in jobs])

    def run(name: str, rid: str, *args: Any) -> Any:
        return store._fcall(store._fcall_command(name, args, rid=rid))

    first = run("start_jobs", "r1", spec.id, 10, TTL)
    again = run("start_jobs", "r1", spec.id, 10, TTL)
    assert first == again and len(first) == 4  # the same two jobs, not started twice
    recs = store.get_jobs([j.id for j in jobs])
    assert [r.attempts for r in recs] == [1, 1]
    import orjson

    rows = orjson.dumps([[r.id, r.token, "succeeded", "1", "", "", "0.0"] for r in recs])
    assert run("complete", "r2", rows) == [1, 1]
    assert run("complete", "r2", rows) == [1, 1]  # replay: same answer
    # a new request with the same report: accepted (idempotent), nothing changes
    assert run("complete", "r3", rows) == [1, 1]
    failed = orjson.dumps([[r.id, r.token, "failed", "", "E", "", "0.0"] for r in recs])
    assert run("complete", "r5", failed) == [0, 0]  # another outcome: refused, already final
    assert store.count_jobs()[("default", JobState.SUCCEEDED)] == 2
    dup = job()
    sub = orjson.dumps([[dup.id, "t", "default", dup.payload, 0, "", ""]])
    run("submit", "r4", sub)
    run("submit", "r4", sub)  # replay of a stored submit: no duplicate error
    with pytest.raises(SubmitError):
        store.submit([dup])
    assert store.count_jobs()[("default", JobState.PENDING)] == 1


def test_submit_is_all_or_none(store: RedisStore) -> None:
    old = job()
    store.submit([old])
    batch = [job(), job(), old, job()]
    with pytest.raises(SubmitError):
        store.submit(batch)
    twice = job()
    with pytest.raises(SubmitError):
        store.submit([twice, twice])
    assert store.get_jobs([j.id for j in batch] + [twice.id]) == store.get_jobs([old.id])
    assert store.count_jobs() == {("default", JobState.PENDING): 1}


def test_fenced_scripts_write_nothing_for_a_stale_lease(store: RedisStore) -> None:
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    j = job()
    store.submit([j])
    stale = Lease(lease.name, lease.holder, lease.token + 1, lease.expires_at, 0.0)
    with pytest.raises(LeaseLost):
        store.assign(stale, [Assignment(j.id, spec.id)])
    rec = store.get_job(j.id)
    assert rec is not None and rec.state is JobState.PENDING and rec.token == 0


def test_complete_and_start_is_one_script_and_replays_once(store: RedisStore) -> None:
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    first, second = job(), job()
    store.submit([first, second])
    store.assign(lease, [Assignment(first.id, spec.id), Assignment(second.id, spec.id)])
    (rec,) = store.start_jobs(spec.id, 1, TTL)
    import orjson

    rows = orjson.dumps([[rec.id, rec.token, "succeeded", "1", "", "", "0.0"]])
    call = store._fcall_command("complete_and_start", [rows, spec.id, 5, TTL], rid="r1")
    reply = store._fcall(call)
    again = store._fcall(call)
    assert reply == again and reply[0] == [1] and reply[1][0] == second.id
    done, started = store.get_jobs([first.id, second.id])
    assert done.state is JobState.SUCCEEDED and done.result == "1"
    assert started.state is JobState.RUNNING and started.attempts == 1  # not started twice
    assert store.count_jobs() == {
        ("default", JobState.SUCCEEDED): 1,
        ("default", JobState.RUNNING): 1,
    }
