"""No starvation with real processes, on every store: a low-priority job with ``aging``
runs under a steady stream of high-priority work within the documented bound
(``rota.scheduler.aging``): it waits at most ``(P - p) * aging`` longer than a top-priority
job arriving that much later, and no top-priority job enqueued after that overtakes it."""

from __future__ import annotations

import os
import threading

import pytest

from rota import Rota
from rota.core.states import FINAL_STATES, JobState
from rota.scheduler.aging import aging_bound
from tests.acceptance.conftest import Fleet
from tests.stores import STORE_KINDS

pytestmark = pytest.mark.acceptance

HIGH, LOW, AGING = 10, 0, 0.3  # bound: (10 - 0) * 0.3 = 3 s
BACKLOG = 4  # high-priority jobs kept pending by the stream
RUN_MS = 100
# The wait of a top-priority job arriving at the bound: the backlog ahead of it, a few
# placement cycles and a worker's claim, on a loaded 2-core machine: generous on purpose.
# Without aging the low job waits as long as the stream lasts (STREAM_FOR).
SLACK = 10.0
CLOCK_SLACK = 0.5  # the leader's estimate of the store's clock, and a cycle
STREAM_FOR = 60.0


@pytest.mark.timeout(150)
@pytest.mark.parametrize("kind", STORE_KINDS)
def test_tmp(fleet: Fleet, client: Rota, kind: str) -> None:
    square = client.get_task("acc.square")
    fleet.scheduler()
    fleet.wait_leader()
    fleet.worker("w1", concurrency=1, prefetch=0)
    fleet.wait_nodes(1)
    high = square.options(priority=HIGH)
    stop = threading.Event()
    submitted: list[str] = []

    def stream() -> None:
        """Keep BACKLOG high-priority jobs pending until told to stop."""
        pending: list[str] = []
        while not stop.is_set():
            records = client.store.get_jobs(pending)
            pending = [r.id for r in records if r.state is JobState.PENDING]
            for _ in range(BACKLOG - len(pending)):
                job_id = high.submit(0, RUN_MS).id
                pending.append(job_id)
                submitted.append(job_id)
            stop.wait(0.05)

    feeder = threading.Thread(target=stream, daemon=True)
    feeder.start()
    try:
        fleet.wait_for("the stream to run", lambda: len(submitted) > 2 * BACKLOG, 30.0)
        low = square.options(
            priority=LOW, aging=None if os.environ.get("NOAGING") else AGING
        ).submit(1, 0)
        fleet.wait_for(
            "the low-priority job to finish",
            lambda: (r := fleet.store.get_job(low.id)) is not None and r.state in FINAL_STATES,
            STREAM_FOR,
            interval=0.1,
        )
    finally:
        stop.set()
        feeder.join(10.0)
    rec = fleet.store.get_job(low.id)
    assert rec is not None and rec.state is JobState.SUCCEEDED and rec.started_at is not None
    bound = aging_bound(LOW, HIGH, AGING)
    wait = rec.started_at - rec.created_at
    print("WAIT", kind, round(wait, 2), bound)
    assert wait <= bound + SLACK, (wait, bound)
    # The order itself: no high-priority job enqueued after created_at + bound started
    # before the low one (its effective priority was above theirs by then).
    overtook = [
        r
        for r in fleet.store.get_jobs(submitted)
        if r.started_at is not None
        and r.started_at < rec.started_at
        and r.created_at > rec.created_at + bound + CLOCK_SLACK
    ]
    assert overtook == [], [(r.created_at - rec.created_at, r.started_at) for r in overtook]
    # and it did compete: high-priority jobs enqueued after it ran before it
    assert any(
        r.started_at is not None and r.started_at < rec.started_at and r.created_at > rec.created_at
        for r in fleet.store.get_jobs(submitted)
    )
