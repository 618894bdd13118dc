"""Fencing: a worker frozen (SIGSTOP) past the failure timeout is declared dead, its job
is retried elsewhere and succeeds; when it thaws (SIGCONT), its late completion is refused
and it comes back as a new node."""

from __future__ import annotations

import signal

import pytest

from rota import Rota
from rota.core.model import NodeState
from rota.core.states import JobState
from tests.acceptance.apps.basic import read_lines
from tests.acceptance.conftest import FAILURE_TIMEOUT, Fleet

pytestmark = pytest.mark.acceptance

RUN_SECONDS = 2.0


@pytest.mark.timeout(90)
def test_frozen_worker_is_fenced_out(fleet: Fleet, client: Rota) -> None:
    fleet.scheduler()
    fleet.worker("zombie", concurrency=1, labels="role=zombie")
    zombie_id = fleet.wait_nodes(1, names=["zombie"])["zombie"].id

    job = client.get_task("acc.record").submit("z", RUN_SECONDS)  # retries=3

    def zombie_runs_it() -> bool:
        rec = job.record()
        started = any(line[0] == "start" for line in read_lines(fleet.runs))
        return rec.state is JobState.RUNNING and rec.node_id == zombie_id and started

    fleet.wait_for("the job to run on the zombie", zombie_runs_it, timeout=20, interval=0.02)
    first_token = job.record().token
    fleet.kill("zombie", signal.SIGSTOP)
    stopped_at = fleet.store.now()
    fleet.worker("rescuer", concurrency=1)

    # The scheduler declares the zombie dead and the job runs again on the rescuer.
    rec = fleet.wait_final([job.id], timeout=FAILURE_TIMEOUT + RUN_SECONDS + 30)[job.id]
    assert rec.state is JobState.SUCCEEDED, rec
    result = rec.result_value()
    assert result["node"] == "rescuer"
    assert rec.attempts == 2
    assert rec.token > first_token
    assert rec.finished_at is not None and rec.finished_at - stopped_at >= FAILURE_TIMEOUT
    assert fleet.store.list_nodes([NodeState.DEAD])[0].id == zombie_id

    # The zombie's own run finished long ago (its pool process was not stopped) and its
    # reply waits in the frozen worker's socket.
    runs = read_lines(fleet.runs)
    zombie_runs = [line for line in runs if line[0] == "end" and line[3] == "zombie"]
    assert len(zombie_runs) == 1
    fleet.kill("zombie", signal.SIGCONT)

    fleet.wait_for(
        "the zombie's completion to be refused", lambda: "refused" in fleet.log("zombie"), 15
    )
    again = fleet.wait_for(
        "the zombie to register again",
        lambda: [
            n
            for n in fleet.nodes([NodeState.LIVE])
            if n.spec.name == "zombie" and n.id != zombie_id
        ],
        timeout=15,
    )
    assert len(again) == 1
    assert again[0].spec.pid == fleet.procs["zombie"].pid
    log = fleet.log("zombie")
    assert f"job {job.id}: outcome succeeded refused" in log
    assert "was declared dead" in log

    # The refused completion changed nothing.
    after = job.record()
    assert (after.state, after.token, after.result, after.attempts) == (
        rec.state,
        rec.token,
        rec.result,
        rec.attempts,
    )
    # And the zombie, under its new identity, works again.
    back = client.get_task("acc.square").options(labels={"role": "zombie"}).submit(12)
    assert back.result(timeout=30)["node"] == "zombie"
    assert back.record().node_id == again[0].id
