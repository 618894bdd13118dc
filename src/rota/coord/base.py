"""The coordination boundary: who is alive (membership) and who leads (leadership).

Two implementations: ``rota.coord.store`` (the store's own leases and heartbeats, the
default) and ``rota.coord.zookeeper`` (ephemeral znodes and leader election, via kazoo).
Jobs, results and their states stay in the store either way; a coordinator only decides
which nodes count as alive and which scheduler may write, and the leader's writes are
fenced by the store (``Store.acquire_lease`` / ``Store.adopt_lease``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from rota.core.model import Lease, NodeSpec
from rota.store.contract import Store

# Session states a coordinator reports (``session()["state"]``).
CONNECTED = "connected"  # this process proves it is alive
SUSPENDED = "suspended"  # connection lost; the session may still be alive on the server
LOST = "lost"  # the session expired (or was never opened): ephemeral znodes are gone
CLOSED = "closed"


class Leadership(ABC):
    """A scheduler's seat in the election. One per scheduler; used from its thread."""

    @abstractmethod
    def lead(self, store: Store, ttl: float) -> Lease | None:
        """Keep or take the leadership; return the lease whose token fences every write of
        the leader, or ``None`` when this scheduler must not lead (place nothing)."""

    @abstractmethod
    def holds(self, lease: Lease) -> bool:
        """Cheap check before each cycle: may this scheduler still act under ``lease``?"""

    @abstractmethod
    def release(self, store: Store, lease: Lease) -> None:
        """Step down (on a clean stop) so that a standby takes over at once."""

    @abstractmethod
    def gone(self, store: Store) -> list[str]:
        """Ids of nodes the store counts live (or draining) whose membership has ended:
        they are dead now (the leader hands their jobs back). Empty when liveness is the
        store's heartbeat timeout (``Store.reap`` finds those)."""

    @abstractmethod
    def session(self) -> dict[str, Any]:
        """This scheduler's coordination session, for operators."""

    def close(self) -> None:
        """Leave the election and release connections (nothing to release by default)."""
        return None


class Membership(ABC):
    """A worker node's proof of life. Methods may block (call them off the event loop)."""

    @abstractmethod
    def join(self, spec: NodeSpec) -> None:
        """Announce the node (before it registers in the store); replaces an earlier
        announcement of this process. Raises when the coordinator cannot be reached."""

    @abstractmethod
    def refresh(self, load: str) -> None:
        """Called every heartbeat: re-announce after a new session, publish ``load``
        (idle, busy, full, draining) when it changed. Cheap when nothing changed."""

    @abstractmethod
    def can_take_work(self) -> bool:
        """Whether the node can prove it is alive now; if not it starts no new job (the
        running ones finish and report)."""

    @abstractmethod
    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from another thread) when ``can_take_work`` may have changed."""

    @abstractmethod
    def session(self) -> dict[str, Any]:
        """This node's coordination session, for operators."""

    def close(self) -> None:
        """Withdraw the announcement and release connections (nothing by default)."""
        return None


class Coordinator(ABC):
    """Makes the leadership and membership objects of one coordination service."""

    kind: str
    url: str

    @abstractmethod
    def leadership(self, holder: str) -> Leadership: ...

    @abstractmethod
    def membership(self) -> Membership: ...

    @abstractmethod
    def node_sessions(self) -> dict[str, dict[str, Any]] | None:
        """Each announced node's session by node id (``None``: the store decides liveness,
        see the nodes' heartbeats). For ``rota status`` and the dashboard."""

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.url}

    def close(self) -> None:
        """Release connections (nothing by default)."""
        return None
