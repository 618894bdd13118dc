"""Failed attempts, retries and dead letters, on a real worker: exceptions, ``rota.Retry``,
timeouts (sync and async) and a task that kills its own process."""

from __future__ import annotations

import itertools

import pytest

from rota import Rota
from rota.core.model import NodeState
from rota.core.states import JobState
from tests.acceptance.apps.basic import read_lines
from tests.acceptance.conftest import Fleet, child_pids

pytestmark = pytest.mark.acceptance


@pytest.mark.timeout(90)
def test_retries_timeouts_crashes_and_dead_letters(fleet: Fleet, client: Rota) -> None:
    fleet.scheduler()
    fleet.worker("solo", concurrency=4)
    node_id = fleet.wait_nodes(1)["solo"].id
    task = client.get_task

    doomed = task("acc.always_fails").options(retries=2).submit("item 7 is malformed")
    later = task("acc.retry_then_ok").options(retries=3).submit("later", 2, 0.4)
    never = task("acc.retry_then_ok").options(retries=1).submit("never", 10, 0.1)
    slow_sync = task("acc.sleepy").options(timeout=0.5, retries=1, backoff=0.1).submit(30)
    slow_async = task("acc.async_sleepy").options(timeout=0.5).submit(30)
    crash = task("acc.crash").options(retries=1, backoff=0.1).submit(1)
    ids = [j.id for j in (doomed, later, never, slow_sync, slow_async, crash)]
    records = fleet.wait_final(ids, timeout=45)

    # Always failing, retries=2: dead after 3 attempts, with the error and traceback kept.
    rec = records[doomed.id]
    assert (rec.state, rec.attempts, rec.max_attempts) == (JobState.DEAD, 3, 3)
    assert rec.error == "ValueError: item 7 is malformed"
    assert rec.traceback is not None
    assert "always_fails" in rec.traceback and "raise ValueError(message)" in rec.traceback

    # Retry(delay=0.4) twice, then success: the task's delay is used, not its backoff (5 s).
    rec = records[later.id]
    assert (rec.state, rec.attempts) == (JobState.SUCCEEDED, 3), rec
    assert rec.result_value() == 3
    stamps = [float(t) for _, t in read_lines(fleet.runs, "retry-later.log")]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(gaps) == 2 and all(0.35 <= g < 2.5 for g in gaps), gaps

    # Retry asked for more times than there are attempts: dead, and the error says so.
    rec = records[never.id]
    assert (rec.state, rec.attempts) == (JobState.DEAD, 2), rec
    assert rec.error is not None and rec.error.startswith("Retry: run 2: not yet"), rec.error

    # Over its timeout: the pool process is killed and the attempt counts as failed.
    rec = records[slow_sync.id]
    assert (rec.state, rec.attempts) == (JobState.DEAD, 2), rec
    assert rec.error == "timed out after 0.5 s"
    # ...and replaced: the pool is back to its 4 processes, none of them still asleep.
    fleet.wait_for(
        "the pool to be whole", lambda: len(child_pids(fleet.procs["solo"].pid)) == 4, 10
    )
    rec = records[slow_async.id]
    assert (rec.state, rec.attempts) == (JobState.DEAD, 1), rec
    assert rec.error == "timed out after 0.5 s"

    # os._exit(1) in a task takes down its pool process, not the worker.
    rec = records[crash.id]
    assert (rec.state, rec.attempts) == (JobState.DEAD, 2), rec
    assert rec.error == "worker process died (exit code 1)"
    assert fleet.procs["solo"].alive()
    fine = task("acc.square").submit_many([(x,) for x in range(40)])
    done = fleet.wait_final([h.id for h in fine], timeout=30)
    assert [done[h.id].result_value()["value"] for h in fine] == [x * x for x in range(40)]
    assert {r.node_id for r in done.values()} == {node_id}  # the same node, never restarted
    assert [n.id for n in fleet.nodes([NodeState.LIVE])] == [node_id]
    assert fleet.procs["solo"].alive()
    assert "died (exit code 1)" in fleet.log("solo")
