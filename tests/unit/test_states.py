from __future__ import annotations

import pytest

from rota.core.states import (
    FINAL_STATES,
    TRANSITIONS,
    JobState,
    after_parents,
    can_transition,
    outcome_after_failure,
    outcome_after_node_loss,
    parse_state,
)


def test_every_state_has_transitions_and_final_states_are_terminal() -> None:
    assert set(TRANSITIONS) == set(JobState)
    for state in (JobState.SUCCEEDED, JobState.CANCELLED, JobState.UPSTREAM_FAILED):
        assert TRANSITIONS[state] == frozenset()
    assert TRANSITIONS[JobState.DEAD] == {JobState.PENDING}  # only a manual retry
    assert {
        JobState.SUCCEEDED,
        JobState.DEAD,
        JobState.CANCELLED,
        JobState.UPSTREAM_FAILED,
    } == FINAL_STATES


def test_waiting_jobs_follow_their_parents() -> None:
    ok, dead, run = JobState.SUCCEEDED, JobState.DEAD, JobState.RUNNING
    assert after_parents([ok, ok]) is JobState.PENDING
    assert after_parents([ok, run]) is None
    assert after_parents([run, dead]) is JobState.UPSTREAM_FAILED  # no need to wait
    assert after_parents([JobState.UPSTREAM_FAILED]) is JobState.UPSTREAM_FAILED
    assert after_parents([JobState.CANCELLED, ok]) is JobState.UPSTREAM_FAILED
    for nxt in (JobState.PENDING, JobState.UPSTREAM_FAILED, JobState.CANCELLED):
        assert can_transition(JobState.WAITING, nxt)
    assert not can_transition(JobState.WAITING, JobState.RUNNING)


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (JobState.SCHEDULED, JobState.PENDING),
        (JobState.PENDING, JobState.ASSIGNED),
        (JobState.ASSIGNED, JobState.RUNNING),
        (JobState.ASSIGNED, JobState.PENDING),
        (JobState.RUNNING, JobState.SUCCEEDED),
        (JobState.RUNNING, JobState.RETRYING),
        (JobState.RUNNING, JobState.DEAD),
        (JobState.RETRYING, JobState.PENDING),
    ],
)
def test_documented_path_is_allowed(src: JobState, dst: JobState) -> None:
    assert can_transition(src, dst)


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (JobState.PENDING, JobState.RUNNING),  # never started without being placed
        (JobState.SCHEDULED, JobState.ASSIGNED),
        (JobState.SUCCEEDED, JobState.PENDING),
        (JobState.CANCELLED, JobState.PENDING),
        (JobState.RETRYING, JobState.RUNNING),
    ],
)
def test_shortcuts_are_refused(src: JobState, dst: JobState) -> None:
    assert not can_transition(src, dst)


def test_failure_outcomes() -> None:
    assert outcome_after_failure(1, 3) is JobState.RETRYING
    assert outcome_after_failure(3, 3) is JobState.DEAD
    assert outcome_after_failure(1, 3, retryable=False) is JobState.DEAD


def test_node_loss_outcomes() -> None:
    assert outcome_after_node_loss(JobState.ASSIGNED, 3, 3) is JobState.PENDING  # untouched
    assert outcome_after_node_loss(JobState.RUNNING, 1, 2) is JobState.PENDING
    assert outcome_after_node_loss(JobState.RUNNING, 2, 2) is JobState.DEAD


def test_parse_state_and_aliases() -> None:
    assert parse_state("Running") is JobState.RUNNING
    assert parse_state("failed") is JobState.DEAD
    with pytest.raises(ValueError, match="unknown job state"):
        parse_state("exploded")
