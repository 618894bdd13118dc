"""The store contract for reports and attempts: a retried report is idempotent, and every
store keeps each attempt of a job (bounded, pruned with the job)."""

from __future__ import annotations

import time
from collections.abc import Callable

from rota.core.model import Assignment
from rota.core.outcomes import AttemptEnd, CutShort, Outcome, OutcomeKind
from rota.core.states import JobState
from rota.store import Store
from rota.store import fast_paths as fast
from tests.store.contract.test_store_contract import TTL, job, leader, node, run_on, state_of


def _url_with(url: str, param: str) -> str:
    return url + ("&" if "?" in url else "?") + param


# ---- a retried report ------------------------------------------------------------------------
def test_a_retried_report_is_accepted_and_changes_nothing(store: Store) -> None:
    spec = node()
    store.register_node(spec)
    ok_job, failed_job, fatal_job, cancelled_job = run_on(
        store, spec, [job(), job(retries=2), job(retries=2), job()]
    )
    outcomes = [
        Outcome(ok_job.id, ok_job.token, OutcomeKind.SUCCEEDED, result='"first"'),
        Outcome(failed_job.id, failed_job.token, OutcomeKind.FAILED, error="E", retry_delay=60),
        Outcome(fatal_job.id, fatal_job.token, OutcomeKind.FATAL, error="corrupt"),
        Outcome(cancelled_job.id, cancelled_job.token, OutcomeKind.CANCELLED, error="cancelled"),
    ]
    assert store.complete(outcomes) == [True] * 4
    before = {r.id: r for r in store.get_jobs([o.job_id for o in outcomes])}
    # The reply was lost; the worker sends the same report again (once alone, once batched).
    assert store.complete(outcomes) == [True] * 4
    assert store.complete(outcomes[:1]) == [True]
    after = {r.id: r for r in store.get_jobs([o.job_id for o in outcomes])}
    for job_id, rec in before.items():
        again = after[job_id]
        assert (again.state, again.finished_at, again.result, again.error, again.attempts) == (
            rec.state,
            rec.finished_at,
            rec.result,
            rec.error,
            rec.attempts,
        )
    assert after[ok_job.id].result_value() == "first"
    assert after[failed_job.id].state is JobState.RETRYING
    assert [len(store.job_attempts(o.job_id)) for o in outcomes] == [1, 1, 1, 1]


def test_a_report_with_another_outcome_or_token_is_still_refused(store: Store) -> None:
    spec = node()
    store.register_node(spec)
    (r,) = run_on(store, spec, [job(retries=1)])
    assert store.complete([Outcome(r.id, r.token, OutcomeKind.SUCCEEDED, result="1")]) == [True]
    assert store.complete(
        [
            Outcome(r.id, r.token, OutcomeKind.FAILED, error="late"),
            Outcome(r.id, r.token + 1, OutcomeKind.SUCCEEDED, result="2"),
            Outcome("ghost", 1, OutcomeKind.SUCCEEDED, result="3"),
        ]
    ) == [False, False, False]
    rec = store.get_job(r.id)
    assert rec is not None and rec.result_value() == 1 and rec.error is None


def test_a_taken_back_attempt_refuses_its_late_report(store: Store) -> None:
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    store.submit([j := job(retries=2)])
    store.assign(lease, [Assignment(j.id, spec.id)])
    (r,) = store.start_jobs(spec.id, 1, 0.2)
    time.sleep(0.3)
    store.heartbeat(spec.id, [], TTL)
    assert store.reap(lease, 60).retried == 1
    assert store.complete([Outcome(r.id, r.token, OutcomeKind.SUCCEEDED, result="1")]) == [False]
    assert state_of(store, r.id) is JobState.PENDING


def test_complete_and_start_accepts_a_retried_report(store: Store) -> None:
    spec = node()
    store.register_node(spec)
    (r,) = run_on(store, spec, [job()])
    report = [Outcome(r.id, r.token, OutcomeKind.SUCCEEDED, result="1")]
    assert fast.complete_and_start(store, report, spec.id, 4, TTL) == ([True], [])
    assert fast.complete_and_start(store, report, spec.id, 4, TTL) == ([True], [])


# ---- attempt history -----------------------------------------------------------------------
def test_each_attempt_is_recorded_with_node_times_outcome_and_error(store: Store) -> None:
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    assert store.job_attempts("nope") == []
    store.submit([j := job(retries=2)])
    assert store.job_attempts(j.id) == []
    store.assign(lease, [Assignment(j.id, spec.id)])
    (first,) = store.start_jobs(spec.id, 1, TTL)
    (open_,) = store.job_attempts(j.id)
    assert (open_.job_id, open_.token, open_.attempt, open_.node_id) == (
        j.id,
        first.token,
        1,
        spec.id,
    )
    assert open_.started_at == first.started_at and open_.ended_at is None
    assert open_.outcome is None and open_.cut_short is None
    failed = Outcome(
        j.id,
        first.token,
        OutcomeKind.FAILED,
        error="TimeoutError: timed out after 2 s",
        traceback="tb1",
        cut_short=CutShort.TIMEOUT,
    )
    assert store.complete([failed]) == [True]
    store.promote_due(lease, 10)
    store.assign(lease, [Assignment(j.id, spec.id)])
    (second,) = store.start_jobs(spec.id, 1, TTL)
    done = Outcome(j.id, second.token, OutcomeKind.SUCCEEDED, result="1")
    assert store.complete([done]) == [True]
    a1, a2 = store.job_attempts(j.id)
    assert (a1.attempt, a1.outcome, a1.cut_short) == (1, AttemptEnd.FAILED, CutShort.TIMEOUT)
    assert (a1.error, a1.traceback) == ("TimeoutError: timed out after 2 s", "tb1")
    assert a1.ended_at is not None and a1.started_at <= a1.ended_at
    assert (a2.attempt, a2.token, a2.outcome, a2.cut_short) == (
        2,
        second.token,
        AttemptEnd.SUCCEEDED,
        None,
    )
    assert a2.error is None and a2.traceback is None
    rec = store.get_job(j.id)
    assert rec is not None and a2.ended_at == rec.finished_at
    assert a2.to_dict()["outcome"] == "succeeded"


def test_reap_and_release_close_the_attempts_they_cut_short(store: Store) -> None:
    lease = leader(store)
    dead, alive = node("dead"), node("alive")
    store.register_node(dead)
    store.register_node(alive)
    (lost,) = run_on(store, dead, [job(retries=3)], lease)
    (handed,) = run_on(store, alive, [job(retries=3)], lease)
    store.submit([j := job(retries=3)])
    store.assign(lease, [Assignment(j.id, alive.id)])
    (expiring,) = store.start_jobs(alive.id, 1, 0.2)
    time.sleep(0.5)
    store.heartbeat(alive.id, [(handed.id, handed.token)], TTL)
    report = store.reap(lease, 0.4)
    assert report.dead_nodes == (dead.id,) and report.retried == 2
    assert store.release_jobs(alive.id, [(handed.id, handed.token)]) == 1
    (a,) = store.job_attempts(lost.id)
    assert (a.outcome, a.cut_short, a.node_id) == (AttemptEnd.LOST, CutShort.NODE_LOST, dead.id)
    assert a.ended_at is not None and a.error is not None and "lease lost" in a.error
    (b,) = store.job_attempts(expiring.id)
    assert (b.outcome, b.cut_short) == (AttemptEnd.LOST, CutShort.LEASE_EXPIRED)
    (c,) = store.job_attempts(handed.id)
    assert (c.outcome, c.cut_short) == (AttemptEnd.RELEASED, CutShort.SHUTDOWN)
    assert c.ended_at is not None


def test_history_is_bounded_and_pruned_with_the_job(connect: Callable[[], Store], url: str) -> None:
    from rota.store import open_store

    store = open_store(_url_with(url, "attempt_history=3"))
    try:
        assert store.attempt_history == 3
        lease = leader(store)
        spec = node()
        store.register_node(spec)
        store.submit([j := job(retries=9)])
        tokens = []
        for n in range(5):
            store.assign(lease, [Assignment(j.id, spec.id)])
            (r,) = store.start_jobs(spec.id, 1, TTL)
            tokens.append(r.token)
            kind = OutcomeKind.SUCCEEDED if n == 4 else OutcomeKind.FAILED
            assert store.complete([Outcome(j.id, r.token, kind, error="E", retry_delay=0)]) == [
                True
            ]
            store.promote_due(lease, 10)
        kept = store.job_attempts(j.id)
        assert [a.token for a in kept] == tokens[-3:]
        assert [a.attempt for a in kept] == [3, 4, 5]
        other = connect()  # the default bound
        assert other.attempt_history == 20
        time.sleep(0.2)
        assert store.prune(0.1) == 1
        assert store.job_attempts(j.id) == []
    finally:
        store.close()


def test_retry_dead_keeps_the_history_and_numbers_attempts_again(store: Store) -> None:
    lease = leader(store)
    spec = node()
    store.register_node(spec)
    (r,) = run_on(store, spec, [job()], lease)
    store.complete([Outcome(r.id, r.token, OutcomeKind.FAILED, error="E")])
    assert store.retry_dead([r.id]) == 1
    store.assign(lease, [Assignment(r.id, spec.id)])
    (again,) = store.start_jobs(spec.id, 1, TTL)
    store.complete([Outcome(r.id, again.token, OutcomeKind.SUCCEEDED, result="1")])
    first, second = store.job_attempts(r.id)
    assert (first.attempt, first.outcome) == (1, AttemptEnd.FAILED)
    assert (second.attempt, second.outcome, second.token) == (1, AttemptEnd.SUCCEEDED, again.token)
