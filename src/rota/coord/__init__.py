"""Coordination: who is alive and who leads (``rota.coord.base``), by the store (the
default) or by ZooKeeper (``rota[zookeeper]``). Chosen by URL: ``store`` or
``zookeeper://host:2181/root``, from ``Rota(coordinator=...)``, ``--coordinator`` or
``$ROTA_COORDINATOR``."""

from __future__ import annotations

import os

from rota.coord.base import CONNECTED, LOST, SUSPENDED, Coordinator, Leadership, Membership
from rota.coord.store import StoreCoordinator
from rota.core.errors import InvalidOption, RotaError

ENV_VAR = "ROTA_COORDINATOR"
STORE = "store"

__all__ = [
    "CONNECTED",
    "ENV_VAR",
    "LOST",
    "STORE",
    "SUSPENDED",
    "Coordinator",
    "Leadership",
    "Membership",
    "open_coordinator",
    "resolve_coordinator",
]


def resolve_coordinator(url: str | None = None) -> str:
    """An explicit URL, else ``$ROTA_COORDINATOR``, else ``store``."""
    return url or os.environ.get(ENV_VAR) or STORE


def open_coordinator(url: str | None = None) -> Coordinator:
    """The coordinator a URL names (see ``resolve_coordinator``); connects lazily."""
    resolved = resolve_coordinator(url)
    if resolved == STORE:
        return StoreCoordinator()
    if resolved.startswith("zookeeper://"):
        try:
            from rota.coord.zookeeper import ZooKeeperCoordinator
        except ImportError as exc:
            raise RotaError(
                f"ZooKeeper coordination needs kazoo: pip install rota[zookeeper] ({exc})"
            ) from None
        return ZooKeeperCoordinator(resolved)
    raise InvalidOption(f"unknown coordinator {resolved!r}: 'store' or zookeeper://host:port/root")
