"""Preemption by priority (pure): which running jobs to stop so that a job that cannot be
placed can be.

Like Nomad and Kubernetes: a job that fits on a node only if lower-priority work yields
may stop jobs there that were submitted ``preemptible=True`` and whose priority is at least
``gap`` levels lower (default 10, as in Nomad). Victims are chosen to free the fewest
resources, then to lose the least progress (run time so far): lowest priority and least
progress are tried first, then every victim the job can do without is spared again, and
the node whose victims free the least (then lose the least) wins.

Anti-thrash: a job preempted once is protected for ``protect_for`` seconds, and at most
``per_minute`` jobs are preempted in any minute. This module only *chooses*: the caller
cancels the victims (they go back to pending without counting an attempt) and keeps the
freed room for the job until they have stopped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rota.core.model import PendingJob, RunningJob
from rota.scheduler.fit import SLOTS, Room, demand
from rota.scheduler.placement import EPSILON


@dataclass(frozen=True, slots=True)
class PreemptionRules:
    gap: int = 10  # victims are at least this many priority levels lower
    protect_for: float = 300.0  # seconds a preempted job cannot be preempted again
    per_minute: int = 30  # preemptions in any 60 s at most


@dataclass(slots=True)
class PreemptionLog:
    """When jobs were preempted (for the per-minute cap); kept by the caller."""

    times: deque[float] = field(default_factory=deque)

    def budget(self, now: float, per_minute: int) -> int:
        while self.times and self.times[0] <= now - 60.0:
            self.times.popleft()
        return max(0, per_minute - len(self.times))

    def record(self, now: float, count: int) -> None:
        self.times.extend([now] * count)


@dataclass(frozen=True, slots=True)
class Preemption:
    """Stop ``victims`` on ``node_id`` so that ``job_id`` can run there."""

    job_id: str
    node_id: str
    victims: tuple[str, ...]
    freed: float  # sum over resources and slots of the fraction of the node freed
    lost: float  # run time thrown away, seconds summed over the victims

    def reason(self, priority: int) -> str:
        return f"preempted for job {self.job_id} (priority {priority}) on {self.node_id}"


def may_preempt(job: PendingJob, victim: RunningJob, now: float, rules: PreemptionRules) -> bool:
    """Whether ``victim`` may be stopped for ``job``."""
    if not victim.alloc.preemptible or victim.stopping:
        return False
    if victim.priority > job.priority - rules.gap:
        return False
    return victim.preempted_at is None or now - victim.preempted_at >= rules.protect_for


def choose_victims(
    job: PendingJob,
    room: Room,
    running: Mapping[int, Sequence[RunningJob]],
    now: float,
    rules: PreemptionRules,
    budget: int,
) -> Preemption | None:
    """The cheapest way to make room for ``job`` by stopping at most ``budget`` jobs, or
    None. ``running`` lists the jobs on each node index of ``room``."""
    if budget <= 0:
        return None
    need = demand(job)
    best: tuple[tuple[float, float, tuple[int, float, str]], Preemption] | None = None
    for i in room.eligible(job):
        if not room.could_ever(i, job):
            continue
        on_node = running.get(i, ())
        deficit = _deficit(room, i, need)
        if not deficit:
            continue  # it has the room: whatever keeps the job off it, it is not this
        candidates = [r for r in on_node if may_preempt(job, r, now, rules)]
        victims = _cover(deficit, candidates, now)
        if victims is None or len(victims) > budget:
            continue
        freed = _freed(room, i, victims)
        lost = sum(max(0.0, now - v.started_at) for v in victims)
        key = (freed, lost, room.rank(i, job))
        if best is None or key < best[0]:
            chosen = Preemption(job.id, room.ids[i], tuple(v.id for v in victims), freed, lost)
            best = (key, chosen)
    return None if best is None else best[1]


def _deficit(room: Room, i: int, need: Mapping[str, float]) -> dict[str, float]:
    """What node ``i`` lacks for ``need``. Jobs already stopping do not count as room:
    what they free is kept for the job they were stopped for."""
    out = {}
    for name, qty in need.items():
        free = float(room.free_slots(i)) if name == SLOTS else room.free(i, name)
        if free + EPSILON < qty:
            out[name] = qty - free
    return out


def _gives(victim: RunningJob, name: str) -> float:
    return 1.0 if name == SLOTS else float(victim.resources.get(name, 0.0))


def _covers(deficit: Mapping[str, float], victims: Sequence[RunningJob]) -> bool:
    return all(sum(_gives(v, n) for v in victims) + EPSILON >= q for n, q in deficit.items())


def _cover(
    deficit: Mapping[str, float], candidates: Sequence[RunningJob], now: float
) -> list[RunningJob] | None:
    """Victims enough for ``deficit``: lowest priority and least progress first, each one
    that is not needed after all spared again (the most progressed first)."""
    if not _covers(deficit, candidates):
        return None
    chosen: list[RunningJob] = []
    for victim in sorted(candidates, key=lambda r: (r.priority, now - r.started_at, r.id)):
        if any(_gives(victim, n) > 0 for n in deficit):
            chosen.append(victim)
            if _covers(deficit, chosen):
                break
    for victim in sorted(chosen, key=lambda r: (r.started_at, r.id)):  # most progress first
        rest = [v for v in chosen if v is not victim]
        if _covers(deficit, rest):
            chosen = rest
    return chosen


def _freed(room: Room, i: int, victims: Sequence[RunningJob]) -> float:
    """Sum over the node's resources and slots of the fraction the victims free."""
    total = len(victims) / room.limit[i] if room.limit[i] > 0 else 0.0
    for name, cap in room.capacity[i].items():
        total += sum(v.resources.get(name, 0.0) for v in victims) / cap
    return total
