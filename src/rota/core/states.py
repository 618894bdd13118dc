"""The job state machine: states, which transitions are legal, and which states are final.

::

    waiting --(parents succeeded)--+
       |                           v
       +--(a parent dead, cancelled or upstream_failed)--> upstream_failed
    scheduled --(due)--> pending --(placed)--> assigned --(started)--> running
        ^                   ^                     |                      |
        |                   +----(node lost)------+                      +--> succeeded
        |                   +----(node lost, attempts left)--------------+--> dead
        +------ retrying <--(failed, attempts left: backoff)-------------+--> cancelled

Every non-final state can also go to ``cancelled``. Every transition is one atomic
operation in the store.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    WAITING = "waiting"  # a workflow step waiting for its parents (``depends_on``)
    SCHEDULED = "scheduled"  # waiting for its ETA / delay
    PENDING = "pending"  # due, waiting for placement
    ASSIGNED = "assigned"  # placed on a node, not started yet
    RUNNING = "running"  # started; holds a lease with a fencing token
    RETRYING = "retrying"  # failed an attempt; waiting out its backoff
    SUCCEEDED = "succeeded"
    DEAD = "dead"  # attempts exhausted or not retryable: the dead-letter record
    CANCELLED = "cancelled"
    UPSTREAM_FAILED = "upstream_failed"  # never ran: a parent ended dead or cancelled


FINAL_STATES: frozenset[JobState] = frozenset(
    {JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED, JobState.UPSTREAM_FAILED}
)
# A parent ending in one of these makes its waiting children ``upstream_failed``.
FAILED_STATES: frozenset[JobState] = frozenset(
    {JobState.DEAD, JobState.CANCELLED, JobState.UPSTREAM_FAILED}
)
# Waiting for a time (a delay or ETA, or a retry's backoff); promoted to pending when due.
DELAYED_STATES: frozenset[JobState] = frozenset({JobState.SCHEDULED, JobState.RETRYING})
ACTIVE_STATES: frozenset[JobState] = frozenset({JobState.ASSIGNED, JobState.RUNNING})

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.WAITING: frozenset({JobState.PENDING, JobState.UPSTREAM_FAILED, JobState.CANCELLED}),
    JobState.SCHEDULED: frozenset({JobState.PENDING, JobState.CANCELLED}),
    JobState.RETRYING: frozenset({JobState.PENDING, JobState.CANCELLED}),
    JobState.PENDING: frozenset({JobState.ASSIGNED, JobState.CANCELLED}),
    JobState.ASSIGNED: frozenset({JobState.RUNNING, JobState.PENDING, JobState.CANCELLED}),
    JobState.RUNNING: frozenset(
        {
            JobState.SUCCEEDED,
            JobState.RETRYING,
            JobState.PENDING,  # node lost with attempts left: re-placed at once
            JobState.DEAD,
            JobState.CANCELLED,
        }
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.DEAD: frozenset({JobState.PENDING}),  # an operator's manual retry
    JobState.CANCELLED: frozenset(),
    JobState.UPSTREAM_FAILED: frozenset(),
}

# Names operators type that mean a state (``rota jobs --state failed``).
STATE_ALIASES: dict[str, JobState] = {"failed": JobState.DEAD, "queued": JobState.PENDING}


def can_transition(src: JobState, dst: JobState) -> bool:
    """Whether the state machine allows ``src -> dst``."""
    return dst in TRANSITIONS[src]


def parse_state(name: str) -> JobState:
    """A state from its name or an alias; raises ``ValueError`` for anything else."""
    key = name.strip().lower()
    if key in STATE_ALIASES:
        return STATE_ALIASES[key]
    try:
        return JobState(key)
    except ValueError:
        known = ", ".join([s.value for s in JobState] + sorted(STATE_ALIASES))
        raise ValueError(f"unknown job state {name!r} (known: {known})") from None


def outcome_after_failure(attempts: int, max_attempts: int, retryable: bool = True) -> JobState:
    """Where a job goes after a failed attempt: ``retrying`` while attempts are left."""
    if retryable and attempts < max_attempts:
        return JobState.RETRYING
    return JobState.DEAD


def outcome_after_node_loss(state: JobState, attempts: int, max_attempts: int) -> JobState:
    """Where a job held by a dead node goes: assigned ones untouched, running ones retried."""
    if state is JobState.ASSIGNED:
        return JobState.PENDING
    return JobState.PENDING if attempts < max_attempts else JobState.DEAD


def after_parents(parent_states: list[JobState]) -> JobState | None:
    """Where a waiting job goes given its parents' states: ``pending`` once all succeeded,
    ``upstream_failed`` as soon as one failed, ``None`` (stay waiting) otherwise."""
    if any(s in FAILED_STATES for s in parent_states):
        return JobState.UPSTREAM_FAILED
    if all(s is JobState.SUCCEEDED for s in parent_states):
        return JobState.PENDING
    return None
