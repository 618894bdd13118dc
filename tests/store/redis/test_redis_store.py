"""Redis-specific tests: key namespacing, atomicity across processes, wake-up latency,
result TTLs, reconnection after CLIENT KILL and after a Redis restart.

The contract suite (tests/contract) covers the store's semantics; this file covers what is
particular to Redis. Every test talks to loopback only and is bounded in time.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rota.core.errors import LeaseLost, StoreError, SubmitError
from rota.core.model import (
    Assignment,
    Lease,
    NewJob,
    NodeSpec,
    NodeState,
    Outcome,
    OutcomeKind,
    ScheduleRecord,
)
from rota.core.payload import encode_arguments
from rota.core.states import JobState
from rota.store import SCHEDULER_LEASE
from tests.stores import REDIS_HOST, REDIS_PORT, skip_or_fail, store_url

pytest.importorskip("redis")

import redis

from rota.store.redis.connection import parse_url
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


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    with store_url("redis", tmp_path) as u:
        yield u


@pytest.fixture
def connect(url: str) -> Iterator[Callable[..., RedisStore]]:
    opened: list[RedisStore] = []

    def factory(u: str | None = None, **kw: Any) -> RedisStore:
        s = RedisStore(u or url, **kw)
        opened.append(s)
        return s

    yield factory
    for s in opened:
        s.close()


@pytest.fixture
def store(connect: Callable[..., RedisStore]) -> RedisStore:
    return connect()


@pytest.fixture
def raw() -> Iterator[redis.Redis]:
    r = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, decode_responses=True)
    yield r
    r.close()


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


# ---- URL and key namespacing ------------------------------------------------------------
def test_url_parsing_strips_our_parameters() -> None:
    conn, prefix, ttl = parse_url("redis://h:1/2?prefix=app1&result_ttl=60&health_check_interval=3")
    assert (prefix, ttl) == ("app1", 60.0)
    assert conn == "redis://h:1/2?health_check_interval=3"
    assert parse_url("redis://h:1/0")[1:] == ("rota", 7 * 24 * 3600.0)
    from rota.core.errors import InvalidOption

    with pytest.raises(InvalidOption):
        parse_url("redis://h/0?prefix=a{b}")
    with pytest.raises(InvalidOption):
        parse_url("redis://h/0?result_ttl=-1")


def test_two_prefixes_do_not_see_each_other(
    connect: Callable[..., RedisStore], raw: redis.Redis, tmp_path: Path
) -> None:
    a = connect()
    with store_url("redis", tmp_path) as other_url:
        b = connect(other_url)
        full_flow(a)
        mine = job()
        a.submit([mine])
        assert b.count_jobs() == {}
        assert b.get_jobs([mine.id]) == [] and b.list_jobs() == []
        assert b.pending_jobs(10) == [] and b.list_nodes() == []
        assert b.get_lease(SCHEDULER_LEASE) is None and b.get_stats("scheduler") is None
        b.submit([job()])
        assert [p.id for p in b.pending_jobs(10)] != [p.id for p in a.pending_jobs(10)]
        a_keys, b_keys = keys_of(raw, a.prefix), keys_of(raw, b.prefix)
        assert a_keys and b_keys and not set(a_keys) & set(b_keys)
        for key in a_keys:  # every key carries the app's hash tag (one cluster slot)
            assert key.startswith(f"{a.prefix}:{{{a.prefix}}}:"), key


def test_every_key_is_documented_in_the_script_header(store: RedisStore, raw: redis.Redis) -> None:
    full_flow(store)
    header = (SRC / "lua" / "lib.lua").read_text().split("]]")[0]
    families = set(re.findall(r'B\.\."([a-z:]+)"', header))
    assert {"job:", "jobs", "pending", "nodes:alive", "wake:sched"} <= families
    base = f"{store.prefix}:{{{store.prefix}}}:"
    for key in keys_of(raw, store.prefix):
        rest = key.removeprefix(base)
        fixed = rest in families  # e.g. "pending"
        by_id = any(f.endswith(":") and rest.startswith(f) for f in families)
        assert fixed or by_id, f"key {key!r} is not in the layout documented in the header"


def test_no_keys_command_anywhere(store: RedisStore, raw: redis.Redis) -> None:
    for path in [*SRC.glob("*.py"), *SRC.glob("lua/*.lua")]:
        text = path.read_text()
        assert not re.search(r"""['"]KEYS['"]""", text), path
        assert not re.search(r"\.keys\(|scan_iter|['\"]SCAN['\"]", text), path

    def calls(name: str) -> int:
        stats = raw.info("commandstats").get(f"cmdstat_{name}", {})
        return int(stats.get("calls", 0)) if isinstance(stats, dict) else 0

    before = calls("keys")
    full_flow(store)
    assert calls("keys") == before


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

        # four processes report the same outcomes: each is accepted exactly once
        accepted = pool.starmap(_complete_all, [(time.time() + 0.5, store.url, flat)] * 4)
    per_job = [sum(a[i] for a in accepted) for i in range(len(flat))]
    assert per_job == [1] * len(flat)
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
    assert len(winners) == 1 and winners[0].token == 1


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
    assert run("complete", "r3", rows) == [0, 0]  # a new request: refused, already final
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


# ---- ordering, listing, odd values ---------------------------------------------------------
def test_big_batch_order_and_paging(store: RedisStore) -> None:
    jobs = [job(i, priority=random.choice([-(2**31), -3, 0, 0, 7, 2**31 - 1])) for i in range(3000)]
    store.submit(jobs)
    expected = [j.id for j in sorted(jobs, key=lambda j: -j.priority)]  # stable: FIFO ties
    got: list[str] = []
    after = None
    while True:
        page = store.pending_jobs(701, after)
        if not page:
            break
        got += [p.id for p in page]
        after = (page[-1].priority, page[-1].seq)
    assert got == expected


def test_list_jobs_filters_across_pages(store: RedisStore) -> None:
    jobs = [job(i, queue="a" if i % 3 else "b") for i in range(1300)]
    store.submit(jobs)
    b = [j.id for j in jobs if j.queue == "b"]
    assert [r.id for r in store.list_jobs(queue="b", limit=1000)] == b[::-1]
    assert [r.id for r in store.list_jobs(limit=5)] == [j.id for j in jobs[::-1][:5]]
    assert len(store.list_jobs(state=JobState.PENDING, queue="a", limit=2000)) == 1300 - len(b)


def test_pending_jobs_are_listed_newest_first_across_priorities(store: RedisStore) -> None:
    """Pending jobs have no index by seq: list_jobs reads "pending" one priority band at a
    time (pending_newest) and must still give the newest first, page after page."""
    prios = [-(2**31), -3, 0, 7, 2**31 - 1]
    jobs = [job(i, priority=random.choice(prios), queue="a" if i % 4 else "b") for i in range(1200)]
    for i in range(0, len(jobs), 100):  # several batches: seq order is submission order
        store.submit(jobs[i : i + 100])
    newest = [j.id for j in jobs[::-1]]
    assert [r.id for r in store.list_jobs(state=JobState.PENDING, limit=37)] == newest[:37]
    assert [r.id for r in store.list_jobs(state=JobState.PENDING, limit=5000)] == newest
    b = [j.id for j in jobs[::-1] if j.queue == "b"]
    assert [r.id for r in store.list_jobs(state=JobState.PENDING, queue="b", limit=250)] == b[:250]
    # once some are assigned and running, the three listings split them between them
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    placed = store.pending_jobs(30)
    store.assign(lease, [Assignment(p.id, spec.id) for p in placed])
    running = {r.id for r in store.start_jobs(spec.id, 10, TTL)}
    assigned = {p.id for p in placed} - running
    by_state = {
        st: [r.id for r in store.list_jobs(state=st, limit=5000)]
        for st in (JobState.PENDING, JobState.ASSIGNED, JobState.RUNNING)
    }
    assert (
        set(by_state[JobState.RUNNING]) == running and set(by_state[JobState.ASSIGNED]) == assigned
    )
    assert by_state[JobState.PENDING] == [i for i in newest if i not in running | assigned]
    for ids in by_state.values():  # newest first in each
        seqs = [r.seq for r in store.get_jobs(ids)]
        assert seqs == sorted(seqs, reverse=True)
    assert [r.id for r in store.list_jobs(state=JobState.RUNNING, node_id="other")] == []


def test_the_scheduler_never_reads_job_hashes_to_place(store: RedisStore, raw: redis.Redis) -> None:
    """Placement reads everything it needs from the "pending" members, and assign takes the
    member it was given: with the placement fields gone from the job hashes, the snapshot
    and the assignment still see them (no HMGET per pending job)."""
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    jobs = [
        job(i, resources={"cpu": 1}, labels={"z": "eu"}, concurrency_key="k") for i in range(50)
    ]
    store.submit(jobs)
    for j in jobs:
        raw.hdel(store.key("job", j.id), "resources", "labels", "concurrency_key", "queue")
    page = store.placement_snapshot(lease, 100, 100, 100, True).pending
    assert len(page) == 50 and page[0].resources == {"cpu": 1.0} and page[0].labels == {"z": "eu"}
    assert page[0].concurrency_key == "k" and page[0].queue == "default"
    assert store.assign(lease, [Assignment(p.id, spec.id) for p in page]) == 50
    assert store.list_nodes()[0].used == {"cpu": 50.0}
    assert store.concurrency_usage(["k"]) == {"k": 50}
    assert store.count_jobs() == {("default", JobState.ASSIGNED): 50}


def test_pending_members_of_an_older_rota_are_rewritten(
    store: RedisStore, raw: redis.Redis
) -> None:
    """A store written by an older rota has "pending" members rank..id without the
    placement fields: they are rewritten as they are read, and a cancelled one is dropped."""
    a, b = job("a", resources={"cpu": 2}), job("b")
    store.submit([a, b])
    key = store.key("pending")
    for m in raw.zrange(key, 0, -1):
        raw.zrem(key, m)
        raw.zadd(key, {m.split("\0")[0]: 0})  # the old form
    raw.hset(store.key("job", b.id), "state", "cancelled")  # cancelled meanwhile
    (p,) = store.pending_jobs(10)
    assert p.id == a.id and p.resources == {"cpu": 2.0}
    assert [m.split("\0")[0][20:] for m in raw.zrange(key, 0, -1)] == [a.id]
    assert "\0" in raw.zrange(key, 0, -1)[0]


def test_odd_values_survive_the_lua_roundtrip(store: RedisStore) -> None:
    spec = node()
    store.register_node(spec)
    weird = 'nul\x00 tab\t quote" backslash\\ emoji\U0001f600 \u2028 ]]--'
    j = job(weird, {"k": [weird, 1e308, -0.0, 2**63 - 1]}, timeout=0.1, eta=None)
    store.submit([j])
    store.assign(leader(store), [Assignment(j.id, spec.id)])
    (r,) = store.start_jobs(spec.id, 1, TTL)
    result = encode_arguments([weird], {})
    store.complete([Outcome(r.id, r.token, OutcomeKind.SUCCEEDED, result=result)])
    rec = store.get_job(j.id)
    assert rec is not None and rec.payload == j.payload and rec.result == result
    assert rec.arguments() == ([weird, {"k": [weird, 1e308, -0.0, 2**63 - 1]}], {})
    assert rec.timeout == 0.1


def test_a_node_that_leaves_with_jobs_has_them_taken_back_by_reap(store: RedisStore) -> None:
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    running, waiting = job(retries=1, resources={"cpu": 0.1}), job(resources={"cpu": 0.2})
    store.submit([running, waiting])
    store.assign(lease, [Assignment(running.id, spec.id)])
    store.start_jobs(spec.id, 1, TTL)
    store.assign(lease, [Assignment(waiting.id, spec.id)])
    (n,) = store.list_nodes()
    assert (n.assigned, n.running) == (1, 1) and n.used == {"cpu": pytest.approx(0.3)}
    store.set_node_state(spec.id, NodeState.STOPPED)
    report = store.reap(lease, 60)
    assert (report.dead_nodes, report.requeued, report.retried) == ((), 1, 1)
    (n,) = store.list_nodes()
    assert (n.state, n.in_flight, n.used) == (NodeState.STOPPED, 0, {})
    assert store.reap(lease, 60).requeued == 0  # done once


def test_resource_usage_returns_to_zero_without_float_drift(store: RedisStore) -> None:
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    jobs = [job(resources={"cpu": 0.1, "mem": 1e9 / 3}) for _ in range(30)]
    store.submit(jobs)
    store.assign(lease, [Assignment(j.id, spec.id) for j in jobs])
    started = store.start_jobs(spec.id, 30, TTL)
    (n,) = store.list_nodes()
    assert abs(n.used["cpu"] - 3.0) < 1e-9
    store.complete([Outcome(r.id, r.token, OutcomeKind.SUCCEEDED) for r in started[:29]])
    (n,) = store.list_nodes()
    assert abs(n.used["cpu"] - 0.1) < 1e-9
    store.complete([Outcome(started[29].id, started[29].token, OutcomeKind.FATAL)])
    (n,) = store.list_nodes()
    assert n.used == {} and n.in_flight == 0


# ---- wake-ups ----------------------------------------------------------------------------
def _latency(wait: Callable[[], object], act: Callable[[], object]) -> float:
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
            _latency(lambda: sched.wait_for_pending(5), lambda j=j: store.submit([j]))
        )
        assign_lat.append(
            _latency(
                lambda: store.wait_for_assignments(spec.id, 5),
                lambda j=j: sched.assign(lease, [Assignment(j.id, spec.id)]),
            )
        )
        (r,) = store.start_jobs(spec.id, 1, TTL)
        ok = Outcome(r.id, r.token, OutcomeKind.SUCCEEDED, result="1")
        result_lat.append(
            _latency(
                lambda r=r: sched.wait_for_results([r.id], 5), lambda ok=ok: store.complete([ok])
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

    elapsed = _latency(wait, lambda: producer.submit([j]))
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


# ---- result TTL ------------------------------------------------------------------------------
def test_final_jobs_get_the_result_ttl(
    connect: Callable[..., RedisStore], url: str, raw: redis.Redis
) -> None:
    store = connect(url + "&result_ttl=100")
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    ok, dead, live = job(), job(), job()
    store.submit([ok, dead, live])
    store.assign(lease, [Assignment(j.id, spec.id) for j in (ok, dead)])
    r1, r2 = sorted(store.start_jobs(spec.id, 2, TTL), key=lambda r: r.id != ok.id)
    store.complete(
        [
            Outcome(r1.id, r1.token, OutcomeKind.SUCCEEDED, result="1"),
            Outcome(r2.id, r2.token, OutcomeKind.FATAL, error="boom"),
        ]
    )
    assert 90 < raw.ttl(store.key("job", ok.id)) <= 100
    assert 90 < raw.ttl(store.key("job", dead.id)) <= 100
    assert raw.ttl(store.key("job", live.id)) == -1  # not final: kept
    assert store.retry_dead([dead.id]) == 1
    assert raw.ttl(store.key("job", dead.id)) == -1  # back in play: TTL removed


def test_expired_results_leave_no_index_entries(
    connect: Callable[..., RedisStore], url: str
) -> None:
    store = connect(url + "&result_ttl=1")
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    j, other = job(), job()
    store.submit([j, other])
    store.assign(lease, [Assignment(j.id, spec.id)])
    (r,) = store.start_jobs(spec.id, 1, TTL)
    store.complete([Outcome(r.id, r.token, OutcomeKind.SUCCEEDED, result="1")])
    assert store.count_jobs()[("default", JobState.SUCCEEDED)] == 1
    time.sleep(2.1)  # Redis has expired the hash by now
    assert store.get_job(j.id) is None
    assert [x.id for x in store.list_jobs()] == [other.id]
    store.reap(lease, 60)  # the leader's housekeeping removes the index entries
    assert store.count_jobs() == {("default", JobState.PENDING): 1}
    assert store.prune(0) == 0


# ---- connection loss -------------------------------------------------------------------------
def _kill_clients(r: redis.Redis, name: str) -> int:
    killed = 0
    for c in r.client_list():
        if c.get("name") == name:
            killed += int(r.execute_command("CLIENT", "KILL", "ID", c["id"]))
    return killed


def test_reconnects_after_client_kill(
    store: RedisStore,
    connect: Callable[..., RedisStore],
    raw: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rota.store.redis")
    a = job()
    store.submit([a])
    name = f"rota:{store.prefix}:{os.getpid()}"
    assert _kill_clients(raw, name) >= 1
    b = job()
    store.submit([b])  # an idle killed connection is replaced as it is taken from the pool
    assert {r.id for r in store.get_jobs([a.id, b.id])} == {a.id, b.id}
    assert store.count_jobs() == {("default", JobState.PENDING): 2}

    # a blocked wait survives its connection being killed and still wakes up
    producer = connect()
    store.wait_for_pending(0)  # take the wake-up the submits left
    woke: list[float] = []

    def waiter() -> None:
        store.wait_for_pending(5)
        woke.append(time.monotonic())

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.2)
    _kill_clients(raw, name)  # kills the waiter's and the producer's connections too
    time.sleep(0.3)
    start = time.monotonic()
    producer.submit([job()])
    t.join(5)
    assert woke and woke[0] - start < 1.0
    # the blocked command saw its connection die: one warning, then one line when back
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert len([m for lvl, m in messages if "lost the connection" in m]) == 1
    assert len([m for lvl, m in messages if "reconnected" in m]) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def private_redis() -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Start (and restart) a throw-away redis-server on a free loopback port."""
    binary = shutil.which("redis-server")
    if binary is None:
        skip_or_fail("redis-server is not installed")
    port = _free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        args = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        proc = subprocess.Popen(
            [*args, "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        procs.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return proc
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    start.port = port  # type: ignore[attr-defined]
    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_store_survives_a_redis_restart(
    private_redis: Callable[[], subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rota.store.redis")
    proc = private_redis()
    port = private_redis.port  # type: ignore[attr-defined]
    store = RedisStore(f"redis://127.0.0.1:{port}/0?prefix=restart")
    try:
        store.submit([job()])
        assert store.count_jobs() == {("default", JobState.PENDING): 1}
        failures: list[float] = []
        original = store._failed

        def counting(error: Exception) -> None:
            failures.append(time.monotonic())
            original(error)

        store._failed = counting  # type: ignore[method-assign]
        proc.kill()
        proc.wait(5)
        restarted: list[float] = []

        def restart() -> None:
            time.sleep(1.0)  # Redis is away for a second
            private_redis()
            restarted.append(time.monotonic())

        t = threading.Thread(target=restart)
        t.start()
        j = job()
        start = time.monotonic()
        assert store.submit([j]) == [j.id]  # blocks through the outage, then succeeds
        t.join(10)
        took = time.monotonic() - start
        assert restarted and 0.9 < took < 8
        # the data was not persisted; the library was loaded again ("Function not found") by itself
        assert store.count_jobs() == {("default", JobState.PENDING): 1}
        assert store.get_job(j.id) is not None
        assert 1 <= len(failures) <= 10  # backoff, not a busy loop
        messages = [r.getMessage() for r in caplog.records if r.name == "rota.store.redis"]
        assert len([m for m in messages if "lost the connection" in m]) == 1
        assert len([m for m in messages if "reconnected" in m]) == 1
    finally:
        store.close()


def test_async_claims_survive_a_redis_restart(
    private_redis: Callable[[], subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    """The worker's asyncio client reconnects with backoff and loads the scripts again
    ("Function not found") after a restart, like the store's own connection."""
    caplog.set_level(logging.INFO, logger="rota.store.redis")
    proc = private_redis()
    port = private_redis.port  # type: ignore[attr-defined]
    store = RedisStore(f"redis://127.0.0.1:{port}/0?prefix=arestart")
    claims = store.async_claims()

    def place(n: int) -> tuple[NodeSpec, list[NewJob]]:
        spec = node()
        store.register_node(spec)
        jobs = [job(i) for i in range(n)]
        store.submit(jobs)
        store.assign(leader(store), [Assignment(j.id, spec.id) for j in jobs])
        return spec, jobs

    async def run() -> None:
        spec, jobs = place(3)
        started = await claims.start_jobs(spec.id, 2, TTL)
        assert [r.id for r in started] == [j.id for j in jobs[:2]]
        proc.kill()
        proc.wait(5)

        def restart() -> None:
            time.sleep(0.8)
            private_redis()

        t = threading.Thread(target=restart)
        t.start()
        start = time.monotonic()
        # blocks through the outage; the new Redis knows neither the node nor the scripts
        assert await claims.wait_and_start(spec.id, 2, TTL, 0.1) == []
        assert 0.7 < time.monotonic() - start < 8
        t.join(10)
        spec, jobs = place(1)
        accepted, got = await claims.complete_and_start([], spec.id, 5, TTL)
        assert accepted == [] and [r.id for r in got] == [jobs[0].id]
        await claims.close()

    try:
        asyncio.run(run())
        # one line each way per client: the asyncio one, and the store's own pool when the
        # test uses it after the restart
        messages = [r.getMessage() for r in caplog.records if r.name == "rota.store.redis"]
        assert 1 <= len([m for m in messages if "lost the connection" in m]) <= 2
        assert 1 <= len([m for m in messages if "reconnected" in m]) <= 2
    finally:
        store.close()


def test_unreachable_redis_raises_store_error_after_backoff() -> None:
    port = _free_port()  # nothing listens there
    store = RedisStore(f"redis://127.0.0.1:{port}/0?prefix=nowhere", retries=3)
    start = time.monotonic()
    with pytest.raises(StoreError, match="unreachable"):
        store.count_jobs()
    assert 0.5 < time.monotonic() - start < 5  # 0.1 + 0.2 + 0.4 s of backoff
    store.close()


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


def state_of_job(store: RedisStore, job_id: str) -> JobState:
    rec = store.get_job(job_id)
    assert rec is not None
    return rec.state
