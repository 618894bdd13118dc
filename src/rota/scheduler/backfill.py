"""Conservative backfill, as in Slurm (pure).

A job's ``timeout`` is its worst-case run time: a job started at ``s`` is gone by
``s + timeout`` (a job without a timeout may run forever). The ``Timeline`` knows, per
node, when the room held by each running job comes back, and the *holds*: room promised
to a blocked job from its reservation's start.

- A job (or gang) that cannot be placed now gets a reservation: the earliest time at which,
  on the nodes that free soonest, it fits for its whole worst-case run, given the running
  work and the reservations made before it (``reserve``).
- A later job may start now on a node only if, at every moment of its own worst-case run,
  the node still has room for every reservation there (``allows``): either its timeout
  ends before the reservation starts, or it fits beside the reservation.

So a job placed by backfill never pushes back a reservation made before it: a big job is
never delayed by a small one. Reservations are made afresh every cycle, in the order jobs
are offered, so one whose room frees early moves earlier.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rota.core.model import PendingJob, RunningJob
from rota.scheduler.fit import SLOTS, Room, demand
from rota.scheduler.gangs import place_gang
from rota.scheduler.placement import EPSILON

INF = math.inf


@dataclass(frozen=True, slots=True)
class Reservation:
    """Room promised to ``job_ids`` (a job or a gang's members) on ``nodes`` (one per
    member) from ``start`` until ``end`` (store clock; ``inf`` without a timeout)."""

    job_ids: tuple[str, ...]
    nodes: tuple[str, ...]
    start: float
    end: float


@dataclass(slots=True)
class _Hold:
    start: float
    end: float
    need: dict[str, float]  # resources and slots
    owners: frozenset[str]


def worst_case_end(started_at: float, timeout: float | None) -> float:
    return INF if timeout is None else started_at + timeout


class Timeline:
    """When each node's room comes back, and what is promised to reservations."""

    def __init__(self, room: Room, running: Sequence[RunningJob], now: float) -> None:
        self.room = room
        self.now = now
        # per node: (worst-case end, room it gives back, job id)
        self.ends: list[list[tuple[float, dict[str, float], str]]] = [[] for _ in range(len(room))]
        self.holds: list[list[_Hold]] = [[] for _ in range(len(room))]
        self.reservations: list[Reservation] = []
        for r in running:
            i = room.index.get(r.node_id)
            if i is not None:
                end = now if r.stopping else worst_case_end(r.started_at, r.timeout)
                self.ends[i].append((end, _need(r.resources), r.id))

    def started(self, i: int, job: PendingJob) -> None:
        """``job`` was placed on node ``i`` now (``room`` already counts it)."""
        self.ends[i].append((worst_case_end(self.now, job.timeout), demand(job), job.id))

    def free_at(
        self, i: int, t: float, names: Sequence[str], owners: frozenset[str]
    ) -> list[float]:
        """Free room of ``names`` on node ``i`` at time ``t``: what is free now, plus what
        running work gives back by ``t``, minus the holds of others in force at ``t``."""
        room = self.room
        out = [float(room.free_slots(i)) if name == SLOTS else room.free(i, name) for name in names]
        for end, need, _ in self.ends[i]:
            if end <= t:
                for k, name in enumerate(names):
                    out[k] += need.get(name, 0.0)
        for hold in self.holds[i]:
            if hold.start <= t < hold.end and not hold.owners & owners:
                for k, name in enumerate(names):
                    out[k] -= hold.need.get(name, 0.0)
        return out

    def allows(self, i: int, job: PendingJob, owners: frozenset[str] = frozenset()) -> bool:
        """Whether ``job`` may start on node ``i`` now without delaying a reservation."""
        holds = self.holds[i]
        if not holds:
            return True
        need = demand(job)
        names = list(need)
        end = worst_case_end(self.now, job.timeout)
        checks = {self.now} | {
            h.start for h in holds if self.now < h.start < end and not h.owners & owners
        }
        for t in checks:
            free = self.free_at(i, t, names, owners)
            if any(f + EPSILON < need[name] for f, name in zip(free, names, strict=True)):
                return False
        return True

    def reserve(
        self, members: Sequence[PendingJob], strategy: str, now: float
    ) -> Reservation | None:
        """Reserve the earliest room for ``members`` (a job, or a gang with ``strategy``)
        for their worst-case run, and hold it; None if no time is known when they fit."""
        room = self.room
        owners = frozenset(j.id for j in members)
        duration = max((INF if j.timeout is None else j.timeout) for j in members)
        nodes = sorted({i for j in members for i in room.eligible(j)})
        if not nodes:
            return None
        names = sorted({n for j in members for n in demand(j)})
        if len(members) == 1:
            return self._reserve_one(members[0], nodes, names, duration, owners, now)
        times = {now}
        for i in nodes:
            times.update(e[0] for e in self.ends[i] if now < e[0] < INF)
            times.update(h.end for h in self.holds[i] if now < h.end < INF)
        for t in sorted(times):
            view = self._window(nodes, names, t, duration, owners)
            placed = place_gang(members, view, strategy)
            if placed is not None:
                return self._hold(members, placed, t, t + duration, owners)
        return None

    def _reserve_one(
        self,
        job: PendingJob,
        nodes: list[int],
        names: list[str],
        duration: float,
        owners: frozenset[str],
        now: float,
    ) -> Reservation | None:
        """A single job: node by node, the earliest time its room is free for its whole
        worst-case run; the earliest of those wins (ties: placement order)."""
        room = self.room
        need = demand(job)
        best: tuple[float, tuple[int, float, str]] | None = None
        chosen = -1
        for i in nodes:
            if not room.could_ever(i, job):
                continue
            times = {now} | {e[0] for e in self.ends[i] if now < e[0] < INF}
            times |= {h.end for h in self.holds[i] if now < h.end < INF}
            for t in sorted(times):
                if best is not None and t > best[0]:
                    break
                checks = {t} | {h.start for h in self.holds[i] if t < h.start < t + duration}
                if all(
                    f + EPSILON >= need[name]
                    for c in checks
                    for f, name in zip(self.free_at(i, c, names, owners), names, strict=True)
                ):
                    key = (t, room.rank(i, job))
                    if best is None or key < best:
                        best, chosen = key, i
                    break
        if best is None:
            return None
        return self._hold([job], [chosen], best[0], best[0] + duration, owners)

    def _window(
        self, nodes: list[int], names: list[str], t: float, duration: float, owners: frozenset[str]
    ) -> Room:
        """A what-if room holding, per node, the least free room over ``[t, t+duration)``."""
        view = self.room.what_if()
        for i in range(len(view)):
            view.in_flight[i] = view.limit[i]  # nodes the members cannot use: no room
        for i in nodes:
            checks = {t} | {h.start for h in self.holds[i] if t < h.start < t + duration}
            least = [INF] * len(names)
            for c in checks:
                least = [
                    min(a, b) for a, b in zip(least, self.free_at(i, c, names, owners), strict=True)
                ]
            for name, free in zip(names, least, strict=True):
                if name == SLOTS:
                    view.in_flight[i] = view.limit[i] - int(free + EPSILON)
                else:
                    view.used[i][name] = view.capacity[i].get(name, 0.0) - free
        return view

    def _hold(
        self,
        members: Sequence[PendingJob],
        placed: list[int],
        start: float,
        end: float,
        owners: frozenset[str],
    ) -> Reservation:
        for job, i in zip(members, placed, strict=True):
            self.holds[i].append(_Hold(start, end, demand(job), owners))
        found = Reservation(
            tuple(j.id for j in members), tuple(self.room.ids[i] for i in placed), start, end
        )
        self.reservations.append(found)
        return found

    def hold_now(self, job: PendingJob, node: int) -> None:
        """Keep room on ``node`` for ``job`` from now (the room its preemption frees)."""
        owners = frozenset({job.id})
        end = worst_case_end(self.now, job.timeout)
        self._hold([job], [node], self.now, end, owners)


def _need(resources: dict[str, float]) -> dict[str, float]:
    out = {k: float(v) for k, v in resources.items() if v > 0}
    out[SLOTS] = out.get(SLOTS, 0.0) + 1.0
    return out
