"""Placement: which pending jobs go to which live nodes (pure, deterministic, no I/O).

Jobs are decided in the order given (the store hands them out by priority, then FIFO).
For each job the nodes are **filtered** (the node serves the job's queue, has its required
labels with the same values, has a free slot counting prefetch, and has the requested
resources free, strictly: no prefetch on resources) and the survivors **ranked**: first by
how many of the job's affinity labels they match (a soft preference), then by the
policy's score, then by node id. A job that fits nowhere now is skipped, so later, smaller
jobs may still be placed (backfilling).

Speed: nodes are grouped by class (queues, labels, capacity, slots) and jobs by shape
(queue, resources, labels, affinity). A shape's candidates are found once per call and
kept in a heap; as nodes only get fuller during a call, a node that cannot take a shape
anymore leaves that shape's heap for good, and entries whose score went stale are
re-ranked when they come up (or, for policies whose score can rise as a node fills, each
new score is pushed to every heap holding the node).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from rota.model import Assignment, NodeRecord, NodeState, PendingJob

EPSILON = 1e-9  # the tolerance of ``rota.resources.fits``

Score = Callable[[int, int, float], float]
"""``score(in_flight, max_in_flight, load)``: the higher, the better the node.

``max_in_flight`` is ``slots + prefetch``; ``load`` is the largest of
``in_flight / max_in_flight`` and ``used / capacity`` over the node's declared resources.
"""


@dataclass(frozen=True, slots=True)
class Policy:
    """How the nodes that can take a job are ranked (after affinity): highest score wins,
    ties go to the smallest node id."""

    name: str
    score: Score
    monotone: bool = True
    """True if a node's score never rises as it takes jobs (the usual case). It lets
    :func:`place` re-rank lazily; ``False`` is always correct, just a little slower."""


@dataclass(slots=True)
class Placement:
    """What :func:`place` decided."""

    assignments: list[Assignment] = field(default_factory=list)  # in the order decided
    never: dict[str, str] = field(default_factory=dict)  # job id -> why no node ever could
    waiting: int = 0  # jobs some node could run, but none has room for now


def _least_loaded(in_flight: int, max_in_flight: int, load: float) -> float:
    return -load


def _spread(in_flight: int, max_in_flight: int, load: float) -> float:
    return float(-in_flight)


def _bin_pack(in_flight: int, max_in_flight: int, load: float) -> float:
    return load


POLICIES: dict[str, Policy] = {
    "least_loaded": Policy("least_loaded", _least_loaded),
    "spread": Policy("spread", _spread),
    "bin_pack": Policy("bin_pack", _bin_pack, monotone=False),
}


def get_policy(name: str) -> Policy:
    """The registered policy called ``name``; ``ValueError`` naming the known ones."""
    try:
        return POLICIES[name]
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        raise ValueError(f"unknown placement policy {name!r} (known: {known})") from None


def place(
    jobs: Sequence[PendingJob],
    nodes: Sequence[NodeRecord],
    policy: str | Policy = "least_loaded",
) -> Placement:
    """Decide where ``jobs`` (highest priority first) go among ``nodes``.

    Nodes that are not live are ignored. Neither argument is modified.
    """
    pol = policy if isinstance(policy, Policy) else get_policy(policy)
    out = Placement()
    if not jobs:
        return out
    cluster = _Cluster(nodes, pol)
    shapes: dict[tuple[object, ...], _Shape] = {}
    never = out.never
    append = out.assignments.append
    waiting = 0

    ids = cluster.ids
    free_slots = cluster.free_slots
    in_flight = cluster.in_flight
    limit = cluster.limit
    free = cluster.free
    used = cluster.used
    rank = cluster.rank
    load = cluster.load
    score = pol.score
    lazy = pol.monotone
    subscribers = cluster.subscribers
    heaps = cluster.heaps
    heappop = heapq.heappop
    heappush = heapq.heappush
    heapreplace = heapq.heapreplace

    for job in jobs:
        key = (
            job.queue,
            tuple(job.resources.items()),
            tuple(job.labels.items()),
            tuple(job.affinity.items()),
        )
        shape = shapes.get(key)
        if shape is None:
            shape = shapes[key] = cluster.shape(job)
        if shape.never is not None:
            never[job.id] = shape.never
            continue
        heap = shape.heap
        req = shape.request
        chosen = -1
        while heap:
            entry = heap[0]
            i = entry[3]
            if free_slots[i] <= 0 or not _fits(req, free[i]):
                heappop(heap)  # nodes only get fuller: it will never fit this shape again
                if not lazy:
                    subscribers[i].pop(shape.heap_id, None)
                continue
            if entry[1] != rank[i]:  # its score changed since this entry was pushed
                if lazy:
                    heapreplace(heap, (entry[0], rank[i], entry[2], i))
                else:
                    heappop(heap)  # the current score was pushed too
                continue
            chosen = i
            break
        if chosen < 0:
            waiting += 1
            continue

        append(Assignment(job.id, ids[chosen]))
        free_slots[chosen] -= 1
        in_flight[chosen] += 1
        node_free = free[chosen]
        node_used = used[chosen]
        for r, qty in req:
            node_free[r] -= qty
            node_used[r] += qty
        new_rank = -score(in_flight[chosen], limit[chosen], load(chosen))
        if new_rank != rank[chosen]:
            rank[chosen] = new_rank
            if not lazy:
                node_id = ids[chosen]
                for heap_id, neg_affinity in subscribers[chosen].items():
                    heappush(heaps[heap_id], (neg_affinity, new_rank, node_id, chosen))

    out.waiting = waiting
    return out


# ---- internals ------------------------------------------------------------------------

_Entry = tuple[int, float, str, int]  # (-affinity matches, -score, node id, node index)
_Request = tuple[tuple[int, float], ...]  # (resource index, quantity > 0)


def _fits(request: _Request, node_free: list[float]) -> bool:
    for r, qty in request:
        if node_free[r] + EPSILON < qty:
            return False
    return True


@dataclass(slots=True)
class _Shape:
    never: str | None = None
    request: _Request = ()
    heap: list[_Entry] = field(default_factory=list)
    heap_id: int = -1


@dataclass(slots=True)
class _NodeClass:
    index: int
    queues: frozenset[str]
    labels: Mapping[str, str]
    capacity: tuple[float, ...]  # by resource index
    max_in_flight: int
    members: list[int] = field(default_factory=list)


class _Cluster:
    """The live nodes as flat arrays (by node index), filled up as jobs are placed."""

    def __init__(self, nodes: Sequence[NodeRecord], policy: Policy) -> None:
        live = [n for n in nodes if n.state == NodeState.LIVE]
        self.resource_index: dict[str, int] = {}
        for n in live:
            for name in (*n.spec.resources, *n.used):
                self.resource_index.setdefault(name, len(self.resource_index))
        width = len(self.resource_index)

        self.ids: list[str] = []
        self.limit: list[int] = []
        self.in_flight: list[int] = []
        self.free_slots: list[int] = []
        self.declared: list[tuple[tuple[int, float], ...]] = []  # (resource, capacity > 0)
        self.free: list[list[float]] = []
        self.used: list[list[float]] = []
        self.rank: list[float] = []
        self.classes: dict[tuple[object, ...], _NodeClass] = {}
        self.by_queue: dict[str, list[_NodeClass]] = {}
        # for non-monotone policies: node index -> {heap id: -affinity} of heaps holding it
        self.subscribers: list[dict[int, int]] = []
        self.heaps: list[list[_Entry]] = []
        self._heap_ids: dict[tuple[object, ...], int] = {}
        self._policy = policy

        index = self.resource_index
        for i, n in enumerate(live):
            spec = n.spec
            max_in_flight = spec.slots + spec.prefetch
            capacity = [0.0] * width
            for name, qty in spec.resources.items():
                capacity[index[name]] = float(qty)
            node_used = [0.0] * width
            for name, qty in n.used.items():
                node_used[index[name]] += float(qty)
            self.ids.append(spec.id)
            self.limit.append(max_in_flight)
            self.in_flight.append(n.assigned + n.running)
            self.free_slots.append(max_in_flight - n.assigned - n.running)
            self.declared.append(tuple((r, c) for r, c in enumerate(capacity) if c > 0))
            self.free.append([c - u for c, u in zip(capacity, node_used, strict=True)])
            self.used.append(node_used)
            self.subscribers.append({})
            self.rank.append(-policy.score(self.in_flight[i], max_in_flight, self.load(i)))

            queues = frozenset(spec.queues)
            ckey = (queues, frozenset(spec.labels.items()), tuple(capacity), max_in_flight)
            cls = self.classes.get(ckey)
            if cls is None:
                cls = _NodeClass(
                    len(self.classes), queues, dict(spec.labels), tuple(capacity), max_in_flight
                )
                self.classes[ckey] = cls
                for queue in sorted(queues):
                    self.by_queue.setdefault(queue, []).append(cls)
            cls.members.append(i)

    def load(self, i: int) -> float:
        """The largest of the node's slot use and of its use of each declared resource."""
        max_in_flight = self.limit[i]
        value = self.in_flight[i] / max_in_flight if max_in_flight > 0 else 1.0
        node_used = self.used[i]
        for r, cap in self.declared[i]:
            ratio = node_used[r] / cap
            if ratio > value:
                value = ratio
        return value

    def shape(self, job: PendingJob) -> _Shape:
        """The candidates of jobs shaped like ``job``, or why no node could ever run it."""
        classes = self.by_queue.get(job.queue)
        if not classes:
            return _Shape(never=f"no live node serves queue {job.queue!r}")
        where = f"serving queue {job.queue!r}"
        labelled = [
            c for c in classes if all(c.labels.get(k) == v for k, v in job.labels.items())
        ]
        if not labelled:
            return _Shape(never=f"no live node {where} has labels {_show(job.labels)}")
        if job.labels:
            where += f" with labels {_show(job.labels)}"
        with_slots = [c for c in labelled if c.max_in_flight > 0]
        if not with_slots:
            return _Shape(never=f"no live node {where} has any job slots")

        wanted = {name: float(qty) for name, qty in job.resources.items() if qty > 0}
        index = self.resource_index
        for name, qty in sorted(wanted.items()):
            r = index.get(name)
            largest = 0.0 if r is None else max(c.capacity[r] for c in with_slots)
            if largest + EPSILON < qty:
                return _Shape(
                    never=f"{name}={qty:g} is more than any live node {where} has "
                    f"(largest: {largest:g})"
                )
        request: _Request = tuple(sorted((index[name], qty) for name, qty in wanted.items()))
        capable = [
            c for c in with_slots if all(c.capacity[r] + EPSILON >= qty for r, qty in request)
        ]
        if not capable:
            return _Shape(
                never=f"no single live node {where} has {_show(wanted)} at once",
            )

        tiers = [
            -sum(1 for k, v in job.affinity.items() if c.labels.get(k) == v) for c in capable
        ]
        # shapes with the same request over the same candidates share one heap
        hkey = (request, tuple((c.index, t) for c, t in zip(capable, tiers, strict=True)))
        heap_id = self._heap_ids.get(hkey)
        if heap_id is None:
            heap_id = self._heap_ids[hkey] = self._new_heap(request, capable, tiers)
        return _Shape(request=request, heap=self.heaps[heap_id], heap_id=heap_id)

    def _new_heap(self, request: _Request, capable: list[_NodeClass], tiers: list[int]) -> int:
        heap_id = len(self.heaps)
        ids, rank, free, free_slots = self.ids, self.rank, self.free, self.free_slots
        subscribe = not self._policy.monotone
        heap: list[_Entry] = []
        for cls, neg_affinity in zip(capable, tiers, strict=True):
            for i in cls.members:
                if free_slots[i] > 0 and _fits(request, free[i]):
                    heap.append((neg_affinity, rank[i], ids[i], i))
                    if subscribe:
                        self.subscribers[i][heap_id] = neg_affinity
        heapq.heapify(heap)
        self.heaps.append(heap)
        return heap_id


def _show(values: Mapping[str, object]) -> str:
    parts = []
    for k, v in sorted(values.items()):
        parts.append(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}")
    return ",".join(parts)
