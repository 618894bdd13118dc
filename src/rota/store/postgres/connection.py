"""How the PostgreSQL store talks to PostgreSQL: its URL, the connection pool, running a
statement (dropped connections, errors as rota errors) and the migrations."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import orjson
import psycopg
from psycopg import pq, sql
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout

from rota.core.errors import InvalidOption, StoreError
from rota.store.contract import split_attempt_history
from rota.store.postgres.codec import short_hash
from rota.store.postgres.hosts import with_query
from rota.store.postgres.queries import QUERIES, migrations

T = TypeVar("T")
Conn = psycopg.Connection[Any]
DEFAULT_SCHEMA = "rota"
# The server refused the statement before running it (or aborted it): safe to run again.
NOT_RUN = frozenset({"57P01", "57P02", "57P03"})


def refuse_bad_credentials(conninfo: str, kwargs: dict[str, Any]) -> None:
    """One connection before the pool's: a refused role, password or database fails at
    once with the server's reason (the pool would retry it until its timeout); any other
    failure (a server still starting) is left to the pool's retries."""
    try:
        psycopg.connect(conninfo, connect_timeout=10, **kwargs).close()
    except psycopg.OperationalError as exc:
        text = str(exc)
        if "authentication failed" in text or "does not exist" in text or "no pg_hba" in text:
            raise StoreError(f"PostgreSQL refused the connection: {text.strip()}") from None


def parse_url(url: str) -> tuple[str, str, bool]:
    """``(libpq conninfo, schema, auto_migrate)`` from a store URL."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise InvalidOption(f"not a PostgreSQL URL: {url!r}")
    schema, auto_migrate = DEFAULT_SCHEMA, True
    kept = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "schema":
            schema = value
        elif key == "auto_migrate":
            if value.lower() not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
                raise InvalidOption(f"auto_migrate must be 0 or 1, got {value!r}")
            auto_migrate = value.lower() in ("1", "true", "yes", "on")
        else:
            kept.append((key, value))
    if not schema or len(schema.encode()) > 63:
        raise InvalidOption(f"schema must be a name of 1 to 63 bytes, got {schema!r}")
    conninfo = with_query(parts, kept)  # multi-host URLs too (hosts.py)
    return conninfo, schema, auto_migrate


def check_connection(conn: Conn) -> None:
    """A check at each checkout that costs no round trip (``_live_connection``): read what
    the server may have sent while the connection was idle (e.g. a termination notice,
    then end of file)."""
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    pgconn = conn.pgconn
    for _ in range(2):
        pgconn.consume_input()  # raises OperationalError once the server has hung up
    if pgconn.status != pq.ConnStatus.OK or pgconn.transaction_status != pq.TransactionStatus.IDLE:
        raise psycopg.OperationalError("the connection is not usable")


class PostgresConnection:
    """A PostgreSQL store's connection pool, statements and migrations."""

    def __init__(self, url: str, *, pool_size: int = 2, timeout: float = 15.0) -> None:
        self.url = url
        rest, self.attempt_history = split_attempt_history(url)
        self.conninfo, self.schema, self.auto_migrate = parse_url(rest)
        self.application_name = f"rota {self.schema}"[:63]
        ns = self.schema if len(self.schema) <= 40 else f"rota_{short_hash(self.schema)}"
        self.pending_channel = f"{ns}:pending"
        self.done_channel = f"{ns}:done"
        self.node_prefix = f"{ns}:node:"
        self._pool_size = max(1, pool_size)
        self._timeout = timeout
        self._pool: ConnectionPool[Conn] | None = None
        self._ready = not self.auto_migrate
        self._closed = False
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"PostgresStore(schema={self.schema!r})"

    # ---- connections ---------------------------------------------------------------
    def _connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"autocommit": True}
        if "application_name" not in self.conninfo:
            kwargs["application_name"] = self.application_name
        return kwargs

    def _configure(self, conn: Conn) -> None:
        set_json_loads(orjson.loads, conn)
        path = sql.Identifier(self.schema).as_string(conn)
        conn.execute(QUERIES["set_search_path"], {"search_path": path, "is_local": False})
        conn.execute(QUERIES["session_settings"])

    def _after_fork(self) -> None:
        """In a forked child, forget the parent's connections (without closing them)."""
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._pool = None

    def _get_pool(self) -> ConnectionPool[Conn]:
        if self._closed:
            raise StoreError("the PostgreSQL store is closed")
        self._after_fork()
        if self._pool is None:
            refuse_bad_credentials(self.conninfo, self._connect_kwargs())
            pool: ConnectionPool[Conn] = ConnectionPool(
                self.conninfo,
                kwargs=self._connect_kwargs(),
                min_size=1,
                max_size=self._pool_size,
                open=False,
                configure=self._configure,
                timeout=self._timeout,
                name=self.application_name,
                num_workers=1,
            )
            pool.open(wait=False)
            self._pool = pool
        return self._pool

    @contextmanager
    def _live_connection(self, pool: ConnectionPool[Conn]) -> Iterator[Conn]:
        """A pooled connection that :func:`check_connection` found usable. A dead one (the
        server hung up while it was idle) is closed and handed back, so the pool replaces
        it, and the next is taken at once: the pool's own check would back off (1 s, 2 s,
        4 s...) between tries, which under repeated disconnections outgrew every lease."""
        for _ in range(self._pool_size + 3):
            conn = pool.getconn()
            try:
                check_connection(conn)
            except psycopg.OperationalError:
                conn.close()
                pool.putconn(conn)
                continue
            try:
                yield conn
            finally:
                pool.putconn(conn)
            return
        raise psycopg.OperationalError("no usable connection in the pool")

    def _before_statement(self) -> None:
        """Called before each statement (the listener reads its notifications there)."""

    def _run(self, fn: Callable[[Conn], T], *, idempotent: bool = False, ready: bool = True) -> T:
        """Run ``fn`` on a pooled connection. A connection the server dropped is replaced and
        ``fn`` run again when it surely did not run (or is idempotent)."""
        if ready and not self._ready:
            self.migrate()
            self._ready = True
        self._before_statement()
        pool = self._get_pool()
        for attempt in (0, 1):
            try:
                with self._live_connection(pool) as conn:
                    return fn(conn)
            except PoolTimeout as exc:
                raise StoreError(f"PostgreSQL is not reachable ({exc})") from exc
            except psycopg.OperationalError as exc:
                again = exc.sqlstate in NOT_RUN or (idempotent and exc.sqlstate is None)
                if attempt == 0 and again:
                    continue
                raise StoreError(f"PostgreSQL store: {exc}") from exc
            except psycopg.Error as exc:
                raise StoreError(f"PostgreSQL store: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _one(self, name: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        """The first row of the named query (``None`` if none)."""

        def op(conn: Conn) -> Any:
            return conn.execute(QUERIES[name], params).fetchone()

        return self._run(op, **kw)

    def _all(self, name: str, params: dict[str, Any] | None = None, **kw: Any) -> list[Any]:
        def op(conn: Conn) -> list[Any]:
            return conn.execute(QUERIES[name], params).fetchall()

        return self._run(op, **kw)

    def node_channel(self, node_id: str) -> str:
        return self.node_prefix + short_hash(node_id)

    def close(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if os.getpid() != self._pid:
            return  # a forked child: the connections are the parent's, leave them be
        if pool is not None:
            pool.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            if not self._closed:
                self.close()
        except Exception:
            pass

    # ---- migrations ----------------------------------------------------------------
    def migrate(self) -> list[str]:
        """Apply the pending files of ``migrations/`` in order, each recorded in
        ``rota_migrations``, in one transaction under an advisory lock (so concurrent first
        uses don't race). Creates the schema if missing. Returns the names applied."""

        def op(conn: Conn) -> list[str]:
            applied: list[str] = []
            with conn.transaction():
                conn.execute(QUERIES["migration_lock"], {"key": f"rota.migrate:{self.schema}"})
                exists = conn.execute(QUERIES["schema_exists"], {"schema": self.schema})
                if not exists.fetchone()[0]:  # type: ignore[index]
                    create = sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema))
                    conn.execute(create)
                conn.execute(QUERIES["create_migrations_table"])
                done = {row[0] for row in conn.execute(QUERIES["applied_migrations"])}
                for version, name, text in migrations():
                    if version not in done:
                        conn.execute(text.encode())  # no parameters: may hold many statements
                        conn.execute(
                            QUERIES["record_migration"], {"version": version, "name": name}
                        )
                        applied.append(name)
            return applied

        applied = self._run(op, idempotent=True, ready=False)
        self._ready = True
        return applied
