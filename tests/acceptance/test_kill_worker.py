"""kill -9 a worker node in the middle of its jobs: nothing is lost, nothing is stuck, and
every job keeps the result of exactly one run."""

from __future__ import annotations

import signal
from collections import defaultdict

import pytest

from rota import Rota
from rota.core.model import NodeState
from rota.core.states import JobState
from tests.acceptance.apps.basic import read_lines
from tests.acceptance.conftest import Fleet
from tests.stores import STORE_KINDS

pytestmark = pytest.mark.acceptance

VICTIM = "w2"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", STORE_KINDS)
def test_sigkill_worker_mid_job(fleet: Fleet, client: Rota) -> None:
    fleet.scheduler()
    for name in ("w1", "w2", "w3"):
        fleet.worker(name, concurrency=4)
    fleet.wait_nodes(3, names=["w1", "w2", "w3"])
    victim_id = fleet.live_nodes()[VICTIM].id

    record = client.get_task("acc.record")  # retries=3
    keys = [f"k{i:03d}" for i in range(150)]
    # Jobs long enough that the ones seen running are still running at the kill a few
    # milliseconds later (with 0.3 s ones, one of two often ended in between).
    handles = record.submit_many([(key, 0.6) for key in keys])
    key_of = {h.id: key for h, key in zip(handles, keys, strict=True)}
    ids = list(key_of)

    # Let the fleet settle into its stride, then kill the victim while it runs jobs.
    def victim_busy() -> bool:
        done = sum(1 for r in fleet.jobs(ids) if r.state is JobState.SUCCEEDED)
        running = fleet.store.list_jobs(state=JobState.RUNNING, node_id=victim_id, limit=100)
        return done >= 30 and len(running) >= 3

    fleet.wait_for("the victim to be running jobs", victim_busy, timeout=30, interval=0.02)
    fleet.kill(VICTIM, signal.SIGKILL)

    records = fleet.wait_final(ids, timeout=60)
    bad = {
        key_of[i]: (r.state.value, r.error) for i, r in records.items() if r.state != "succeeded"
    }
    assert not bad, bad
    nodes = {n.id: n for n in fleet.nodes()}
    assert nodes[victim_id].state is NodeState.DEAD

    # Every run, as the task itself logged it: start and (if it was not cut short) end.
    starts: dict[str, list[tuple[str, str]]] = defaultdict(list)  # key -> [(nonce, node)]
    ended: set[str] = set()  # nonces
    for event, key, nonce, node, *_ in read_lines(fleet.runs):
        if event == "start":
            starts[key].append((nonce, node))
        else:
            ended.add(nonce)
    assert set(starts) == set(keys)

    cut_short = set()  # keys of jobs whose run on the victim never returned
    # Keys of jobs the store had in flight on the victim when it died: run again elsewhere.
    # (A run can return on the victim and still be in flight for the store, its report
    # lost with the process, so the task's own log undercounts these.)
    rerun = {key_of[i] for i, r in records.items() if r.attempts >= 2}
    for job_id, rec in records.items():
        key = key_of[job_id]
        result = rec.result_value()
        runs = starts[key]
        # The stored result is the one of exactly one run, one that did return.
        assert result["key"] == key
        assert [nonce for nonce, _ in runs].count(result["nonce"]) == 1, (key, runs, result)
        assert result["nonce"] in ended, (key, result)
        assert fleet.node_names()[rec.node_id or ""] == result["node"]
        # Each run was a counted attempt.
        assert rec.attempts >= len(runs), (key, rec.attempts, runs)
        if any(node == VICTIM and nonce not in ended for nonce, node in runs):
            cut_short.add(key)
            # ...re-run elsewhere, whose result is the one kept.
            assert result["node"] != VICTIM, (key, result)
            assert rec.attempts >= 2, (key, rec.attempts)
            assert any(node != VICTIM for _, node in runs)

    assert len(rerun) >= 2, "the victim was killed with no job in flight"
    assert cut_short <= rerun
    # Whatever the victim had finished and reported before it died stands.
    assert any(r.result_value()["node"] == VICTIM for r in records.values())
    survivors = {"w1", "w2", "w3"} - {VICTIM}
    assert {r.result_value()["node"] for r in records.values()} >= survivors
    log = fleet.log("scheduler")
    assert "nodes dead" in log and victim_id in log
