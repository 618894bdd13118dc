"""How one attempt of a job ends: one vocabulary, from the runner to the store and metrics.

Three views of the same event, each derived from the one before:

* :class:`ExecKind` / :class:`ExecResult`: what the runner saw (the task returned, raised,
  asked to be retried, ran out of time, lost its process, or was cancelled);
* :class:`OutcomeKind` / :class:`Outcome`: what the worker reports to the store, which
  decides the job's next state (:meth:`ExecResult.outcome_kind`);
* :class:`OutcomeLabel`: the ``outcome`` label of ``rota_worker_jobs_total``, how the node
  counts the attempt once the store accepted (or refused) it (:meth:`OutcomeLabel.of`).

The string values are stored and exported: they never change.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from rota.core.text import storable_text

# The longest a task's Retry(delay=...) may postpone its next attempt (ten years).
MAX_RETRY_DELAY = 10 * 365 * 86400.0


class ExecKind(StrEnum):
    """How running the task code ended, as the runner saw it."""

    OK = "ok"  # returned a JSON value
    ERROR = "error"  # raised (or its return value was not JSON)
    RETRY = "retry"  # raised rota.Retry
    TIMEOUT = "timeout"  # ran past the job's timeout and was stopped
    CRASHED = "crashed"  # its process died, or the worker shut down under it
    CANCELLED = "cancelled"  # stopped on request


@dataclass(frozen=True, slots=True)
class ExecResult:
    """How one attempt of a job ended, as the runner saw it."""

    kind: ExecKind
    result: str | None = None  # JSON text of the return value (kind "ok")
    error: str | None = None  # one line: "ValueError: bad width", "timed out after 2.0 s"...
    traceback: str | None = None  # formatted traceback for "error"/"retry"
    retry_delay: float | None = None  # from rota.Retry(delay=...) for kind "retry"
    fatal: bool = False  # no attempt can ever succeed (corrupt payload, unknown task)

    def cut_short(self) -> CutShort | None:
        """How the runner cut the attempt short, if it did (for the attempt history)."""
        return _CUT_BY_RUNNER.get(self.kind)

    def outcome_kind(self) -> OutcomeKind:
        """What the worker reports for this attempt."""
        if self.kind == ExecKind.OK:
            return OutcomeKind.SUCCEEDED
        if self.kind == ExecKind.CANCELLED:
            return OutcomeKind.CANCELLED
        return OutcomeKind.FATAL if self.fatal else OutcomeKind.FAILED


class OutcomeKind(StrEnum):
    """The end of an attempt as the store records it."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # retried while attempts are left, then dead
    FATAL = "fatal"  # dead at once (corrupt payload, not retryable)
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end of one attempt, as a worker reports it. Refused unless ``token`` is current."""

    job_id: str
    token: int
    kind: OutcomeKind
    result: str | None = None  # JSON text for SUCCEEDED
    error: str | None = None
    traceback: str | None = None
    retry_delay: float = 0.0  # seconds to wait before the next attempt (FAILED)
    cut_short: CutShort | None = None  # how the runner stopped it (timeout, crash, cancel)

    def __post_init__(self) -> None:
        # A task's error text is whatever its exception said: made storable here, on every
        # store alike (a NUL or a lone surrogate would make PostgreSQL or Redis refuse the
        # whole report, again and again).
        if self.error is not None:
            object.__setattr__(self, "error", storable_text(self.error))
        if self.traceback is not None:
            object.__setattr__(self, "traceback", storable_text(self.traceback))
        if not 0 <= self.retry_delay <= MAX_RETRY_DELAY:  # Retry(delay=1e308), NaN
            delay = self.retry_delay if self.retry_delay > 0 else 0.0
            object.__setattr__(self, "retry_delay", min(delay, MAX_RETRY_DELAY))


class AttemptEnd(StrEnum):
    """How one attempt ended, as its history records it: the kind the worker reported,
    or how the store took the job back."""

    SUCCEEDED = OutcomeKind.SUCCEEDED.value
    FAILED = OutcomeKind.FAILED.value
    FATAL = OutcomeKind.FATAL.value
    CANCELLED = OutcomeKind.CANCELLED.value
    LOST = "lost"  # taken back by the reaper (node lost, lease expired); the attempt counts
    RELEASED = "released"  # handed back at shutdown; the attempt does not count


class CutShort(StrEnum):
    """Why an attempt did not run to its end."""

    TIMEOUT = "timeout"  # ran past the job's timeout and was stopped
    CRASHED = "crashed"  # its process died, or the worker shut down under it
    CANCELLED = "cancelled"  # stopped on request
    LEASE_EXPIRED = "lease_expired"  # the node kept heartbeating but lost the job's lease
    NODE_LOST = "node_lost"  # the node was killed, went silent or left holding it
    SHUTDOWN = "shutdown"  # handed back unfinished when the node stopped
    PREEMPTED = "preempted"  # stopped for a higher-priority job; back to pending


_CUT_BY_RUNNER = {
    ExecKind.TIMEOUT: CutShort.TIMEOUT,
    ExecKind.CRASHED: CutShort.CRASHED,
    ExecKind.CANCELLED: CutShort.CANCELLED,
}


class OutcomeLabel(StrEnum):
    """How a node counts an attempt it ended: the ``outcome`` label of its metrics."""

    SUCCEEDED = OutcomeKind.SUCCEEDED.value
    FAILED = OutcomeKind.FAILED.value  # an error, a timeout or a crash; attempts are left
    RETRIED = "retried"  # the task raised Retry; attempts are left
    DEAD = "dead"  # no attempt left, or an error no attempt can fix
    CANCELLED = OutcomeKind.CANCELLED.value
    LEASE_LOST = "lease_lost"  # the outcome was dropped or refused: the lease had passed on
    RELEASED = "released"  # handed back unfinished at shutdown; the attempt does not count

    @classmethod
    def of(cls, result: ExecResult, attempts_left: bool) -> OutcomeLabel:
        """The label of an attempt that ended with ``result`` and was reported."""
        kind = result.outcome_kind()
        if kind is OutcomeKind.SUCCEEDED:
            return cls.SUCCEEDED
        if kind is OutcomeKind.CANCELLED:
            return cls.CANCELLED
        if kind is OutcomeKind.FATAL or not attempts_left:
            return cls.DEAD
        return cls.RETRIED if result.kind == ExecKind.RETRY else cls.FAILED
