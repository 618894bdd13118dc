"""kill -9 the scheduler leader with a standby running: the standby takes the lease (a
higher fencing token) and placement resumes; with store leases and with ZooKeeper (the
standby is elected when the dead leader's session expires; its token is its znode's
czxid)."""

from __future__ import annotations

import signal

import pytest

from rota import Rota
from rota.core.states import JobState
from rota.store import SCHEDULER_LEASE
from tests.acceptance.conftest import LEADER_LEASE_TTL, Fleet

pytestmark = pytest.mark.acceptance


@pytest.mark.timeout(90)
@pytest.mark.parametrize("coordinator", ["store", "zookeeper"])
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_standby_takes_over_when_leader_is_killed(
    fleet: Fleet, client: Rota, coordinator: str
) -> None:
    fleet.scheduler("sched-a")
    assert fleet.wait_leader()[0] == "sched-a"  # so that "a" leads and "b" stands by
    fleet.scheduler("sched-b")
    fleet.worker("w1", concurrency=4)
    fleet.worker("w2", concurrency=4)
    fleet.wait_nodes(2)

    square = client.get_task("acc.square")
    first = [h.id for h in square.submit_many([(x, 100) for x in range(60)])]
    fleet.wait_for(
        "some of the first batch to finish",
        lambda: sum(r.state is JobState.SUCCEEDED for r in fleet.jobs(first)) >= 10,
        timeout=30,
    )
    leader, token = fleet.wait_leader()
    assert leader == "sched-a"
    fleet.kill("sched-a", signal.SIGKILL)
    killed_at = fleet.store.now()
    old = fleet.store.get_lease(SCHEDULER_LEASE)  # its last renewal: final now
    assert old is not None and old.token == token
    # Submitted with no leader: only the standby can place these.
    second = [h.id for h in square.submit_many([(x, 20) for x in range(100, 160)])]

    def new_leader() -> tuple[str, int] | None:
        found = fleet.leader()
        return found if found is not None and found[0] != "sched-a" else None

    leader, new_token = fleet.wait_for("the standby to lead", new_leader, LEADER_LEASE_TTL + 15)
    assert leader == "sched-b"
    assert new_token > token
    lease = fleet.store.get_lease(SCHEDULER_LEASE)
    assert lease is not None and lease.token == new_token

    records = fleet.wait_final(first + second, timeout=60)
    assert all(r.state is JobState.SUCCEEDED for r in records.values())
    for x, job_id in zip(range(100, 160), second, strict=True):
        rec = records[job_id]
        assert rec.result_value()["value"] == x * x
        # Placed by the new leader, or claimed by a worker under the dead leader's claim
        # grant while its lease had not yet expired; never in between.
        assert rec.started_at is not None and lease.acquired_at > killed_at
        assert rec.started_at >= lease.acquired_at or rec.started_at < old.expires_at, rec
    assert fleet.wait_exit("sched-a", 5) == -signal.SIGKILL
    assert f"became leader (token {new_token}" in fleet.log("sched-b")
