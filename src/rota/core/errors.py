"""Exceptions raised by rota's public API."""

from __future__ import annotations


class RotaError(Exception):
    """Base class of every error rota raises on purpose."""


class SubmitError(RotaError, ValueError):
    """A job was refused at submit time; nothing was stored."""


class UnknownTask(SubmitError, LookupError):
    """The task name is not in the app's registry."""


class InvalidPayload(SubmitError, TypeError):
    """Arguments or a result that are not plain JSON (or contain NaN/Infinity)."""


class PayloadTooLarge(SubmitError):
    """The encoded arguments exceed the app's payload limit."""


class InvalidOption(SubmitError):
    """A job option is malformed (negative timeout, unknown option, bad resources...)."""


class InvalidText(InvalidOption):
    """A name, key, label or id holds a character no store can keep (a control character
    such as NUL, or a lone surrogate), or has a bad length."""


class StoreError(RotaError):
    """The store could not be reached or refused an operation."""


class CorruptPayload(RotaError):
    """A stored payload could not be decoded."""


class JobFailed(RotaError):
    """Raised by ``JobHandle.result()`` when the job ended dead or cancelled."""

    def __init__(self, job_id: str, state: str, error: str | None) -> None:
        super().__init__(f"job {job_id} ended {state}: {error or 'no error recorded'}")
        self.job_id = job_id
        self.state = state
        self.error = error


class ResultTimeout(RotaError, TimeoutError):
    """``JobHandle.result(timeout=...)`` ran out of time before the job finished."""


class Retry(Exception):
    """Raise from a task to ask for another attempt, after ``delay`` seconds if given.

    A retry counts as an attempt: when the task's attempts are exhausted the job is dead.
    """

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.delay = delay
        self.reason = reason


class LeaseLost(StoreError):
    """A fenced operation was refused: the caller's lease is no longer the current one."""


class JobCancelled(BaseException):
    """Raised inside a sync task when its job is cancelled with a grace period.

    A ``BaseException`` so that ``except Exception`` in task code does not swallow it;
    catch it explicitly (or use ``finally``) to clean up before the grace period ends.
    """
