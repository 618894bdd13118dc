"""Fencing tokens across a failover that lost writes (Redis without ``durable``): the primary
is killed right after it handed out tokens its replica never got, and the server that takes
over holds the data as it was before them (a private redis-server restarted on the same port
from an earlier snapshot: what a replica promoted with the last writes missing holds). The
jobs those tokens were for are assigned again: every new token is higher than the lost ones,
so the executions holding lost tokens have their completions refused, never accepted in the
name of the new assignment (docs/architecture.md, "Fencing tokens and failover")."""

from __future__ import annotations

from pathlib import Path

import pytest

from rota.core.model import Assignment
from rota.core.outcomes import Outcome, OutcomeKind
from rota.core.states import JobState
from rota.store import SCHEDULER_LEASE, open_store
from tests.ha.servers import RedisNode, free_ports, need_binaries, redis_client
from tests.store.contract.test_store_contract import job, node

pytestmark = [pytest.mark.timeout(60)]


def test_redis_tokens_a_failover_lost_are_never_accepted_again(tmp_path: Path) -> None:
    need_binaries("redis-server")
    (port,) = free_ports(1)
    server = RedisNode(port, tmp_path / "redis", [])
    server.start()
    try:
        url = f"redis://127.0.0.1:{port}/0?prefix=fence"
        scheduler, old_worker, new_worker = (open_store(url) for _ in range(3))
        try:
            a, b = node("a", slots=20), node("b", slots=20)
            old_worker.register_node(a)
            new_worker.register_node(b)
            lease = scheduler.acquire_lease(SCHEDULER_LEASE, "sched", 60)
            assert lease is not None
            jobs = [job() for _ in range(10)]
            scheduler.submit(jobs)
            # What the replica has: everything so far (its copy, taken now).
            redis_client(port).execute_command("SAVE")
            # Then the primary assigns the jobs to node a, which starts them: these writes
            # never reach the replica.
            assert scheduler.assign(lease, [Assignment(j.id, a.id) for j in jobs]) == 10
            lost = old_worker.start_jobs(a.id, 10, 60)
            assert len(lost) == 10
            server.kill()
            server.start()  # the "promoted replica": the snapshot, on the same address
            assert {r.state for r in scheduler.get_jobs([j.id for j in jobs])} == {JobState.PENDING}
            # The scheduler assigns them again, to node b, which starts them.
            assert scheduler.assign(lease, [Assignment(j.id, b.id) for j in jobs]) == 10
            fresh = new_worker.start_jobs(b.id, 10, 60)
            assert len(fresh) == 10
            assert min(r.token for r in fresh) > max(r.token for r in lost)
            # Node a still runs the jobs under the lost tokens: its outcomes are refused.
            stale = [Outcome(r.id, r.token, OutcomeKind.SUCCEEDED, result='"a"') for r in lost]
            assert old_worker.complete(stale) == [False] * 10
            current = [Outcome(r.id, r.token, OutcomeKind.SUCCEEDED, result='"b"') for r in fresh]
            assert new_worker.complete(current) == [True] * 10
            final = scheduler.get_jobs([j.id for j in jobs])
            assert {(r.state, r.result) for r in final} == {(JobState.SUCCEEDED, '"b"')}
        finally:
            for s in (scheduler, old_worker, new_worker):
                s.close()
    finally:
        server.kill()
