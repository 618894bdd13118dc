"""Aging: a job's effective priority rises with its wait, so low priorities do not starve
(pure).

A job with ``aging=A`` (seconds) that has been pending for ``w`` seconds is ordered as if
its priority were ``priority + w / A``. Jobs without aging keep their priority. Ties go to
the job enqueued first, then to the order the jobs came in (the store's priority, then
FIFO order).

**Bounded wait.** Ordering by ``priority + w / A`` is ordering by the *virtual deadline*
``enqueued_at - priority * A`` (the same order at every moment, when the jobs share ``A``):
earlier deadline first. So a job J of priority ``p`` enqueued at ``t0`` is overtaken only
by jobs whose deadline is earlier, that is jobs of priority ``q`` enqueued before
``t0 + (q - p) * A`` (a tie goes to the job enqueued first). With ``P`` the highest
priority in use, no job enqueued at or after ``t0 + (P - p) * A`` is placed before J: J
waits at most ``(P - p) * A`` longer than a job of priority ``P`` (same shape, same
tenant) enqueued at ``t0 + (P - p) * A`` waits:

    wait(J) <= (P - p) * A + wait of a top-priority job arriving then

Under a flood of top-priority work, then, the lowest priority still runs, ``(P - p) * A``
seconds behind the flood's own queueing delay. (``aging_bound`` gives the first term;
``tests/unit/test_aging.py`` checks the bound, and ``bench.sim`` checks it on every job.)
"""

from __future__ import annotations

from collections.abc import Sequence

from rota.core.model import PendingJob


def effective_priority(job: PendingJob, now: float) -> float:
    """``priority + waited / aging`` (just ``priority`` without aging)."""
    aging = job.alloc.aging
    if not aging:
        return float(job.priority)
    return job.priority + max(0.0, now - job.enqueued_at) / aging


def by_effective_priority(jobs: Sequence[PendingJob], now: float) -> list[PendingJob]:
    """``jobs`` highest effective priority first, ties in the given order; the given list
    (as a list) when no job ages."""
    if not any(j.alloc.aging for j in jobs):
        return list(jobs)
    keyed = sorted(
        enumerate(jobs), key=lambda e: (-effective_priority(e[1], now), e[1].enqueued_at, e[0])
    )
    return [job for _, job in keyed]


def aging_bound(priority: int, top_priority: int, aging: float) -> float:
    """How much longer than a top-priority job a job of ``priority`` can wait:
    ``(top_priority - priority) * aging`` seconds (0 when it is at the top)."""
    return max(0, top_priority - priority) * aging
