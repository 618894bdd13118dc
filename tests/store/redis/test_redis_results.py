"""Result TTL on Redis: final jobs expire, and their index entries go with them."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from rota.core.model import Assignment
from rota.core.outcomes import Outcome, OutcomeKind
from rota.core.states import JobState

pytest.importorskip("redis")

import redis

from rota.store.redis.store import RedisStore
from tests.store.redis.helpers import TTL, job, leader, node


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
