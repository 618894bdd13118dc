"""The store contract for workflows, uniqueness, periodic ticks and concurrency keys.
Every store must pass every test here."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from rota.core.errors import InvalidOption, LeaseLost
from rota.core.model import Assignment, NewJob, ScheduleRecord
from rota.core.outcomes import Outcome, OutcomeKind
from rota.core.states import FINAL_STATES, JobState
from rota.store import Store
from tests.store.contract.test_store_contract import TTL, job, leader, node, run_on, state_of


def finish(store: Store, new: NewJob, kind: OutcomeKind = OutcomeKind.SUCCEEDED) -> None:
    """Take a pending job through a node to the end with ``kind``."""
    spec = node()
    store.register_node(spec)
    lease = leader(store)
    assert store.assign(lease, [Assignment(new.id, spec.id)]) == 1
    (rec,) = store.start_jobs(spec.id, 1, TTL)
    result = '"ok"' if kind is OutcomeKind.SUCCEEDED else None
    assert store.complete([Outcome(rec.id, rec.token, kind, result=result, error="boom")]) == [True]


def settle(store: Store) -> int:
    """Call resolve_dependencies until nothing moves; return the total moved."""
    lease = leader(store)
    total = 0
    for _ in range(20):
        moved = store.resolve_dependencies(lease, 1000)
        if not moved:
            return total
        total += moved
    raise AssertionError("resolve_dependencies never settled")


# ---- workflows ---------------------------------------------------------------------------
def test_child_waits_until_its_parent_succeeds(store: Store) -> None:
    parent = job("a")
    child = job("b", depends_on=(parent.id,), pass_results=True, workflow_id="wf1")
    assert store.submit([parent, child]) == [parent.id, child.id]  # parent in the same batch
    rec = store.get_job(child.id)
    assert rec is not None and rec.state is JobState.WAITING
    assert rec.depends_on == (parent.id,) and rec.pass_results and rec.workflow_id == "wf1"
    assert [p.id for p in store.pending_jobs(10)] == [parent.id]
    assert settle(store) == 0  # parent still pending
    finish(store, parent)
    assert settle(store) == 1
    assert state_of(store, child.id) is JobState.PENDING
    assert [p.id for p in store.pending_jobs(10)] == [child.id]
    assert store.list_jobs(state=JobState.WAITING) == []


def test_child_of_an_existing_job_and_of_a_finished_one(store: Store) -> None:
    done = job("a")
    store.submit([done])
    finish(store, done)
    late = job("b", depends_on=(done.id,))
    store.submit([late])
    assert state_of(store, late.id) is JobState.WAITING
    assert store.count_jobs().get(("default", JobState.WAITING)) == 1
    assert settle(store) == 1
    assert state_of(store, late.id) is JobState.PENDING


def test_all_parents_must_succeed_and_one_failure_fails_the_child(store: Store) -> None:
    p1, p2, p3 = job("a"), job("a"), job("a")
    child = job("join", depends_on=(p1.id, p2.id, p3.id))
    store.submit([p1, p2, p3, child])
    finish(store, p1)
    assert settle(store) == 0
    assert state_of(store, child.id) is JobState.WAITING
    finish(store, p2, OutcomeKind.FATAL)  # dead at once; p3 is still pending
    assert settle(store) == 1
    rec = store.get_job(child.id)
    assert rec is not None and rec.state is JobState.UPSTREAM_FAILED
    assert rec.finished_at is not None and rec.error and p2.id in rec.error
    assert rec.attempts == 0 and rec.started_at is None
    assert JobState.UPSTREAM_FAILED in FINAL_STATES


def test_upstream_failure_cascades_down_a_chain(store: Store) -> None:
    a = job("a")
    b = job("b", depends_on=(a.id,))
    c = job("c", depends_on=(b.id,))
    d = job("d", depends_on=(c.id,))
    store.submit([a, b, c, d])
    assert store.cancel(a.id) is JobState.CANCELLED
    assert settle(store) == 3
    for j in (b, c, d):
        assert state_of(store, j.id) is JobState.UPSTREAM_FAILED
    assert len(store.list_jobs(state=JobState.UPSTREAM_FAILED)) == 3


def test_a_diamond_runs_the_join_once_both_sides_succeeded(store: Store) -> None:
    top = job("top")
    left = job("l", depends_on=(top.id,))
    right = job("r", depends_on=(top.id,))
    join = job("j", depends_on=(left.id, right.id))
    store.submit([top, left, right, join])
    finish(store, top)
    assert settle(store) == 2
    assert {p.id for p in store.pending_jobs(10)} == {left.id, right.id}
    finish(store, left)
    finish(store, right)
    assert settle(store) == 1
    assert state_of(store, join.id) is JobState.PENDING


def test_unknown_parent_is_refused_and_nothing_is_stored(store: Store) -> None:
    ok = job("a")
    orphan = job("b", depends_on=("no-such-job",))
    with pytest.raises(InvalidOption, match="no-such-job"):
        store.submit([ok, orphan])
    assert store.get_jobs([ok.id, orphan.id]) == []
    later = job("c", depends_on=(ok.id,))  # a parent later in the batch is unknown too
    with pytest.raises(InvalidOption):
        store.submit([later, ok])
    assert store.count_jobs() == {}


def test_cancelling_a_waiting_job_and_its_children(store: Store) -> None:
    a = job("a")
    b = job("b", depends_on=(a.id,))
    c = job("c", depends_on=(b.id,))
    store.submit([a, b, c])
    assert store.cancel(b.id) is JobState.CANCELLED
    finish(store, a)
    assert settle(store) == 1  # c: its parent b was cancelled
    assert state_of(store, b.id) is JobState.CANCELLED
    assert state_of(store, c.id) is JobState.UPSTREAM_FAILED
    assert store.pending_jobs(10) == []


def test_resolve_dependencies_is_fenced(store: Store) -> None:
    old = leader(store, "a", 0.3)
    time.sleep(0.4)
    leader(store, "b")
    with pytest.raises(LeaseLost):
        store.resolve_dependencies(old, 10)


def test_flow_fields_roundtrip_and_reach_placement(store: Store) -> None:
    j = job(
        "mail.send",
        priority=3,
        concurrency_key="user:42",
        concurrency_limit=2,
        rate_limit="100/60",
        unique_key="mail:42",
    )
    store.submit([j])
    rec = store.get_job(j.id)
    assert rec is not None
    assert (rec.concurrency_key, rec.concurrency_limit, rec.rate_limit, rec.unique_key) == (
        "user:42",
        2,
        "100/60",
        "mail:42",
    )
    assert rec.depends_on == () and not rec.pass_results and rec.workflow_id is None
    (p,) = store.pending_jobs(10)
    assert (p.task, p.concurrency_key, p.concurrency_limit, p.rate_limit) == (
        "mail.send",
        "user:42",
        2,
        "100/60",
    )
    plain = job("x")
    store.submit([plain])
    rec2 = store.get_job(plain.id)
    assert rec2 is not None and rec2.concurrency_key is None and rec2.rate_limit is None


# ---- unique jobs ---------------------------------------------------------------------------
def test_unique_key_returns_the_unfinished_job(store: Store) -> None:
    first = job("report", 1, unique_key="report:42")
    again = job("report", 2, unique_key="report:42")
    other = job("report", 3, unique_key="report:43")
    assert store.submit([first]) == [first.id]
    assert store.submit([again, other]) == [first.id, other.id]
    assert store.get_job(again.id) is None
    assert len(store.list_jobs(task="report")) == 2
    finish(store, first)
    third = job("report", 4, unique_key="report:42")
    assert store.submit([third]) == [third.id]  # the first one finished: a new job


def test_unique_key_within_one_batch_and_while_running(store: Store) -> None:
    a = job("r", unique_key="k")
    b = job("r", unique_key="k")
    assert store.submit([a, b]) == [a.id, a.id]
    spec = node()
    store.register_node(spec)
    store.assign(leader(store), [Assignment(a.id, spec.id)])
    store.start_jobs(spec.id, 1, TTL)
    c = job("r", unique_key="k")
    assert store.submit([c]) == [a.id]  # running counts as unfinished


def test_unique_for_expires(store: Store) -> None:
    a = job("r", unique_key="k", unique_for=0.3)
    assert store.submit([a]) == [a.id]
    b = job("r", unique_key="k", unique_for=0.3)
    assert store.submit([b]) == [a.id]
    time.sleep(0.45)
    c = job("r", unique_key="k", unique_for=0.3)
    assert store.submit([c]) == [c.id]
    d = job("r", unique_key="k")
    assert store.submit([d]) == [c.id]


def test_unique_key_race_between_ten_submitters(connect: Callable[[], Store]) -> None:
    stores = [connect() for _ in range(10)]
    barrier = threading.Barrier(10)
    results: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def submitter(s: Store, n: int) -> None:
        try:
            barrier.wait()
            for i in range(5):
                (got,) = s.submit([job("race", n, i, unique_key="the-one")])
                with lock:
                    results.append(got)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=submitter, args=(s, n)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(results) == 50 and len(set(results)) == 1
    assert len(stores[0].list_jobs(task="race")) == 1


# ---- keyed concurrency ---------------------------------------------------------------------
def test_concurrency_usage_counts_assigned_and_running(store: Store) -> None:
    spec = node(slots=10)
    store.register_node(spec)
    keyed = [job("k", concurrency_key="user:1", concurrency_limit=2) for _ in range(3)]
    other = job("k", concurrency_key="user:2", concurrency_limit=2)
    started = run_on(store, spec, keyed[:2])
    store.submit([keyed[2], other])
    assert store.concurrency_usage(["user:1", "user:2", "user:3"]).get("user:1") == 2
    usage = store.concurrency_usage(["user:2", "user:3"])
    assert usage.get("user:2", 0) == 0 and usage.get("user:3", 0) == 0
    store.assign(leader(store), [Assignment(other.id, spec.id)])
    assert store.concurrency_usage(["user:2"]) == {"user:2": 1}
    store.complete([Outcome(started[0].id, started[0].token, OutcomeKind.SUCCEEDED, '"x"')])
    assert store.concurrency_usage(["user:1"]).get("user:1") == 1
    store.cancel(started[1].id)  # running: flagged, still running until its node stops it
    assert store.concurrency_usage(["user:1"]).get("user:1") == 1
    store.complete([Outcome(started[1].id, started[1].token, OutcomeKind.CANCELLED)])
    assert store.concurrency_usage(["user:1"]).get("user:1", 0) == 0
    assert store.concurrency_usage([]) == {}


# ---- periodic schedules --------------------------------------------------------------------
def test_schedules_put_list_update_delete(store: Store) -> None:
    assert store.list_schedules() == []
    store.put_schedules([ScheduleRecord("b", '{"cron": "* * * * *"}'), ScheduleRecord("a", "{}")])
    assert [(s.name, s.spec, s.last_tick) for s in store.list_schedules()] == [
        ("a", "{}", None),
        ("b", '{"cron": "* * * * *"}', None),
    ]
    lease = leader(store)
    assert store.fire_schedule(lease, "a", 1000.0, None)
    store.put_schedules([ScheduleRecord("a", '{"v": 2}', last_tick=5.0)])
    (a, _b) = store.list_schedules()
    assert a.spec == '{"v": 2}' and a.last_tick == 1000.0  # the tick survives an update
    assert store.delete_schedules(["a", "nope"]) == 1
    assert [s.name for s in store.list_schedules()] == ["b"]


def test_fire_schedule_runs_each_tick_once(store: Store) -> None:
    store.put_schedules([ScheduleRecord("every-minute", "{}")])
    lease = leader(store)
    j1 = job("cron.task")
    assert store.fire_schedule(lease, "every-minute", 60.0, j1)
    assert state_of(store, j1.id) is JobState.PENDING
    j1b = job("cron.task")
    assert not store.fire_schedule(lease, "every-minute", 60.0, j1b)  # same tick
    assert not store.fire_schedule(lease, "every-minute", 30.0, job("cron.task"))  # older
    assert store.get_job(j1b.id) is None
    assert store.fire_schedule(lease, "every-minute", 120.0, None)  # skipped tick
    (rec,) = store.list_schedules()
    assert rec.last_tick == 120.0
    assert len(store.list_jobs(task="cron.task")) == 1
    assert not store.fire_schedule(lease, "missing", 60.0, job("cron.task"))
    assert len(store.list_jobs(task="cron.task")) == 1


def test_fire_schedule_is_fenced(store: Store) -> None:
    store.put_schedules([ScheduleRecord("s", "{}")])
    old = leader(store, "a", 0.3)
    time.sleep(0.4)
    new = leader(store, "b")
    with pytest.raises(LeaseLost):
        store.fire_schedule(old, "s", 60.0, job("cron.task"))
    assert store.list_jobs(task="cron.task") == []
    assert store.fire_schedule(new, "s", 60.0, job("cron.task"))


def test_fire_schedule_race_between_connections(connect: Callable[[], Store]) -> None:
    stores = [connect() for _ in range(4)]
    stores[0].put_schedules([ScheduleRecord("s", "{}")])
    lease = leader(stores[0])
    barrier = threading.Barrier(4)
    fired: list[bool] = []
    lock = threading.Lock()

    def fire(s: Store) -> None:
        barrier.wait()
        for tick in range(1, 21):
            ok = s.fire_schedule(lease, "s", float(tick) * 60, job("cron.task", tick))
            with lock:
                fired.append(ok)

    threads = [threading.Thread(target=fire, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert fired.count(True) == len(stores[0].list_jobs(task="cron.task", limit=1000))
    ticks = sorted(r.arguments()[0][0] for r in stores[0].list_jobs(task="cron.task", limit=100))
    assert len(ticks) == len(set(ticks))  # never the same tick twice


def test_unique_ids_for_ticks_stay_unique(store: Store) -> None:
    """A tick's job may carry a deterministic id; a second job with it is refused, never
    overwrites the first."""
    store.put_schedules([ScheduleRecord("s", "{}")])
    lease = leader(store)
    fixed = uuid.uuid5(uuid.NAMESPACE_URL, "rota:s:60").hex
    first = NewJob(id=fixed, task="cron.task", queue="default", payload='{"args":[1],"kwargs":{}}')
    assert store.fire_schedule(lease, "s", 60.0, first)
    rec = store.get_job(fixed)
    assert rec is not None and rec.arguments() == ([1], {})


@pytest.mark.parametrize(
    "flow",
    [
        {"concurrency_limit": 3},  # without a key: still a flow field, kept as given
        {"rate_limit": "5/1"},
        {"workflow_id": "wf"},
        {"pass_results": True},
    ],
)
def test_every_flow_field_is_stored_even_alone(store: Store, flow: dict[str, Any]) -> None:
    """A job that sets one flow field (and nothing else of the flow) keeps it: the stores
    pick the plain or the flow insert with ``NewJob.uses_flow``, which counts every one."""
    new = job(**flow)
    assert new.uses_flow
    store.submit([new])
    stored = store.get_job(new.id)
    assert stored is not None
    for name, value in flow.items():
        assert getattr(stored, name) == value, name
