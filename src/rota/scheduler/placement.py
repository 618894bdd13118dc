"""Placement: which pending jobs go to which live nodes (pure, deterministic, no I/O).

Jobs are decided in the order given (the store hands them out by priority, then FIFO).
For each job the nodes are **filtered** (the node serves the job's queue, has its required
labels with the same values, has a free slot counting prefetch, and has the requested
resources free, strictly: no prefetch on resources) and the survivors **ranked**: first by
how many of the job's affinity labels they match (a soft preference), then by the
policy's score, then by node id. A job that fits nowhere now is skipped, so later, smaller
jobs may still be placed (backfilling).

Speed: nodes are grouped by class (queues, labels, capacity, slots) and jobs by shape
(queue, resources, labels, affinity); a shape's candidate classes, with the affinity of
each, are found once per call. Candidates sit in heaps, best first, each heap holding
the nodes that fit a *floor* request: ``()`` (any job: the heap shared by every request
with the same candidates), a request rounded down to a quarter octave, or the exact
request. Nodes only get fuller during a call, so a node that does not fit a heap's floor
leaves that heap for good, and an entry whose score went stale is re-ranked only when it
comes up (for policies whose score can rise as a node fills, the new scores of the nodes
placed on since are pushed instead). Nodes that fit the floor but not the job are
stepped over and kept; a request that steps over too many moves to a heap with a higher
floor (a copy of its current one), and a request that fits nowhere is not searched again.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from rota.core.model import Assignment, NodeRecord, NodeState, PendingJob

EPSILON = 1e-9  # the tolerance of ``rota.core.resources.fits``

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


PLACEABLE_LAG = 2 / 3
"""A node whose last heartbeat is older than this fraction of the failure timeout gets no
new job (see :func:`placeable`)."""


def placeable(nodes: Sequence[NodeRecord], now: float, failure_timeout: float) -> list[NodeRecord]:
    """The live nodes that heartbeat within ``PLACEABLE_LAG`` of ``failure_timeout`` (by
    the store's clock, ``now``): a node silent longer is likely about to be declared dead,
    and a job placed on it would wait for the reap to be placed again. Such a node keeps
    what it holds; it takes new jobs again with its next heartbeat. The lag counts from
    the freshest heartbeat when even that one is older than ``now``: when the whole fleet
    is late (a slow store), no node is singled out and placement goes on."""
    live = [n for n in nodes if n.state == NodeState.LIVE]
    newest = max((n.heartbeat_at for n in live), default=now)
    horizon = min(now, newest) - failure_timeout * PLACEABLE_LAG
    return [n for n in live if n.heartbeat_at >= horizon]


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
    shapes: dict[tuple[object, ...], str | _Candidates] = {}
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
    touched = cluster.touched
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
        cands = shapes.get(key)
        if cands is None:
            cands = shapes[key] = cluster.shape(job)
        if isinstance(cands, str):
            never[job.id] = cands
            continue
        pool = cands.pool
        if not lazy and pool.seen < len(touched):
            cluster.catch_up(pool)
        heap = pool.heap
        floor = pool.floor
        req = cands.request
        exact = cands.exact
        chosen = -1
        skipped: list[_Entry] = []
        while heap:
            entry = heap[0]
            i = entry[3]
            if free_slots[i] <= 0 or not _fits(floor, free[i]):
                heappop(heap)  # nodes only get fuller: it will never fit this floor again
            elif entry[1] != rank[i]:  # its score changed since this entry was pushed
                if lazy:  # the score only got worse: rank it again
                    heapreplace(heap, (entry[0], rank[i], entry[2], i))
                else:  # catch_up() pushed the current score
                    heappop(heap)
            elif exact or _fits(req, free[i]):
                chosen = i
                break
            else:
                skipped.append(heappop(heap))  # too full for this job, not for the floor
                if len(skipped) == _SKIP_LIMIT and cluster.known_to_fail(cands):
                    break
        if skipped:
            for entry in skipped:
                heappush(heap, entry)
            if chosen < 0:
                cluster.failed(cands)
            elif len(skipped) > _SKIP_LIMIT:
                cluster.raise_floor(cands)
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
                touched.append(chosen)

    out.waiting = waiting
    return out


# ---- internals ------------------------------------------------------------------------

_Entry = tuple[int, float, str, int]  # (-affinity matches, -score, node id, node index)
_Request = tuple[tuple[int, float], ...]  # (resource index, quantity > 0), sorted
_Tiers = tuple[tuple[int, int], ...]  # (node class index, -affinity matches)
_SKIP_LIMIT = 8  # a request stepping over more nodes than this moves to a higher floor
_RAISED_ENTRIES = 1 << 22  # bound on the entries copied into higher floors (memory)
_FAILED_KEPT = 32  # failed requests remembered per set of candidates
_STALE_SLACK = 64  # non-monotone policies: a heap is rid of stale entries past 2 x + this


def _fits(request: _Request, node_free: list[float]) -> bool:
    # a plain loop: about 2.5x faster than all() over a generator, and this is the hot path
    for r, qty in request:  # noqa: SIM110
        if node_free[r] + EPSILON < qty:
            return False
    return True


def _covers(request: _Request, other: _Request) -> bool:
    """Whether ``request`` asks for at least as much as ``other`` of every resource."""
    asked = dict(request)
    return all(asked.get(r, 0.0) >= qty for r, qty in other)


def _quarter_octave(qty: float) -> float:
    """``qty`` rounded down to a power of 2**0.25 (1, 1.19, 1.41, 1.68, 2, ...)."""
    rounded = math.pow(2.0, math.floor(4.0 * math.log2(qty)) / 4.0)
    return min(rounded, qty)


@dataclass(slots=True, eq=False)
class _Pool:
    """Nodes of some classes (each with an affinity tier) that fit ``floor``, best first."""

    tiers: dict[int, int]  # node class index -> -(affinity labels matched)
    floor: _Request
    heap: list[_Entry]
    seen: int = 0  # non-monotone policies: how much of ``touched`` the heap reflects
    built: int = 0  # non-monotone policies: the heap's size when last rid of stale entries


@dataclass(slots=True, eq=False)
class _Candidates:
    """Where the jobs asking for one request (resources) among some classes may go."""

    tiers: _Tiers
    request: _Request
    pool: _Pool
    exact: bool = False  # the pool's floor is the request: no node to step over


@dataclass(slots=True, eq=False)
class _NodeClass:
    index: int
    queues: frozenset[str]
    labels: Mapping[str, str]
    capacity: tuple[float, ...]  # by resource index
    max_in_flight: int
    members: list[int] = field(default_factory=list)


_Eligible = tuple[str, list[tuple[_NodeClass, int]]]  # (how to name them, [(class, tier)])


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
        self.rank: list[float] = []  # -score: the lower, the better
        self.node_class: list[int] = []
        self.classes: dict[tuple[object, ...], _NodeClass] = {}
        self.by_queue: dict[str, list[_NodeClass]] = {}
        # non-monotone policies: the nodes whose score changed, in order (may repeat)
        self.touched: list[int] = []
        self._eligible: dict[tuple[object, ...], str | _Eligible] = {}
        self._candidates: dict[tuple[_Tiers, _Request], _Candidates] = {}
        self._pools: dict[tuple[_Tiers, _Request], _Pool] = {}
        self._raised_entries = 0
        self._exhausted = _Pool({}, (), [])  # the pool of requests that fit nowhere
        # requests that found no node among some candidates (no larger one will either)
        self._failed: dict[_Tiers, list[_Request]] = {}

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
            self.node_class.append(cls.index)

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

    def shape(self, job: PendingJob) -> str | _Candidates:
        """The candidates of jobs shaped like ``job``, or why no node could ever run it."""
        key = (job.queue, tuple(job.labels.items()), tuple(job.affinity.items()))
        found = self._eligible.get(key)
        if found is None:
            found = self._eligible[key] = self._eligible_classes(job)
        if isinstance(found, str):
            return found
        where, eligible = found

        wanted = {name: float(qty) for name, qty in job.resources.items() if qty > 0}
        index = self.resource_index
        for name, qty in sorted(wanted.items()):
            r = index.get(name)
            largest = 0.0 if r is None else max(c.capacity[r] for c, _ in eligible)
            if largest + EPSILON < qty:
                more = f"{name}={qty:g} is more than any live node {where} has"
                return f"{more} (largest: {largest:g})"
        request: _Request = tuple(sorted((index[name], qty) for name, qty in wanted.items()))
        tiers = tuple(
            (c.index, tier)
            for c, tier in eligible
            if all(c.capacity[r] + EPSILON >= qty for r, qty in request)
        )
        if not tiers:
            return f"no single live node {where} has {_show(wanted)} at once"

        cands = self._candidates.get((tiers, request))
        if cands is None:
            # start from the pool with the highest floor that other requests made
            rounded = tuple((r, _quarter_octave(qty)) for r, qty in request)
            pool = self._pools.get((tiers, request)) or self._pools.get((tiers, rounded))
            if pool is None:
                pool = self._pools.get((tiers, ()))
                if pool is None:
                    pool = self._pools[tiers, ()] = self._new_pool(tiers)
            cands = _Candidates(tiers, request, pool, exact=pool.floor == request)
            self._candidates[tiers, request] = cands
        return cands

    def _eligible_classes(self, job: PendingJob) -> str | _Eligible:
        """The classes with the job's queue, labels and a slot, each with its affinity tier
        (and how to name them), or why there are none."""
        classes = self.by_queue.get(job.queue)
        if not classes:
            return f"no live node serves queue {job.queue!r}"
        where = f"serving queue {job.queue!r}"
        labels = job.labels.items()
        labelled = [c for c in classes if all(c.labels.get(k) == v for k, v in labels)]
        if not labelled:
            return f"no live node {where} has labels {_show(job.labels)}"
        if job.labels:
            where += f" with labels {_show(job.labels)}"
        eligible = [
            (c, -sum(1 for k, v in job.affinity.items() if c.labels.get(k) == v))
            for c in labelled
            if c.max_in_flight > 0
        ]
        if not eligible:
            return f"no live node {where} has any job slots"
        return where, eligible

    def _new_pool(self, tiers: _Tiers) -> _Pool:
        """The pool of every request among ``tiers``: the members with a free slot."""
        ids, rank, free_slots = self.ids, self.rank, self.free_slots
        by_index = {cls.index: cls.members for cls in self.classes.values()}
        heap = [
            (tier, rank[i], ids[i], i)
            for index, tier in tiers
            for i in by_index[index]
            if free_slots[i] > 0
        ]
        heapq.heapify(heap)
        return _Pool(dict(tiers), (), heap, len(self.touched), len(heap))

    def raise_floor(self, cands: _Candidates) -> None:
        """Move ``cands`` to a pool with a higher floor (its request rounded down to a
        quarter octave, else the request itself), made as a copy of its current pool (a
        copy of a heap is a heap): the nodes its floor drops will not be stepped over
        again."""
        current = cands.pool
        rounded = tuple((r, _quarter_octave(qty)) for r, qty in cands.request)
        floor = rounded if current.floor != rounded else cands.request
        if floor == current.floor:
            return
        pool = self._pools.get((cands.tiers, floor))
        if pool is None:
            if self._raised_entries + len(current.heap) > _RAISED_ENTRIES:
                return  # memory bound: keep stepping over
            self._raised_entries += len(current.heap)
            heap = list(current.heap)
            pool = _Pool(current.tiers, floor, heap, current.seen, len(heap))
            self._pools[cands.tiers, floor] = pool
        cands.pool = pool
        cands.exact = floor == cands.request

    def failed(self, cands: _Candidates) -> None:
        """No node fits ``cands`` now, so none will during this call."""
        cands.pool = self._exhausted
        request = cands.request
        failed = self._failed.setdefault(cands.tiers, [])
        if not any(_covers(request, f) for f in failed):
            failed[:] = [f for f in failed if not _covers(f, request)][1 - _FAILED_KEPT :]
            failed.append(request)

    def known_to_fail(self, cands: _Candidates) -> bool:
        """Whether a request no larger than ``cands``'s already found no node."""
        return any(_covers(cands.request, f) for f in self._failed.get(cands.tiers, ()))

    def catch_up(self, pool: _Pool) -> None:
        """Non-monotone policies: push the current score of the nodes placed on since
        (or rebuild the heap when it is mostly stale entries)."""
        node_class, ids, rank = self.node_class, self.ids, self.rank
        free_slots, free = self.free_slots, self.free
        tiers, floor, heap = pool.tiers, pool.floor, pool.heap
        for i in dict.fromkeys(self.touched[pool.seen :]):
            tier = tiers.get(node_class[i])
            if tier is not None and free_slots[i] > 0 and _fits(floor, free[i]):
                heapq.heappush(heap, (tier, rank[i], ids[i], i))
        pool.seen = len(self.touched)
        if len(heap) > 2 * pool.built + _STALE_SLACK:
            # every node still in the pool has an entry with its current score
            heap[:] = {e[3]: e for e in heap if e[1] == rank[e[3]]}.values()
            heapq.heapify(heap)
            pool.built = len(heap)


def _show(values: Mapping[str, object]) -> str:
    parts = []
    for k, v in sorted(values.items()):
        parts.append(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}")
    return ",".join(parts)
