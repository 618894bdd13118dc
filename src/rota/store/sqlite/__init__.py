"""The embedded SQLite store (the default)."""

from rota.store.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
