"""Coordination by the store (the default): the ``scheduler`` lease elects the leader
(``Store.acquire_lease``: a higher token for each new holder), and a node is alive while
its heartbeats reach the store (``Store.heartbeat``; ``Store.reap`` declares silent nodes
dead after the failure timeout). Nothing to connect to but the store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rota.coord.base import CONNECTED, Coordinator, Leadership, Membership
from rota.core.model import Lease, NodeSpec
from rota.store.contract import SCHEDULER_LEASE, Store


class StoreLeadership(Leadership):
    def __init__(self, holder: str) -> None:
        self.holder = holder

    def lead(self, store: Store, ttl: float) -> Lease | None:
        return store.acquire_lease(SCHEDULER_LEASE, self.holder, ttl)

    def holds(self, lease: Lease) -> bool:
        return True  # the lease's expiry and the store's fence decide

    def release(self, store: Store, lease: Lease) -> None:
        store.release_lease(lease)

    def gone(self, store: Store) -> list[str]:
        return []  # silent nodes are found by Store.reap (heartbeat timeout)

    def session(self) -> dict[str, Any]:
        return {"state": "store lease"}


class StoreMembership(Membership):
    """A node proves it is alive by its store heartbeats; a node the store declared dead
    learns it from the heartbeat's reply (and registers again)."""

    def join(self, spec: NodeSpec) -> None:
        return None  # Store.register_node is the announcement

    def refresh(self, load: str) -> None:
        return None  # Store.heartbeat carries the proof

    def can_take_work(self) -> bool:
        return True

    def on_change(self, callback: Callable[[], None]) -> None:
        return None  # never changes

    def session(self) -> dict[str, Any]:
        return {"state": CONNECTED, "by": "store heartbeats"}


class StoreCoordinator(Coordinator):
    kind = "store"

    def __init__(self, url: str = "store") -> None:
        self.url = url

    def leadership(self, holder: str) -> Leadership:
        return StoreLeadership(holder)

    def membership(self) -> Membership:
        return StoreMembership()

    def node_sessions(self) -> dict[str, dict[str, Any]] | None:
        return None
