"""Flow control at placement (pure): rate limits, keyed concurrency limits and the fair
order in which keyed jobs are offered to placement.

The scheduler is the only writer of assignments (it holds the fenced leader lease), so
limits checked here against the store's counts plus this cycle's own placements hold
fleet-wide.

**Rate limits** are a GCRA (generic cell rate algorithm, a token bucket without timers):
a limit of ``count`` per ``period`` seconds lets one job through every
``T = period / count`` seconds, with a burst tolerance ``tau = max(T, min(0.25,
period / 20))`` so that a scheduler cycle can place a few at once. In any window of
``period`` seconds at most ``count + tau / T + 1`` jobs are placed (within 5 % + 1).

**Concurrency keys**: a job with ``concurrency_key`` and ``concurrency_limit > 0`` is held
while that many jobs with its key are assigned or running.

**Fairness**: within one priority, keyed jobs are offered round-robin across keys (the
first job of every key, then the second of every key, ...), so a key with a thousand
queued jobs does not delay another key's first job.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from rota.core.model import PendingJob
from rota.core.rates import parse_rate


@dataclass(slots=True)
class RateGate:
    """GCRA state per rate key: the theoretical arrival time of the next job, in seconds on
    the caller's clock."""

    tat: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def _params(rate: str) -> tuple[float, float]:
        return _gcra(rate)

    def allows(self, key: str, rate: str, now: float) -> bool:
        """Whether one more job under ``key`` may be placed at ``now``."""
        _interval, tau = self._params(rate)
        return max(self.tat.get(key, now), now) - now <= tau

    def take(self, key: str, rate: str, now: float) -> None:
        """Count one job placed under ``key`` at ``now``."""
        interval, _tau = self._params(rate)
        self.tat[key] = max(self.tat.get(key, now), now) + interval

    def export(self, now: float) -> dict[str, float]:
        """The state as offsets from ``now`` (clock-free, to hand to the next leader);
        keys that are idle again are left out."""
        return {k: round(t - now, 6) for k, t in self.tat.items() if t > now}

    @classmethod
    def restore(cls, offsets: Mapping[str, float], now: float) -> RateGate:
        """The inverse of :meth:`export`; bad entries are ignored."""
        tat = {
            k: now + float(v)
            for k, v in offsets.items()
            if isinstance(k, str) and isinstance(v, int | float) and 0 < v < 7 * 86400
        }
        return cls(tat)


@functools.lru_cache(maxsize=1024)
def _gcra(rate: str) -> tuple[float, float]:
    """``(T, tau)`` of a stored rate limit (parsed once, not per job)."""
    count, period = parse_rate(rate)
    interval = period / count
    return interval, max(interval, min(0.25, period / 20))


def rate_key(job: PendingJob) -> str:
    """Rate limits apply per task."""
    return job.task


def fair_order(page: list[PendingJob]) -> list[PendingJob]:
    """``page`` (priority, then FIFO) re-ordered so that within each priority, jobs with a
    concurrency key take turns across keys. Jobs without a key keep their FIFO places
    relative to each other and count as one more key. Stable; a no-op without keys."""
    if all(j.concurrency_key is None for j in page):
        return page
    turns: Counter[tuple[int, str | None]] = Counter()
    ranked: list[tuple[int, int, int, PendingJob]] = []
    for index, job in enumerate(page):
        slot = (job.priority, job.concurrency_key)
        ranked.append((-job.priority, turns[slot], index, job))
        turns[slot] += 1
    ranked.sort(key=lambda r: (r[0], r[1], r[2]))
    return [r[3] for r in ranked]


@dataclass(slots=True)
class Admission:
    """Which jobs of a page may be offered to placement, and why the others wait."""

    jobs: list[PendingJob]
    held: Counter[str]


def admit(
    page: Iterable[PendingJob], usage: Mapping[str, int], gate: RateGate, now: float
) -> Admission:
    """The jobs of ``page`` (in order) that neither exceed their key's concurrency limit
    (``usage``: jobs with the key assigned or running now) nor their task's rate limit,
    counting the ones admitted before them. Nothing is consumed: call
    :func:`record_placed` for the jobs actually placed."""
    counts: Counter[str] = Counter()
    trial = RateGate(dict(gate.tat))
    jobs: list[PendingJob] = []
    held: Counter[str] = Counter()
    for job in page:
        key = job.concurrency_key if job.concurrency_limit > 0 else None
        if key is not None and usage.get(key, 0) + counts[key] >= job.concurrency_limit:
            held[f"concurrency limit {job.concurrency_limit} on key {key}"] += 1
            continue
        if job.rate_limit is not None:
            if not trial.allows(rate_key(job), job.rate_limit, now):
                held[f"rate limit {job.rate_limit}s on task {job.task}"] += 1
                continue
            trial.take(rate_key(job), job.rate_limit, now)
        if key is not None:
            counts[key] += 1
        jobs.append(job)
    return Admission(jobs, held)


def record_placed(
    placed: Iterable[PendingJob], usage: dict[str, int], gate: RateGate, now: float
) -> None:
    """Count placed jobs into ``usage`` and the rate ``gate``."""
    for job in placed:
        if job.concurrency_key is not None and job.concurrency_limit > 0:
            usage[job.concurrency_key] = usage.get(job.concurrency_key, 0) + 1
        if job.rate_limit is not None:
            gate.take(rate_key(job), job.rate_limit, now)
