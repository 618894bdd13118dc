"""The fencing-token rule across a failover, on one server: a Redis primary promoted after a
failover may lack the last writes of the old one, counters included. Rolling the store's
token counters back by hand is what such a primary looks like; tokens handed out afterwards
must still be higher than every token handed out before (docs/architecture.md, "Fencing
tokens and failover"). SQLite and PostgreSQL keep tokens in the rows they fence (a
transaction), so only Redis stores run these."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest

from rota.core.model import Assignment
from rota.core.outcomes import Outcome, OutcomeKind
from rota.core.states import JobState
from rota.store import SCHEDULER_LEASE, Store
from rota.store.redis.store import RedisStore
from tests.store.contract.test_store_contract import TTL, job, leader, node, run_on


def _redis(store: Store) -> RedisStore:
    if not isinstance(store, RedisStore):
        pytest.skip("only Redis keeps fencing tokens in counters a failover can roll back")
    return store


def _roll_back(store: RedisStore, counter: int = 0) -> None:
    """What a replica promoted without the last writes holds: older counters."""
    store._cmd("SET", store.key("token"), counter)
    store._cmd("HSET", store.key("lease", SCHEDULER_LEASE), "holder", "", "token", 0)
    store._cmd("HSET", store.key("lease", SCHEDULER_LEASE), "expires_at", "0")


def test_tokens_stay_above_those_a_rolled_back_counter_forgot(
    store: Store, connect: Callable[[], Store]
) -> None:
    rs = _redis(store)
    spec = node("w")
    rs.register_node(spec)
    lease = leader(rs, "sched-a")
    r1, r2 = run_on(rs, spec, [job(), job()], lease)
    assert rs.release_jobs(spec.id, [(r2.id, r2.token)]) == 1  # r2 pending again
    _roll_back(rs)
    other = connect()  # a process that never saw those tokens: only the store's rule holds
    b = other.acquire_lease(SCHEDULER_LEASE, "sched-b", TTL)
    assert b is not None and b.token > lease.token
    assert other.assign(b, [Assignment(r2.id, spec.id)]) == 1
    (again,) = other.start_jobs(spec.id, 1, TTL)
    assert again.id == r2.id and again.token > max(r1.token, r2.token)
    # The execution of the earlier assignment is refused; the current one is accepted.
    late = Outcome(r2.id, r2.token, OutcomeKind.SUCCEEDED, result='"stale"')
    assert other.complete([late]) == [False]
    now = Outcome(r2.id, again.token, OutcomeKind.SUCCEEDED, result='"current"')
    assert other.complete([now]) == [True]
    assert other.complete([Outcome(r1.id, r1.token, OutcomeKind.SUCCEEDED)]) == [True]
    rec = other.get_job(r2.id)
    assert rec is not None and rec.state is JobState.SUCCEEDED and rec.result == '"current"'


def test_a_client_lifts_the_counters_to_the_tokens_it_was_handed(
    store: Store, connect: Callable[[], Store], caplog: pytest.LogCaptureFixture
) -> None:
    """A new primary whose clock is behind the old one's (the clock floor is not enough):
    the first client that reconnects and was handed higher tokens lifts the counters."""
    rs = _redis(store)
    spec = node("w")
    rs.register_node(spec)
    ahead = (int(time.time()) + 10 * 24 * 3600) * 1_000_000  # a clock 10 days ahead
    rs._cmd("SET", rs.key("token"), ahead)
    lease = leader(rs, "sched-a")
    (r1,) = run_on(rs, spec, [job()], lease)
    assert r1.token > ahead
    _roll_back(rs)
    # The client's script connection is cut (as by the failover); it reconnects on use.
    conn_id = rs._call(lambda: rs._fcall(("CLIENT", "ID")))
    rs._cmd("CLIENT", "KILL", "ID", conn_id)
    with caplog.at_level(logging.ERROR, logger="rota.store.redis"):
        assert rs.get_lease(SCHEDULER_LEASE) is None  # any call: the floor goes first
    assert any("fencing tokens went backwards" in r.getMessage() for r in caplog.records)
    other = connect()
    b = other.acquire_lease(SCHEDULER_LEASE, "sched-b", TTL)
    assert b is not None and b.token > lease.token
    j = job()
    other.submit([j])
    assert other.assign(b, [Assignment(j.id, spec.id)]) == 1
    (r2,) = other.start_jobs(spec.id, 1, TTL)
    assert r2.token > r1.token
