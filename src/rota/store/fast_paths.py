"""The store's optional speed shortcuts (:class:`FastPaths`), and the plain way to do the
same with the basic :class:`~rota.store.contract.Store` methods when a store lacks them.

Callers use the module functions (``complete_and_start(store, ...)``, ...): each calls the
store's own shortcut when it offers the capability, else the plain composition below,
written once. A store that offers some shortcuts only inherits :class:`PlainFastPaths` and
overrides those it does in one round trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, cast, runtime_checkable

from rota.core.model import JobRecord, Lease, NodeState, PlacementSnapshot
from rota.core.outcomes import Outcome

if TYPE_CHECKING:
    from rota.store.contract import AsyncClaims, SchedulerStore, Store, WorkerStore


@runtime_checkable
class FastPaths(Protocol):
    """What a store may do in one round trip that the basic methods do in several."""

    # Whether reserve_slots does anything (the scheduler skips computing them if not).
    reserves_slots: bool
    # Whether grant_claims does anything (workers then claim plain pending jobs).
    grants_claims: bool

    def complete_and_start(
        self, outcomes: Sequence[Outcome], node_id: str, limit: int, lease_ttl: float
    ) -> tuple[list[bool], list[JobRecord]]:
        """``complete(outcomes)`` then ``start_jobs(node_id, limit, lease_ttl)``: a worker
        reports what finished and claims what is next."""
        ...

    def async_claims(self) -> AsyncClaims | None:
        """A client for a worker's claim loop that runs on the caller's event loop (no
        thread hop per call), or ``None``: the worker then makes these calls through its
        I/O thread. The object is made here and connects on first use, from the event loop
        that uses it."""
        ...

    def placement_snapshot(
        self, lease: Lease, promote_limit: int, page: int, min_page: int, census: bool
    ) -> PlacementSnapshot:
        """What a scheduler cycle starts from: ``promote_due(lease, promote_limit)``, the
        live nodes, and the first ``pending_jobs`` page, sized to the nodes' free room
        clamped to ``[min_page, page]`` (with no room: ``page`` rows if ``census``, else
        none). Fenced (``LeaseLost``)."""
        ...

    def wait_for_pending_snapshot(
        self,
        timeout: float,
        lease: Lease,
        promote_limit: int,
        page: int,
        min_page: int,
        reserve: Mapping[str, Sequence[str]] | None = None,
    ) -> PlacementSnapshot | None:
        """``reserve_slots(lease, reserve)`` if given, ``wait_for_pending(timeout)``, then
        the ``placement_snapshot(lease, promote_limit, page, min_page, False)`` taken the
        moment the wait ended, so the scheduler's next cycle need not ask for it. ``None``:
        no snapshot; the caller takes its own."""
        ...

    def reserve_slots(self, lease: Lease, slots: Mapping[str, Sequence[str]]) -> None:
        """Replace the slots the leader reserves for plain jobs: ``slots[queue]`` lists
        live node ids (a node once per slot), in the order the placement policy chose.
        Until the next ``placement_snapshot`` (which drops them), a submit of a plain job
        (no resources, labels, affinity or limits; due now; no parents) finds its queue's
        first node that is still live and is assigned to it in the submit's own
        transaction, if no job is pending: it starts without waiting for a scheduler
        cycle. Fenced (``LeaseLost``)."""
        ...

    def grant_claims(self, lease: Lease, grants: Mapping[str, Sequence[str]]) -> None:
        """Replace the claim grant: ``grants[node_id]`` lists the queues whose plain
        pending jobs (no resources, labels, affinity, limits or parents) that node may
        claim itself. While the grant is current (the scheduler lease is held, unexpired,
        with ``lease``'s token), ``start_jobs`` and
        ``complete_and_start`` fill a live node's free slots, after its assigned jobs,
        from the head of the pending jobs in placement order (priority, then FIFO),
        stopping at the first job that is not plain or not of a granted queue: a
        ``--concurrency 1`` worker drains a backlog without a scheduler cycle between
        two jobs. Fenced (``LeaseLost``)."""
        ...


# ---- the plain compositions of basic methods (the fallback) ------------------------------
def plain_complete_and_start(
    store: WorkerStore, outcomes: Sequence[Outcome], node_id: str, limit: int, lease_ttl: float
) -> tuple[list[bool], list[JobRecord]]:
    accepted = store.complete(outcomes) if outcomes else []
    return accepted, store.start_jobs(node_id, limit, lease_ttl) if limit > 0 else []


def plain_placement_snapshot(
    store: SchedulerStore, lease: Lease, promote_limit: int, page: int, min_page: int, census: bool
) -> PlacementSnapshot:
    promoted = store.promote_due(lease, promote_limit)
    nodes = store.list_nodes([NodeState.LIVE])
    free = sum(max(0, n.spec.slots + n.spec.prefetch - n.in_flight) for n in nodes)
    if free > 0:
        size = min(page, max(min_page, free))
    elif census:
        size = page
    else:
        return PlacementSnapshot(promoted, nodes, [], 0)
    return PlacementSnapshot(promoted, nodes, store.pending_jobs(size), size)


def plain_wait_for_pending_snapshot(store: SchedulerStore, timeout: float) -> None:
    """Only the wait: no snapshot (nothing to reserve without the capability)."""
    store.wait_for_pending(timeout)


class PlainFastPaths:
    """:class:`FastPaths` by the plain compositions, for a store that overrides only some
    (``reserve_slots`` does nothing: ``reserves_slots`` is false)."""

    reserves_slots: bool = False
    grants_claims: bool = False

    def complete_and_start(
        self, outcomes: Sequence[Outcome], node_id: str, limit: int, lease_ttl: float
    ) -> tuple[list[bool], list[JobRecord]]:
        return plain_complete_and_start(self._store(), outcomes, node_id, limit, lease_ttl)

    def async_claims(self) -> AsyncClaims | None:
        return None

    def placement_snapshot(
        self, lease: Lease, promote_limit: int, page: int, min_page: int, census: bool
    ) -> PlacementSnapshot:
        return plain_placement_snapshot(self._store(), lease, promote_limit, page, min_page, census)

    def wait_for_pending_snapshot(
        self,
        timeout: float,
        lease: Lease,
        promote_limit: int,
        page: int,
        min_page: int,
        reserve: Mapping[str, Sequence[str]] | None = None,
    ) -> PlacementSnapshot | None:
        if reserve:
            self.reserve_slots(lease, reserve)
        plain_wait_for_pending_snapshot(self._store(), timeout)
        return None

    def reserve_slots(self, lease: Lease, slots: Mapping[str, Sequence[str]]) -> None:
        return None

    def grant_claims(self, lease: Lease, grants: Mapping[str, Sequence[str]]) -> None:
        return None

    def _store(self) -> Store:
        return cast("Store", self)  # mixed into a Store


# ---- what callers use ------------------------------------------------------------------
def complete_and_start(
    store: WorkerStore, outcomes: Sequence[Outcome], node_id: str, limit: int, lease_ttl: float
) -> tuple[list[bool], list[JobRecord]]:
    """:meth:`FastPaths.complete_and_start` if ``store`` has it, else the two calls."""
    if isinstance(store, FastPaths):
        return store.complete_and_start(outcomes, node_id, limit, lease_ttl)
    return plain_complete_and_start(store, outcomes, node_id, limit, lease_ttl)


def async_claims(store: WorkerStore) -> AsyncClaims | None:
    """:meth:`FastPaths.async_claims` if ``store`` has it, else ``None``."""
    return store.async_claims() if isinstance(store, FastPaths) else None


def placement_snapshot(
    store: SchedulerStore, lease: Lease, promote_limit: int, page: int, min_page: int, census: bool
) -> PlacementSnapshot:
    """:meth:`FastPaths.placement_snapshot` if ``store`` has it, else three calls."""
    if isinstance(store, FastPaths):
        return store.placement_snapshot(lease, promote_limit, page, min_page, census)
    return plain_placement_snapshot(store, lease, promote_limit, page, min_page, census)


def wait_for_pending_snapshot(
    store: SchedulerStore,
    timeout: float,
    lease: Lease,
    promote_limit: int,
    page: int,
    min_page: int,
    reserve: Mapping[str, Sequence[str]] | None = None,
) -> PlacementSnapshot | None:
    """:meth:`FastPaths.wait_for_pending_snapshot` if ``store`` has it, else only the wait
    (``None``)."""
    if isinstance(store, FastPaths):
        return store.wait_for_pending_snapshot(
            timeout, lease, promote_limit, page, min_page, reserve
        )
    plain_wait_for_pending_snapshot(store, timeout)
    return None


def reserves_slots(store: SchedulerStore) -> bool:
    """Whether ``store`` reserves slots for plain jobs (see :meth:`FastPaths.reserve_slots`)."""
    return isinstance(store, FastPaths) and bool(store.reserves_slots)


def reserve_slots(store: SchedulerStore, lease: Lease, slots: Mapping[str, Sequence[str]]) -> None:
    """:meth:`FastPaths.reserve_slots` if ``store`` has it, else nothing."""
    if isinstance(store, FastPaths):
        store.reserve_slots(lease, slots)


def grants_claims(store: SchedulerStore) -> bool:
    """Whether ``store`` lets workers claim plain jobs (see :meth:`FastPaths.grant_claims`)."""
    return isinstance(store, FastPaths) and bool(store.grants_claims)


def grant_claims(store: SchedulerStore, lease: Lease, grants: Mapping[str, Sequence[str]]) -> None:
    """:meth:`FastPaths.grant_claims` if ``store`` has it, else nothing."""
    if isinstance(store, FastPaths):
        store.grant_claims(lease, grants)
