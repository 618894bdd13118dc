"""The cancellation flag of a sync task's process (``rota.cancel_requested()``), set by the
pool child's signal handler when its job is cancelled. Light: ``import rota`` loads it."""

from __future__ import annotations


class ChildState:
    running = False  # inside task code: SIGUSR1 raises JobCancelled
    cancelled = False  # the current job was asked to stop (read by cancel_requested())
    idle = False  # blocked waiting for a job: SIGTERM exits at once
    exit_requested = False  # SIGTERM seen: exit after the current job


child_state = ChildState()


def cancel_requested() -> bool:
    """Inside a sync task run by a worker: whether its job was cancelled. The task also gets
    :class:`JobCancelled` raised once; a task that catches it (or polls this flag) has the
    worker's cancel grace period to stop before its process is killed."""
    return child_state.cancelled
