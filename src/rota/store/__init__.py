"""Stores: ``open_store(url)`` picks the implementation from the URL's scheme."""

from __future__ import annotations

import os

from rota.core.errors import InvalidOption
from rota.store.contract import SCHEDULER_LEASE, Store

DEFAULT_URL = "sqlite:///rota.db"

__all__ = ["DEFAULT_URL", "SCHEDULER_LEASE", "Store", "open_store", "resolve_url"]


def resolve_url(url: str | None = None) -> str:
    """``ROTA_STORE`` overrides the given URL; SQLite in ./rota.db is the default."""
    return os.environ.get("ROTA_STORE") or url or DEFAULT_URL


def open_store(url: str) -> Store:
    """A new store connection for ``url`` (``sqlite:///path``, ``redis://``,
    ``redis+sentinel://``, ``redis+cluster://``, ``postgresql://``, or libpq's
    ``host=a,b dbname=d target_session_attrs=read-write`` with ``schema=``)."""
    if "://" not in url and "=" in url.split(None, 1)[0]:  # libpq's "host=a,b dbname=..."
        from rota.store.postgres.hosts import conninfo_to_url

        url = conninfo_to_url(url)
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        from rota.store.sqlite import SQLiteStore

        return SQLiteStore(url)
    if scheme in ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster"):
        try:
            from rota.store.redis import RedisStore  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:  # pragma: no cover - depends on installed extras
            raise InvalidOption(
                f"the Redis store needs 'pip install rota[redis]' ({exc})"
            ) from None
        store: Store = RedisStore(url)
        return store
    if scheme in ("postgresql", "postgres"):
        try:
            from rota.store.postgres import PostgresStore  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:  # pragma: no cover - depends on installed extras
            raise InvalidOption(
                f"the PostgreSQL store needs 'pip install rota[postgres]' ({exc})"
            ) from None
        pg: Store = PostgresStore(url)
        return pg
    raise InvalidOption(f"unknown store URL scheme {scheme!r} (sqlite, redis, postgresql)")
