"""The live nodes as the allocation policies see them (pure, no I/O).

``Room`` is the feasibility-then-ranking step of :func:`rota.scheduler.placement.place`
taken one job at a time: a node can take a job when it serves the job's queue, has the
job's required labels, a free slot (counting prefetch) and the requested resources free;
among those, the node with the most affinity labels matched wins, then the placement
policy's score, then the smallest node id. It trades ``place``'s heaps (fast, but all
decisions in one pass) for plain loops, so policies can interleave decisions (fair share),
place several jobs at once or not at all (gangs), ask about the room at a future time
(backfill) and try what-ifs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

from rota.core.model import NodeRecord, NodeState, PendingJob
from rota.core.resources import Resources
from rota.scheduler.placement import EPSILON, Policy

SLOTS = "slots"  # the job slot every job takes, counted like a resource in shares


def demand(job: PendingJob) -> Resources:
    """What ``job`` takes while it runs: its resources and one slot."""
    out = {name: float(qty) for name, qty in job.resources.items() if qty > 0}
    out[SLOTS] = out.get(SLOTS, 0.0) + 1.0
    return out


class Room:
    """Free slots and resources per live node; ``take``/``give`` update them."""

    def __init__(self, nodes: Sequence[NodeRecord], policy: Policy) -> None:
        live = [n for n in nodes if n.state == NodeState.LIVE]
        self.policy = policy
        self.ids = [n.spec.id for n in live]
        self.index = {node_id: i for i, node_id in enumerate(self.ids)}
        self.queues = [frozenset(n.spec.queues) for n in live]
        self.labels = [dict(n.spec.labels) for n in live]
        self.limit = [n.spec.slots + n.spec.prefetch for n in live]
        self.capacity: list[dict[str, float]] = [
            {k: float(v) for k, v in n.spec.resources.items() if v > 0} for n in live
        ]
        self.in_flight = [n.assigned + n.running for n in live]
        self.used: list[dict[str, float]] = [{k: float(v) for k, v in n.used.items()} for n in live]
        self._eligible: dict[tuple[object, ...], list[int]] = {}

    def __len__(self) -> int:
        return len(self.ids)

    # ---- feasibility ------------------------------------------------------------------
    def eligible(self, job: PendingJob) -> list[int]:
        """Nodes that serve the job's queue, have its labels and any slots at all."""
        key = (job.queue, tuple(job.labels.items()))
        found = self._eligible.get(key)
        if found is None:
            labels = job.labels.items()
            found = [
                i
                for i in range(len(self.ids))
                if job.queue in self.queues[i]
                and self.limit[i] > 0
                and all(self.labels[i].get(k) == v for k, v in labels)
            ]
            self._eligible[key] = found
        return found

    def free_slots(self, i: int) -> int:
        return self.limit[i] - self.in_flight[i]

    def free(self, i: int, name: str) -> float:
        return self.capacity[i].get(name, 0.0) - self.used[i].get(name, 0.0)

    def fits(self, i: int, job: PendingJob) -> bool:
        """Whether node ``i`` has a slot and the job's resources free now."""
        if self.free_slots(i) <= 0:
            return False
        cap, used = self.capacity[i], self.used[i]
        for name, qty in job.resources.items():
            if qty > 0 and cap.get(name, 0.0) - used.get(name, 0.0) + EPSILON < qty:
                return False
        return True

    def could_ever(self, i: int, job: PendingJob) -> bool:
        """Whether node ``i`` could run the job if it were empty."""
        cap = self.capacity[i]
        return all(qty <= 0 or cap.get(r, 0.0) + EPSILON >= qty for r, qty in job.resources.items())

    # ---- ranking ----------------------------------------------------------------------
    def load(self, i: int) -> float:
        """As in placement: the largest of slot use and use of each declared resource."""
        limit = self.limit[i]
        value = self.in_flight[i] / limit if limit > 0 else 1.0
        used = self.used[i]
        for name, cap in self.capacity[i].items():
            ratio = used.get(name, 0.0) / cap
            if ratio > value:
                value = ratio
        return value

    def rank(self, i: int, job: PendingJob) -> tuple[int, float, str]:
        """The lower, the better: (-affinity matched, -policy score, node id)."""
        labels = self.labels[i]
        matched = sum(1 for k, v in job.affinity.items() if labels.get(k) == v)
        score = self.policy.score(self.in_flight[i], self.limit[i], self.load(i))
        return (-matched, -score, self.ids[i])

    def best(self, job: PendingJob, allow: Callable[[int], bool] | None = None) -> int | None:
        """The best node that can take ``job`` now (and that ``allow`` accepts), or None."""
        best: tuple[int, float, str] | None = None
        chosen = None
        for i in self.eligible(job):
            if self.fits(i, job) and (allow is None or allow(i)):
                key = self.rank(i, job)
                if best is None or key < best:
                    best, chosen = key, i
        return chosen

    def ranked(self, job: PendingJob) -> list[int]:
        """The eligible nodes, best first (whether they fit now or not)."""
        return sorted(self.eligible(job), key=lambda i: self.rank(i, job))

    # ---- changes ----------------------------------------------------------------------
    def take(self, i: int, job: PendingJob) -> None:
        self.in_flight[i] += 1
        used = self.used[i]
        for name, qty in job.resources.items():
            if qty > 0:
                used[name] = used.get(name, 0.0) + qty

    def give(self, i: int, job: PendingJob) -> None:
        """Undo :meth:`take` (or free what a stopped job held)."""
        self.in_flight[i] -= 1
        used = self.used[i]
        for name, qty in job.resources.items():
            if qty > 0:
                used[name] = used.get(name, 0.0) - qty

    def give_back(self, i: int, resources: Resources, slots: int) -> None:
        """Free ``resources`` and ``slots`` on node ``i`` (what-if views)."""
        self.in_flight[i] -= slots
        used = self.used[i]
        for name, qty in resources.items():
            used[name] = used.get(name, 0.0) - qty

    def what_if(self) -> Room:
        """A copy whose changes do not touch this one (static data shared)."""
        other = copy.copy(self)
        other.in_flight = list(self.in_flight)
        other.used = [dict(u) for u in self.used]
        return other
