"""The cancellation flag of a running sync task (``rota.cancel_requested()``): set by the
pool child's signal handler when its job is cancelled, or, for a task running in a thread
of the worker, on the job that thread runs. Light: ``import rota`` loads it."""

from __future__ import annotations

import threading
from typing import Any


class ChildState:
    running = False  # inside task code: SIGUSR1 raises JobCancelled
    cancelled = False  # the current job was asked to stop (read by cancel_requested())
    idle = False  # blocked waiting for a job: SIGTERM exits at once
    exit_requested = False  # SIGTERM seen: exit after the current job


class ThreadState(threading.local):
    job: Any = None  # the job this thread runs (rota.worker.threads), with .cancelled


child_state = ChildState()
thread_state = ThreadState()


def cancel_requested() -> bool:
    """Inside a sync task run by a worker: whether its job was cancelled. The task also gets
    :class:`JobCancelled` raised once; a task that catches it (or polls this flag) has the
    worker's cancel grace period to stop (in a pool process: before its process is killed)."""
    job = thread_state.job
    if job is not None:
        return bool(job.cancelled)
    return child_state.cancelled
