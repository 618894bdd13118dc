"""Preemption carried out by a live scheduler leader (in-process, real SQLite store): a job
that fits only if lower-priority preemptible work yields gets the room; the victim goes
back to pending without counting an attempt and runs again later."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from rota import Rota
from rota.core.model import NodeSpec
from rota.core.outcomes import CutShort, Outcome, OutcomeKind
from rota.core.states import JobState
from rota.scheduler import STATS_NAME
from rota.scheduler.config import SchedulerConfig
from rota.scheduler.leader import Scheduler

TTL = 30.0


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_high_priority_job_preempts_a_preemptible_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'preempt.db'}"
    app = Rota(url)

    @app.task(name="t")
    def t() -> None: ...

    store = app.store
    spec = NodeSpec(id="n1", name="n1", slots=1, prefetch=0)
    store.register_node(spec)
    sched = Scheduler(url, SchedulerConfig(stats_every=0.05, idle_wait=0.02))
    runner = threading.Thread(target=sched.run, daemon=True)
    runner.start()
    try:
        low = t.options(priority=0, preemptible=True).submit()
        wait_until(lambda: store.get_job(low.id).state is JobState.ASSIGNED, "low placed")  # type: ignore[union-attr]
        (rec,) = store.start_jobs(spec.id, 1, TTL)  # the node starts it
        mid = t.options(priority=5).submit()  # not 10 levels above: may not preempt
        high = t.options(priority=20).submit()
        # the leader flags the victim; its node sees the cancel and stops it
        wait_until(
            lambda: store.heartbeat(spec.id, [(rec.id, rec.token)], TTL).cancel == (low.id,),
            "the victim flagged",
        )
        out = Outcome(rec.id, rec.token, OutcomeKind.CANCELLED, cut_short=CutShort.CANCELLED)
        assert store.complete([out]) == [True]
        wait_until(lambda: store.get_job(high.id).state is JobState.ASSIGNED, "high placed")  # type: ignore[union-attr]
        victim = store.get_job(low.id)
        assert victim is not None and victim.state is JobState.PENDING
        assert victim.attempts == 0 and victim.preemptions == 1
        assert victim.error == f"preempted for job {high.id} (priority 20) on n1"
        assert store.get_job(mid.id).state is JobState.PENDING  # type: ignore[union-attr]
        wait_until(
            lambda: ((store.get_stats(STATS_NAME) or {}).get("preemptions") or 0) >= 1,
            "the preemption counted",
        )
        stats = store.get_stats(STATS_NAME) or {}
        assert stats["preemptions"] == 1 and stats["allocation"]["preemption"] is True
    finally:
        sched.stop.set()
        runner.join(10)
    app.close()
