"""Reserved slots on Redis, with real processes: once the leader has reserved free slots,
plain jobs submitted to the idle fleet are placed by the submit itself and run even while
the scheduler process is frozen (SIGSTOP); a job that needs placement waits for it.

A frozen scheduler still has its next snapshot queued in Redis behind its idle ``BLPOP``
(which drops the reservations when the wait times out), so the test also kills the frozen
process's connections, as a network partition would; it reconnects after SIGCONT."""

from __future__ import annotations

import signal
import time

import pytest

from rota import Rota
from rota.core.states import JobState
from rota.store.redis.store import RedisStore
from tests.acceptance.conftest import Fleet

pytestmark = pytest.mark.acceptance


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["redis"])
def test_plain_jobs_start_in_reserved_slots_while_the_scheduler_is_frozen(
    fleet: Fleet, client: Rota
) -> None:
    double = client.get_task("acc.async_double")
    fleet.scheduler()
    fleet.worker("w1", concurrency=4)
    fleet.wait_nodes(1)
    store = fleet.store
    assert isinstance(store, RedisStore)
    reserved = store.key("reserved")
    pid = fleet.procs["scheduler"].pid
    for _ in range(10):  # freeze it with its reservations in place
        fleet.wait_for("slots to be reserved", lambda: store.redis.hget(reserved, "default"), 30)
        fleet.kill("scheduler", signal.SIGSTOP)
        for c in store.redis.client_list():
            if str(c.get("name", "")).endswith(f":{pid}"):
                store.redis.client_kill_filter(_id=c["id"])
        if store.redis.hget(reserved, "default"):
            break
        fleet.kill("scheduler", signal.SIGCONT)  # its wait ended first: again
    else:
        pytest.fail("could not freeze the scheduler with slots reserved")
    try:
        plain = [double.submit(x) for x in range(3)]
        done = fleet.wait_final([h.id for h in plain], 20)
        assert [done[h.id].state for h in plain] == [JobState.SUCCEEDED] * 3
        assert sorted(h.result(5)["value"] for h in plain) == [0, 2, 4]
        # a job with needs goes through placement: it waits for the frozen scheduler
        placed = double.options(affinity={"zone": "a"}).submit(10)
        time.sleep(1.0)
        assert placed.status() is JobState.PENDING
    finally:
        fleet.kill("scheduler", signal.SIGCONT)
    assert placed.result(20)["value"] == 20
