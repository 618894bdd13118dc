"""The PostgreSQL store (``pip install rota[postgres]``)."""

from rota.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
