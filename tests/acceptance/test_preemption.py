"""Preemption with real processes, on every store: a preemptible sync job running in the
process pool is really stopped for a job 20 priority levels higher, goes back to pending
without spending an attempt, comes back and runs to success."""

from __future__ import annotations

import pytest

from rota import Rota
from rota.core.states import JobState
from tests.acceptance.apps.basic import read_lines
from tests.acceptance.conftest import Fleet
from tests.stores import STORE_KINDS

pytestmark = pytest.mark.acceptance

LOW_RUN = 4.0  # seconds the preemptible job sleeps (in a pool process)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_preempted_sync_job_is_stopped_and_comes_back(fleet: Fleet, client: Rota) -> None:
    record = client.get_task("acc.record")  # isolation="process", logs each start and end
    square = client.get_task("acc.square")
    fleet.scheduler()
    fleet.wait_leader()
    fleet.worker("w1", concurrency=1, prefetch=0, extra=["--cancel-grace", "0.5"])
    fleet.wait_nodes(1)
    low = record.options(priority=0, preemptible=True).submit("low", LOW_RUN)

    def starts() -> list[list[str]]:
        return [r for r in read_lines(fleet.runs) if r[0] == "start" and r[1] == "low"]

    fleet.wait_for("the preemptible job to start", lambda: len(starts()) >= 1, 60.0)
    high = square.options(priority=20).submit(7, 0)
    done = fleet.wait_final([high.id, low.id], 90.0)
    assert done[high.id].state is JobState.SUCCEEDED
    rec = done[low.id]
    assert rec.state is JobState.SUCCEEDED, (rec.state, rec.error)
    assert rec.attempts == 1 and rec.preemptions == 1  # the stopped run did not count
    assert rec.preempted_at is not None
    # the high-priority job started while the first run was being stopped, before the
    # second run
    high_at, low_at = done[high.id].started_at, rec.started_at
    assert high_at is not None and low_at is not None and high_at < low_at
    # the first run really stopped (it never logged its end); the second ran to its end
    runs = [r for r in read_lines(fleet.runs) if r[1] == "low"]
    first, second = (r[2] for r in runs if r[0] == "start")
    ended = [r[2] for r in runs if r[0] == "end"]
    assert ended == [second] and first != second
    assert rec.result_value()["nonce"] == second
    history = [(a.outcome, a.cut_short) for a in fleet.store.job_attempts(low.id)]
    assert history[0][1] == "preempted" and history[-1] == ("succeeded", None)
