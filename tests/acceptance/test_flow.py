"""Flow features end to end, on every store, with real ``rota`` processes: periodic ticks
exactly once across a leader kill, workflows resolved in the store, cancellation in each
state, keyed concurrency under load and a fleet-wide rate limit."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from rota import JobFailed, Rota, chain, group
from rota.core.periodic import tick_job_id
from rota.core.states import JobState
from rota.store import SCHEDULER_LEASE
from tests.acceptance.apps import flow
from tests.acceptance.apps.basic import read_lines
from tests.acceptance.conftest import LEADER_LEASE_TTL, Fleet
from tests.stores import STORE_KINDS

pytestmark = [pytest.mark.acceptance, pytest.mark.parametrize("kind", STORE_KINDS)]


@pytest.fixture
def app(url: str) -> Iterator[Rota]:
    client = flow.build(url)
    yield client
    client.close()


def start(
    fleet: Fleet, *, workers: int = 1, concurrency: int = 4, extra: tuple[str, ...] = ()
) -> None:
    fleet.scheduler("sched")
    for n in range(workers):
        fleet.worker(f"w{n}", concurrency=concurrency, app=flow.APP, extra=extra)
    fleet.wait_nodes(workers)


# ---- workflows -------------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_chain_group_dag_and_upstream_failure(fleet: Fleet, app: Rota) -> None:
    start(fleet)
    add, total = app.get_task("flow.add"), app.get_task("flow.total")
    fail, record = app.get_task("flow.fail"), app.get_task("flow.record")

    assert chain(add.s(1, 2), add.s(10), add.s(100)).submit().result(timeout=30) == 113
    chord = chain(group(add.s(1, 1), add.s(2, 2), add.s(3, 3)), total.s())
    assert chord.submit().result(timeout=30) == 12
    assert group(add.s(1, 0), add.s(2, 0)).submit().result(timeout=30) == [1, 2]

    a, b = add.submit(1, 1), add.submit(2, 2)
    joined = record.options(depends_on=[a, b]).submit("joined")
    bad = fail.submit("boom")
    orphan = record.options(depends_on=[bad, a]).submit("never")
    grandchild = record.options(depends_on=[orphan]).submit("never either")
    broken = chain(add.s(1, 1), fail.s(), add.s(1)).submit()
    with pytest.raises(JobFailed):
        broken.result(timeout=30)

    ids = [joined.id, orphan.id, grandchild.id] + [j.id for j in broken.jobs]
    records = fleet.wait_final(ids, timeout=30)
    assert records[joined.id].state is JobState.SUCCEEDED
    assert records[orphan.id].state is JobState.UPSTREAM_FAILED
    assert bad.id in (records[orphan.id].error or "")
    assert records[grandchild.id].state is JobState.UPSTREAM_FAILED
    assert [records[j.id].state for j in broken.jobs] == [
        JobState.SUCCEEDED,
        JobState.DEAD,
        JobState.UPSTREAM_FAILED,
    ]
    tags = [line[0] for line in read_lines(fleet.runs, "record.log")]
    assert tags == ["joined"]  # upstream_failed jobs never ran


# ---- cancellation ----------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_cancel_in_every_state(fleet: Fleet, app: Rota) -> None:
    start(fleet, extra=("--cancel-grace", "1.0"))
    record, polite = app.get_task("flow.record"), app.get_task("flow.polite")
    stubborn, async_wait = app.get_task("flow.stubborn"), app.get_task("flow.async_wait")

    scheduled = record.options(delay=60).submit("scheduled")
    nowhere = record.options(queue="nobody-listens").submit("pending")
    running = [polite.submit(30), stubborn.submit(30), async_wait.submit(30)]
    waiting_on = async_wait.submit(30)
    waiting = record.options(depends_on=[waiting_on]).submit("waiting")
    fleet.wait_for(
        "the sync and async jobs to run",
        lambda: all(h.status() is JobState.RUNNING for h in [*running, waiting_on]),
        timeout=30,
    )
    assert scheduled.status() is JobState.SCHEDULED and nowhere.status() is JobState.PENDING
    assert waiting.status() is JobState.WAITING

    for h in (scheduled, nowhere, waiting):
        assert h.cancel() is JobState.CANCELLED  # not started: cancelled at once
    begun = time.monotonic()
    for h in running:
        h.cancel()
    records = fleet.wait_final([h.id for h in running], timeout=20)
    assert all(r.state is JobState.CANCELLED for r in records.values())
    assert time.monotonic() - begun < 10  # the stubborn one was killed after its grace
    waiting_on.cancel()
    fleet.wait_final([waiting_on.id], timeout=10)

    lines = [" ".join(line) for line in read_lines(fleet.runs, "cancel.log")]
    assert "polite cleaned up flag=True" in lines  # the cooperative signal reached it
    assert "stubborn ignored the cancel" in lines  # ... and was overruled by a hard stop
    assert "async cancelled" in lines
    assert read_lines(fleet.runs, "record.log") == []  # none of the cancelled ones ran
    time.sleep(0.5)
    for h in (scheduled, nowhere, waiting):
        assert h.status() is JobState.CANCELLED

    slow = chain(app.get_task("flow.async_wait").s(30), record.s()).submit()
    fleet.wait_for(
        "the workflow's first step to run",
        lambda: slow.jobs[0].status() is JobState.RUNNING,
        timeout=20,
    )
    assert slow.cancel() == 2
    final = fleet.wait_final([j.id for j in slow.jobs], timeout=15)
    assert {r.state for r in final.values()} == {JobState.CANCELLED}


# ---- flow control ----------------------------------------------------------------------------
def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


@pytest.mark.timeout(90)
def test_concurrency_limit_holds_under_load_and_keys_take_turns(fleet: Fleet, app: Rota) -> None:
    start(fleet, workers=2, concurrency=6)
    keyed = app.get_task("flow.keyed")
    users, per_user = 4, 8
    handles = keyed.submit_many([(user, 0.15) for user in range(users) for _ in range(per_user)])
    records = fleet.wait_final([h.id for h in handles], timeout=60)
    assert all(r.state is JobState.SUCCEEDED for r in records.values())

    runs: dict[int, list[tuple[float, float]]] = {}
    for user, begin, end in read_lines(fleet.runs, "keyed.log"):
        runs.setdefault(int(user), []).append((float(begin), float(end)))
    assert sorted(len(v) for v in runs.values()) == [per_user] * users
    overlaps = {user: max_overlap(v) for user, v in runs.items()}
    assert max(overlaps.values()) <= flow.CONCURRENCY_LIMIT, overlaps  # never exceeded
    assert max(overlaps.values()) == flow.CONCURRENCY_LIMIT, overlaps  # and actually used
    # Fair turns: user 3 (submitted last) started before user 0 (submitted first) was done.
    first_start = {user: min(s for s, _ in v) for user, v in runs.items()}
    assert first_start[users - 1] < max(s for s, _ in runs[0])


@pytest.mark.timeout(90)
def test_rate_limit_holds_fleet_wide(fleet: Fleet, app: Rota) -> None:
    start(fleet, workers=2, concurrency=8)
    limited = app.get_task("flow.limited")
    jobs = 100
    handles = limited.submit_many([(n,) for n in range(jobs)])
    fleet.wait_final([h.id for h in handles], timeout=60)
    starts = sorted(float(t) for _, t in read_lines(fleet.runs, "limited.log"))
    assert len(starts) == jobs
    count, period = 40, 2.0  # flow.RATE
    j = 0
    worst = 0
    for i, begin in enumerate(starts):  # every window of one period
        while j < len(starts) and starts[j] < begin + period:
            j += 1
        worst = max(worst, j - i)
    assert worst <= count * 1.10, f"{worst} jobs started within {period} s (limit {count})"
    span = starts[-1] - starts[0]
    expected = (jobs - count * 0.1) / (count / period)  # after the first small burst
    assert expected * 0.8 <= span <= expected * 1.6, (span, expected)


# ---- periodic jobs across a leader kill --------------------------------------------------------
def tick_runs(fleet: Fleet, name: str, around: tuple[float, float]) -> dict[float, JobState]:
    """Ticks of schedule ``name`` that have a job, from the deterministic job ids."""
    candidates = {
        tick_job_id(name, float(t)): float(t) for t in range(int(around[0]) - 5, int(around[1]) + 5)
    }
    records = fleet.store.list_jobs(task=name, limit=10_000)
    unknown = [r.id for r in records if r.id not in candidates]
    assert not unknown, f"jobs of {name} that belong to no tick: {unknown}"
    return {candidates[r.id]: r.state for r in records}


@pytest.mark.timeout(120)
def test_periodic_ticks_run_once_across_a_leader_kill(fleet: Fleet, app: Rota) -> None:
    fleet.scheduler("sched-a")
    assert fleet.wait_leader()[0] == "sched-a"
    fleet.scheduler("sched-b")
    fleet.scheduler("sched-c")
    fleet.worker("w0", concurrency=4, app=flow.APP)  # writes the app's schedules
    fleet.wait_nodes(1)
    began = fleet.store.now()
    fleet.wait_for(
        "three ticks of each schedule",
        lambda: all(
            len(read_lines(fleet.runs, f"{s}.log")) >= 3 for s in ("tick_skip", "tick_once")
        ),
        timeout=30,
    )
    killed_at = fleet.store.now()
    fleet.kill("sched-a", signal.SIGKILL)

    def new_leader() -> tuple[str, int] | None:
        found = fleet.leader()
        return found if found is not None and found[0] != "sched-a" else None

    fleet.wait_for("a standby to lead", new_leader, LEADER_LEASE_TTL + 15)
    lease = fleet.store.get_lease(SCHEDULER_LEASE)
    assert lease is not None
    took_over = lease.acquired_at
    time.sleep(4.0)
    ended = fleet.store.now()
    # Stop ticking so no tick submitted after this point can race the count below.
    for name in ("sched-b", "sched-c"):
        fleet.kill(name, signal.SIGKILL)
        fleet.wait_exit(name, 10)
    for name in ("flow.tick_skip", "flow.tick_once"):

        def all_succeeded(task: str = name) -> bool:
            runs = tick_runs(fleet, task, (began, fleet.store.now()))
            return all(s is JobState.SUCCEEDED for s in runs.values())

        fleet.wait_for(
            f"{name}'s jobs to finish",
            all_succeeded,
            timeout=20,
        )
    for name, log in (("flow.tick_skip", "tick_skip.log"), ("flow.tick_once", "tick_once.log")):
        ticks = sorted(tick_runs(fleet, name, (began, fleet.store.now())))
        runs = read_lines(fleet.runs, log)
        assert len(runs) == len(ticks), f"{name}: {len(runs)} runs for {len(ticks)} ticks"
        first = ticks[0]
        # While a leader was alive, every tick ran (once: ids are per tick, runs per job).
        led = [t for t in range(int(first), int(ended) - 1) if t < killed_at - 1.5]
        led += [t for t in range(int(took_over) + 2, int(ended) - 1)]
        missing = sorted(set(map(float, led)) - set(ticks))
        assert not missing, f"{name}: ticks missing while a leader was alive: {missing}"
        # Ticks that fell while no leader was alive: "skip" runs none of them (they were
        # over its grace late by the time a leader came), "run_once" at most the latest.
        gap = [t for t in ticks if killed_at + 0.5 < t < took_over - 0.5]
        assert len(gap) <= (1 if name == "flow.tick_once" else 0), f"{name}: {gap}"
    # "skip" never ran a tick more than its grace (0.5 s) late.
    skip = {r.id: r for r in fleet.store.list_jobs(task="flow.tick_skip", limit=10_000)}
    ticks_of = {
        tick_job_id("flow.tick_skip", t): t
        for t in tick_runs(fleet, "flow.tick_skip", (began, ended))
    }
    for job_id, rec in skip.items():
        assert rec.created_at - ticks_of[job_id] <= 0.5 + 1.0, "skip ran a tick too late"
    assert "became leader" in fleet.log("sched-b") + fleet.log("sched-c")
