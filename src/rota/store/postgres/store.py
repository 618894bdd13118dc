"""The PostgreSQL store: ``postgresql://user@host:5432/db?schema=rota``.

* psycopg 3 with a small connection pool (one ``PostgresStore`` is used by one thread at a
  time; many processes share the database). Connections are autocommit: a method is one
  statement where it can be (one round trip), or one explicit transaction.
* The schema is ``schema.sql``; every statement is a named query in
  ``queries.sql``, with server-bound parameters only. Migrations
  (``migrations/NNNN_name.sql``) are applied in order by :meth:`PostgresStore.migrate`
  under an advisory lock, recorded in ``rota_migrations``, automatically on first use unless
  the URL says ``?auto_migrate=0``.
* Times are double precision unix seconds from the server's clock (``rota_now()``).
* Claims (``assign``, ``start_jobs``) lock their rows with ``FOR UPDATE SKIP LOCKED``;
  fenced operations check the lease row (``FOR SHARE``) in the same statement/transaction.
* Wake-ups are ``NOTIFY`` in the writing transaction and ``LISTEN`` on a dedicated
  connection: channels ``<ns>:pending`` (placement work), ``<ns>:done`` (jobs finished) and
  ``<ns>:node:<md5(node id)[:16]>`` (a node's new work or cancellations), where ``<ns>`` is
  the schema name (hashed when long). A channel is LISTENed while someone waits on it
  (dropped after ``_LISTEN_IDLE`` seconds without a wait; ``done`` for the call only), so
  that unread notifications never hold back the server's notification queue.
* :meth:`PostgresStore.submit_in_transaction` enqueues with the caller's connection, inside
  the caller's transaction (a rollback leaves no job; NOTIFY is delivered on commit).
* Batch statements (submit, assign, complete, heartbeat) take column arrays, bound in
  binary, and lock rows in id order (so concurrent batches never deadlock).
* Workflows, unique jobs, schedules (issue 5): a batch using none of the flow fields is the
  one ``submit`` statement as before; otherwise one transaction claims its unique keys
  (``unique_keys``: ``INSERT ... ON CONFLICT DO UPDATE`` locks a held key, so concurrent
  submitters of a key queue up instead of racing; a holder that is final, gone or past its
  ``unique_for`` is replaced), locks the parents it names outside itself (``lock_parents``:
  a parent final already queues the child in ``settle_children``, any other is marked
  ``has_children``), then inserts (``submit_flow``). Every statement that ends jobs
  (complete, cancel_now, release_jobs, reap_jobs, resolve_dependencies) appends those with
  ``has_children`` to ``settle_parents`` (a CTE; assign and start_jobs pay nothing);
  :meth:`PostgresStore.resolve_dependencies` is one statement that turns those into
  waiting children (the partial GIN index ``jobs_children_idx``) and settles up to
  ``limit`` of them. ``fire_schedule`` is one transaction: compare-and-set ``last_tick``,
  then the job's insert (a taken id rolls both back).

URL parameters besides libpq's: ``schema`` (default ``rota``; created if missing),
``auto_migrate`` (``1``/``0``, default ``1``).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext, suppress
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import psycopg
from psycopg import pq, sql
from psycopg.rows import tuple_row
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout

from rota.core.errors import InvalidOption, LeaseLost, StoreError, SubmitError
from rota.core.model import (
    Assignment,
    HeartbeatReply,
    JobRecord,
    Lease,
    NewJob,
    NodeRecord,
    NodeSpec,
    NodeState,
    Outcome,
    PendingJob,
    ReapReport,
    ScheduleRecord,
)
from rota.core.states import FINAL_STATES, JobState
from rota.store.contract import Store

T = TypeVar("T")
Conn = psycopg.Connection[Any]

HERE = Path(__file__).resolve().parent
SCHEMA_FILE = HERE / "schema.sql"
QUERIES_FILE = HERE / "queries.sql"
MIGRATIONS_DIR = HERE / "migrations"

DEFAULT_SCHEMA = "rota"
_PARAM = re.compile(r"(?<!:):([A-Za-z_][A-Za-z0-9_]*)")
_NAME = re.compile(r"^--\s*name:\s*([A-Za-z_][A-Za-z0-9_]*)\s*$")
_MIGRATION = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.sql$")
# The server refused the statement before running it (or aborted it): safe to run again.
_NOT_RUN = frozenset({"57P01", "57P02", "57P03"})
_PRUNE_BATCH = 5000
_FIRST_PAGE = (-(2**62), 0)  # a cursor before every pending job: -priority > -2**62
_EMPTY_JSON = "{}"
# A channel nobody waited on for this long is UNLISTENed: a LISTENing connection that is not
# read holds back PostgreSQL's (global) notification queue.
_LISTEN_IDLE = 10.0
_TEND_EVERY = 1.0


def load_queries(text: str) -> dict[str, str]:
    """Parse ``-- name: NAME`` blocks into ``{name: sql}``, with ``:param`` turned into
    psycopg's binary placeholders ``%(param)b`` (comment lines dropped, a literal ``%``
    escaped). Binary parameters matter for the batch statements' arrays: adapting 20k-row
    column arrays in binary takes about half the time of text."""
    queries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        found = _NAME.match(line.strip())
        if found:
            current = queries.setdefault(found.group(1), [])
            continue
        if current is None or line.strip().startswith("--"):
            continue
        current.append(line)
    out: dict[str, str] = {}
    for name, lines in queries.items():
        body = "\n".join(lines).strip().replace("%", "%%")
        out[name] = _PARAM.sub(r"%(\1)b", body)
    return out


QUERIES = load_queries(QUERIES_FILE.read_text(encoding="utf-8"))


def query(name: str) -> str:
    """The named query ``name``, ready for ``cursor.execute(query, {params})``."""
    return QUERIES[name]


def migrations() -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of every migration file, in order."""
    found = []
    for path in MIGRATIONS_DIR.iterdir():
        m = _MIGRATION.match(path.name)
        if m:
            found.append((int(m.group(1)), path.stem, path.read_text(encoding="utf-8")))
    found.sort()
    return found


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
    conninfo = urlunsplit(parts._replace(query=urlencode(kept)))
    return conninfo, schema, auto_migrate


def _md5(text: str, n: int = 16) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()[:n]


def _floats(value: Any) -> dict[str, float]:
    return {str(k): float(v) for k, v in (value or {}).items()}


def _json(value: dict[str, Any]) -> str:
    return orjson.dumps(value).decode() if value else _EMPTY_JSON


def _job(row: Sequence[Any]) -> JobRecord:
    """A ``JobRecord`` from a row listing the columns in the order of its fields."""
    (id_, task, queue, payload, priority, state, attempts, max_attempts, timeout, resources,
     labels, affinity, backoff_base, backoff_max, created_at, scheduled_at, node_id, token,
     started_at, finished_at, lease_expires_at, result, error, traceback, cancel_requested,
     seq, depends_on, pass_results, workflow_id, unique_key, concurrency_key, concurrency_limit,
     rate_limit) = row  # fmt: skip
    return JobRecord(
        id=id_,
        task=task,
        queue=queue,
        payload=payload,
        priority=priority,
        state=JobState(state),
        attempts=attempts,
        max_attempts=max_attempts,
        timeout=timeout,
        resources=_floats(resources),
        labels=dict(labels or {}),
        affinity=dict(affinity or {}),
        backoff_base=backoff_base,
        backoff_max=backoff_max,
        created_at=created_at,
        scheduled_at=scheduled_at,
        node_id=node_id,
        token=token,
        started_at=started_at,
        finished_at=finished_at,
        lease_expires_at=lease_expires_at,
        result=result,
        error=error,
        traceback=traceback,
        cancel_requested=cancel_requested,
        seq=seq,
        depends_on=tuple(depends_on) if depends_on else (),  # NULL columns: the defaults
        pass_results=bool(pass_results),
        workflow_id=workflow_id,
        unique_key=unique_key,
        concurrency_key=concurrency_key,
        concurrency_limit=concurrency_limit or 0,
        rate_limit=rate_limit,
    )


def _uses_flow(jobs: Sequence[NewJob]) -> bool:
    """Whether a job of the batch needs ``submit_flow`` (any issue-5 column set). A plain
    loop: it runs on every submit, and costs about 30 ns a job."""
    for j in jobs:
        if (
            j.depends_on
            or j.unique_key is not None
            or j.concurrency_key is not None
            or j.rate_limit is not None
            or j.workflow_id is not None
            or j.pass_results
            or j.concurrency_limit
        ):
            return True
    return False


def _refuse_bad_credentials(conninfo: str, kwargs: dict[str, Any]) -> None:
    """One connection before the pool's: a refused role, password or database fails at
    once with the server's reason (the pool would retry it until its timeout); any other
    failure (a server still starting) is left to the pool's retries."""
    try:
        psycopg.connect(conninfo, connect_timeout=10, **kwargs).close()
    except psycopg.OperationalError as exc:
        text = str(exc)
        if "authentication failed" in text or "does not exist" in text or "no pg_hba" in text:
            raise StoreError(f"PostgreSQL refused the connection: {text.strip()}") from None


def _check_connection(conn: Conn) -> None:
    """A pool check that costs no round trip: read what the server may have sent while the
    connection was idle (e.g. a termination notice, then end of file)."""
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    pgconn = conn.pgconn
    for _ in range(2):
        pgconn.consume_input()  # raises OperationalError once the server has hung up
    if pgconn.status != pq.ConnStatus.OK or pgconn.transaction_status != pq.TransactionStatus.IDLE:
        raise psycopg.OperationalError("the connection is not usable")


class PostgresStore(Store):
    """Jobs, nodes and leases in PostgreSQL (see the module docstring)."""

    def __init__(self, url: str, *, pool_size: int = 2, timeout: float = 15.0) -> None:
        self.url = url
        self.conninfo, self.schema, self.auto_migrate = parse_url(url)
        self.application_name = f"rota {self.schema}"[:63]
        ns = self.schema if len(self.schema) <= 40 else f"rota_{_md5(self.schema)}"
        self.pending_channel = f"{ns}:pending"
        self.done_channel = f"{ns}:done"
        self.node_prefix = f"{ns}:node:"
        self._pool_size = max(1, pool_size)
        self._timeout = timeout
        self._pool: ConnectionPool[Conn] | None = None
        self._ready = not self.auto_migrate
        self._listen_conn: Conn | None = None
        self._listening: set[str] = set()
        self._fired: set[str] = set()
        self._waited: dict[str, float] = {}  # channel -> when a wait last used it
        self._tended = 0.0
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
            self._listen_conn = None
            self._listening.clear()
            self._fired.clear()

    def _get_pool(self) -> ConnectionPool[Conn]:
        if self._closed:
            raise StoreError("the PostgreSQL store is closed")
        self._after_fork()
        if self._pool is None:
            _refuse_bad_credentials(self.conninfo, self._connect_kwargs())
            pool: ConnectionPool[Conn] = ConnectionPool(
                self.conninfo,
                kwargs=self._connect_kwargs(),
                min_size=1,
                max_size=self._pool_size,
                open=False,
                configure=self._configure,
                check=_check_connection,
                timeout=self._timeout,
                name=self.application_name,
                num_workers=1,
            )
            pool.open(wait=False)
            self._pool = pool
        return self._pool

    def _run(self, fn: Callable[[Conn], T], *, idempotent: bool = False, ready: bool = True) -> T:
        """Run ``fn`` on a pooled connection. A connection the server dropped is replaced and
        ``fn`` run again when it surely did not run (or is idempotent)."""
        if ready and not self._ready:
            self.migrate()
            self._ready = True
        if self._listen_conn is not None:
            self._tend_listener()
        pool = self._get_pool()
        for attempt in (0, 1):
            try:
                with pool.connection() as conn:
                    return fn(conn)
            except PoolTimeout as exc:
                raise StoreError(f"PostgreSQL is not reachable ({exc})") from exc
            except psycopg.OperationalError as exc:
                again = exc.sqlstate in _NOT_RUN or (idempotent and exc.sqlstate is None)
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
        return self.node_prefix + _md5(node_id)

    def close(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        listener, self._listen_conn = self._listen_conn, None
        if os.getpid() != self._pid:
            return  # a forked child: the connections are the parent's, leave them be
        if pool is not None:
            pool.close()
        if listener is not None:
            with suppress(Exception):
                listener.close()

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

    # ---- lifecycle and clock -------------------------------------------------------
    def now(self) -> float:
        return float(self._one("now", idempotent=True)[0])

    # ---- producers and operators ---------------------------------------------------
    def _submit_params(self, jobs: Sequence[NewJob]) -> dict[str, Any]:
        return {
            "ids": [j.id for j in jobs],
            "tasks": [j.task for j in jobs],
            "queues": [j.queue for j in jobs],
            "payloads": [j.payload for j in jobs],
            "priorities": [j.priority for j in jobs],
            "max_attempts": [j.max_attempts for j in jobs],
            "timeouts": [j.timeout for j in jobs],
            "resources": [_json(j.resources) for j in jobs],
            "labels": [_json(j.labels) for j in jobs],
            "affinity": [_json(j.affinity) for j in jobs],
            "delays": [float(j.delay) for j in jobs],
            "etas": [j.eta for j in jobs],
            "backoff_bases": [float(j.backoff_base) for j in jobs],
            "backoff_maxes": [float(j.backoff_max) for j in jobs],
            "pending_channel": self.pending_channel,
        }

    def _write_jobs(self, cur: psycopg.Cursor[Any], jobs: Sequence[NewJob]) -> list[str]:
        """Store ``jobs`` with ``cur``; returns the ids in their place. A batch without flow
        features is the one ``submit`` statement; otherwise the caller must have opened a
        transaction (several statements: unique keys, parents, then the insert)."""
        if not _uses_flow(jobs):
            params = self._submit_params(jobs)
            cur.execute(QUERIES["submit"], params)
            return list(params["ids"])
        return self._write_flow(cur, jobs)

    def _claim_unique_keys(
        self, cur: psycopg.Cursor[Any], jobs: Sequence[NewJob]
    ) -> dict[str, str]:
        """Apply ``unique_key``: returns ``{id of a job not to store: id returned instead}``.
        Within the batch the first job of a key wins; across batches the key's row in
        ``unique_keys`` is taken (or locked, then taken over if its holder is over)."""
        alias: dict[str, str] = {}
        first: dict[str, NewJob] = {}
        for j in jobs:
            if j.unique_key is not None:
                winner = first.setdefault(j.unique_key, j)
                if winner is not j:
                    alias[j.id] = winner.id
        if not first:
            return alias

        def params(keys: list[str]) -> dict[str, Any]:
            return {
                "keys": keys,
                "job_ids": [first[k].id for k in keys],
                "unique_fors": [first[k].unique_for for k in keys],
            }

        rows = cur.execute(QUERIES["claim_unique_keys"], params(sorted(first))).fetchall()
        held = {key: holder for key, holder in rows if holder != first[key].id}
        if held:
            keys = sorted(held)
            taken = {row[0] for row in cur.execute(QUERIES["take_unique_keys"], params(keys))}
            for key in keys:
                if key not in taken:
                    alias[first[key].id] = held[key]
        return alias

    def _write_flow(self, cur: psycopg.Cursor[Any], jobs: Sequence[NewJob]) -> list[str]:
        alias = self._claim_unique_keys(cur, jobs)

        def final(job_id: str) -> str:
            while job_id in alias:
                job_id = alias[job_id]
            return job_id

        stored = [j for j in jobs if j.id not in alias]
        stored_ids = {j.id for j in stored}
        earlier: set[str] = set()  # ids of the batch seen so far (stored or not)
        parents: list[tuple[str, ...]] = []  # per stored job, after aliasing
        outside: dict[str, list[str]] = {}  # parent not stored by this batch -> children
        in_batch: set[str] = set()  # stored jobs that later stored jobs depend on
        for j in jobs:
            if j.id not in alias:
                mine = tuple(dict.fromkeys(final(p) if p in earlier else p for p in j.depends_on))
                for p in mine:
                    if p in stored_ids and p in earlier:
                        in_batch.add(p)
                    else:
                        outside.setdefault(p, []).append(j.id)
                parents.append(mine)
            earlier.add(j.id)
        settle: list[str] = []
        if outside:
            rows = cur.execute(QUERIES["lock_parents"], {"ids": sorted(outside)}).fetchall()
            states = {job_id: JobState(state) for job_id, state in rows}
            missing = [p for p in outside if p not in states]
            if missing:
                raise InvalidOption(
                    "depends_on names unknown job(s) (a parent must be stored already or come"
                    f" earlier in the batch): {', '.join(sorted(missing))}"
                )
            for p, children in outside.items():
                if states[p] in FINAL_STATES:
                    settle.extend(children)
        if stored:
            params = self._submit_params(stored)
            params.update(
                depends_on=[orjson.dumps(ps).decode() if ps else None for ps in parents],
                pass_results=[j.pass_results for j in stored],
                workflow_ids=[j.workflow_id for j in stored],
                unique_keys=[j.unique_key for j in stored],
                concurrency_keys=[j.concurrency_key for j in stored],
                concurrency_limits=[j.concurrency_limit for j in stored],
                rate_limits=[j.rate_limit for j in stored],
                has_children=[True if j.id in in_batch else None for j in stored],
                settle_ids=settle,
            )
            cur.execute(QUERIES["submit_flow"], params)
        return [final(j.id) for j in jobs]

    def submit(self, jobs: Sequence[NewJob]) -> list[str]:
        if not jobs:
            return []
        flow = _uses_flow(jobs)

        def op(conn: Conn) -> list[str]:
            try:
                if not flow:
                    params = self._submit_params(jobs)
                    conn.execute(QUERIES["submit"], params)
                    return list(params["ids"])
                with conn.transaction(), conn.cursor() as cur:
                    return self._write_flow(cur, jobs)
            except psycopg.errors.UniqueViolation as exc:  # rolled back: nothing is stored
                raise SubmitError(
                    f"a job with one of these ids is already stored ({exc})"
                ) from None

        return self._run(op)

    def submit_in_transaction(
        self, conn: psycopg.Connection[Any], jobs: Sequence[NewJob]
    ) -> list[str]:
        """Write ``jobs`` with the caller's connection, inside the caller's open transaction
        and without committing it: a rollback leaves no job; the commit makes them exist
        and wakes the scheduler (NOTIFY is delivered on commit). An autocommit connection
        outside a transaction gets a transaction of its own. The connection's search_path
        is left as it was. Jobs with parents or unique keys are written under a savepoint
        (an unknown parent leaves the caller's transaction as it was) and lock those
        parents / keys until the caller's transaction ends; they expect READ COMMITTED."""
        if not jobs:
            return []
        if not self._ready:
            self.migrate()
        path = sql.Identifier(self.schema).as_string(conn)
        own: AbstractContextManager[Any] = nullcontext()
        if conn.autocommit and conn.info.transaction_status == pq.TransactionStatus.IDLE:
            own = conn.transaction()
        try:
            with own, conn.cursor(row_factory=tuple_row) as cur:
                saved = cur.execute(QUERIES["get_search_path"]).fetchone()
                assert saved is not None
                cur.execute(QUERIES["set_search_path"], {"search_path": path, "is_local": True})
                try:
                    if _uses_flow(jobs):
                        with conn.transaction():  # a savepoint: the caller's is open
                            ids = self._write_flow(cur, jobs)
                    else:
                        ids = self._write_jobs(cur, jobs)
                finally:
                    if conn.info.transaction_status == pq.TransactionStatus.INTRANS:
                        restore = {"search_path": saved[0], "is_local": True}
                        cur.execute(QUERIES["set_search_path"], restore)
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL store: {exc}") from exc
        return ids

    def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord]:
        if not job_ids:
            return []
        rows = self._all("get_jobs", {"ids": list(job_ids)}, idempotent=True)
        by_id = {row[0]: row for row in rows}
        return [_job(by_id[i]) for i in job_ids if i in by_id]

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        task: str | None = None,
        node_id: str | None = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        params = {
            "state": None if state is None else JobState(state).value,
            "queue": queue,
            "task": task,
            "node_id": node_id,
            "limit": max(0, int(limit)),
        }
        return [_job(row) for row in self._all("list_jobs", params, idempotent=True)]

    def count_jobs(self) -> dict[tuple[str, JobState], int]:
        rows = self._all("count_jobs", idempotent=True)
        return {(queue, JobState(state)): int(n) for queue, state, n in rows if n}

    def cancel(self, job_id: str) -> JobState | None:
        def op(conn: Conn) -> JobState | None:
            with conn.transaction():
                row = conn.execute(QUERIES["lock_job"], {"id": job_id}).fetchone()
                if row is None:
                    return None
                state, node_id = JobState(row[0]), row[1]
                if state in FINAL_STATES:
                    return state
                wake = []
                if state is JobState.RUNNING:
                    conn.execute(QUERIES["request_cancel"], {"id": job_id})
                    after = JobState.RUNNING
                else:
                    conn.execute(QUERIES["cancel_now"], {"id": job_id})
                    after = JobState.CANCELLED
                    wake.append(self.done_channel)
                    if state is JobState.ASSIGNED:
                        wake.append(self.pending_channel)
                if node_id is not None and state in (JobState.ASSIGNED, JobState.RUNNING):
                    wake.append(self.node_channel(node_id))
                for channel in wake:
                    conn.execute(QUERIES["notify"], {"channel": channel, "payload": job_id})
                return after

        return self._run(op)

    def retry_dead(self, job_ids: Sequence[str]) -> int:
        if not job_ids:
            return 0
        params = {"ids": list(job_ids), "pending_channel": self.pending_channel}
        return int(self._one("retry_dead", params)[0])

    def wait_for_results(self, job_ids: Sequence[str], timeout: float) -> list[JobRecord]:
        """Wait for every job to be final, woken by completion notifications (re-reading at
        least every second as a safety net). The channel is LISTENed for this call only."""
        deadline = time.monotonic() + max(0.0, timeout)
        wanted = list(dict.fromkeys(job_ids))
        channels = frozenset({self.done_channel})
        try:
            while True:
                self._try_listen(channels)  # before reading: no completion is missed
                self._fired.discard(self.done_channel)
                records = self.get_jobs(wanted)
                done = [r for r in records if r.state in FINAL_STATES]
                left = deadline - time.monotonic()
                if len(done) == len(wanted) or left <= 0:
                    return done
                self._wait(channels, min(left, 1.0))
        finally:
            self._unlisten(channels)

    # ---- worker nodes --------------------------------------------------------------
    def register_node(self, spec: NodeSpec) -> None:
        params = {
            "id": spec.id,
            "name": spec.name,
            "slots": spec.slots,
            "prefetch": spec.prefetch,
            "resources": _json(spec.resources),
            "labels": _json(spec.labels),
            "queues": list(spec.queues),
            "host": spec.host,
            "pid": spec.pid,
            "pending_channel": self.pending_channel,
        }
        self._one("register_node", params, idempotent=True)

    def heartbeat(
        self, node_id: str, running: Sequence[tuple[str, int]], lease_ttl: float
    ) -> HeartbeatReply:
        params = {
            "node_id": node_id,
            "ids": [job_id for job_id, _ in running],
            "tokens": [token for _, token in running],
            "ttl": float(lease_ttl),
        }
        alive, lost, cancel = self._one("heartbeat", params, idempotent=True)
        if not alive:
            return HeartbeatReply(alive=False, lost=tuple(job_id for job_id, _ in running))
        return HeartbeatReply(alive=True, lost=tuple(lost), cancel=tuple(cancel))

    def set_node_state(self, node_id: str, state: NodeState) -> None:
        params = {
            "id": node_id,
            "state": NodeState(state).value,
            "pending_channel": self.pending_channel,
        }
        self._all("set_node_state", params, idempotent=True)

    def list_nodes(self, states: Sequence[NodeState] | None = None) -> list[NodeRecord]:
        params = {"states": None if states is None else [NodeState(s).value for s in states]}
        out = []
        for row in self._all("list_nodes", params, idempotent=True):
            (id_, name, slots, prefetch, resources, labels, queues, host, pid, state,
             registered_at, heartbeat_at, assigned, running, used) = row  # fmt: skip
            spec = NodeSpec(
                id=id_,
                name=name,
                slots=slots,
                prefetch=prefetch,
                resources=_floats(resources),
                labels=dict(labels or {}),
                queues=tuple(queues),
                host=host,
                pid=pid,
            )
            out.append(
                NodeRecord(
                    spec=spec,
                    state=NodeState(state),
                    registered_at=registered_at,
                    heartbeat_at=heartbeat_at,
                    assigned=int(assigned),
                    running=int(running),
                    used=_floats(used),
                )
            )
        return out

    def start_jobs(self, node_id: str, limit: int, lease_ttl: float) -> list[JobRecord]:
        if limit <= 0:
            return []
        params = {"node_id": node_id, "limit": int(limit), "ttl": float(lease_ttl)}
        jobs = [_job(row) for row in self._all("start_jobs", params)]
        jobs.sort(key=lambda j: (-j.priority, j.seq))
        return jobs

    def complete(self, outcomes: Sequence[Outcome]) -> list[bool]:
        if not outcomes:
            return []
        params = {
            "ids": [o.job_id for o in outcomes],
            "tokens": [o.token for o in outcomes],
            "kinds": [o.kind.value for o in outcomes],
            "results": [o.result for o in outcomes],
            "errors": [o.error for o in outcomes],
            "tracebacks": [o.traceback for o in outcomes],
            "delays": [float(max(0.0, o.retry_delay)) for o in outcomes],
            "pending_channel": self.pending_channel,
            "done_channel": self.done_channel,
        }
        accepted = {row[0] for row in self._all("complete", params) if row[0] is not None}
        out = []
        for o in outcomes:  # an outcome repeated in the batch is accepted once
            out.append(o.job_id in accepted)
            accepted.discard(o.job_id)
        return out

    def release_jobs(self, node_id: str, jobs: Sequence[tuple[str, int]]) -> int:
        if not jobs:
            return 0
        params = {
            "node_id": node_id,
            "ids": [job_id for job_id, _ in jobs],
            "tokens": [token for _, token in jobs],
            "pending_channel": self.pending_channel,
        }
        return int(self._one("release_jobs", params)[0])

    def wait_for_assignments(self, node_id: str, timeout: float) -> None:
        def missed() -> bool:
            return bool(self._one("has_assigned", {"node_id": node_id}, idempotent=True)[0])

        self._wait(frozenset({self.node_channel(node_id)}), timeout, missed)

    # ---- scheduler -----------------------------------------------------------------
    def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        params = {"name": name, "holder": holder, "ttl": float(ttl)}
        row = self._one("acquire_lease", params)
        if row is None:
            return None
        return Lease(
            name=row[0], holder=row[1], token=row[2], expires_at=row[3], acquired_at=row[4]
        )

    def release_lease(self, lease: Lease) -> None:
        params = {"name": lease.name, "holder": lease.holder, "token": lease.token}
        self._run(lambda conn: conn.execute(QUERIES["release_lease"], params), idempotent=True)

    def get_lease(self, name: str) -> Lease | None:
        row = self._one("get_lease", {"name": name}, idempotent=True)
        if row is None:
            return None
        return Lease(
            name=row[0], holder=row[1], token=row[2], expires_at=row[3], acquired_at=row[4]
        )

    @staticmethod
    def _fence(lease: Lease) -> dict[str, Any]:
        return {"lease_name": lease.name, "holder": lease.holder, "token": lease.token}

    def promote_due(self, lease: Lease, limit: int) -> int:
        params = {**self._fence(lease), "limit": max(0, int(limit))}
        fenced, promoted = self._one("promote_due", params)
        if not fenced:
            raise LeaseLost(f"lease {lease.name!r} (token {lease.token}) is no longer held")
        return int(promoted)

    def reap(self, lease: Lease, failure_timeout: float) -> ReapReport:
        def op(conn: Conn) -> ReapReport:
            with conn.transaction():
                if conn.execute(QUERIES["fence"], self._fence(lease)).fetchone() is None:
                    raise LeaseLost(f"lease {lease.name!r} (token {lease.token}) is no longer held")
                dead = conn.execute(
                    QUERIES["reap_nodes"], {"failure_timeout": float(failure_timeout)}
                ).fetchall()
                row = conn.execute(
                    QUERIES["reap_jobs"], {"done_channel": self.done_channel}
                ).fetchone()
                assert row is not None
                return ReapReport(
                    dead_nodes=tuple(sorted(r[0] for r in dead)),
                    requeued=int(row[0]),
                    retried=int(row[1]),
                    dead_jobs=int(row[2]),
                )

        return self._run(op)

    def pending_jobs(self, limit: int, after: tuple[int, int] | None = None) -> list[PendingJob]:
        neg_priority, seq = _FIRST_PAGE if after is None else (-after[0], after[1])
        params = {"neg_priority": neg_priority, "seq": seq, "limit": max(0, int(limit))}
        return [
            PendingJob(
                id=id_,
                queue=queue,
                priority=priority,
                seq=seq,
                resources=_floats(resources),
                labels=dict(labels or {}),
                affinity=dict(affinity or {}),
                task=task,
                concurrency_key=concurrency_key,
                concurrency_limit=concurrency_limit or 0,
                rate_limit=rate_limit,
            )
            for (id_, queue, priority, seq, resources, labels, affinity, task, concurrency_key,
                 concurrency_limit, rate_limit) in self._all(
                "pending_jobs", params, idempotent=True
            )
        ]  # fmt: skip

    def assign(self, lease: Lease, assignments: Sequence[Assignment]) -> int:
        placements: dict[str, str] = {}
        for a in assignments:  # one placement per job: the first wins
            placements.setdefault(a.job_id, a.node_id)
        params = {
            **self._fence(lease),
            "job_ids": list(placements),
            "node_ids": list(placements.values()),
            "node_prefix": self.node_prefix,
        }
        fenced, placed = self._one("assign", params)
        if not fenced:
            raise LeaseLost(f"lease {lease.name!r} (token {lease.token}) is no longer held")
        return int(placed)

    def wait_for_pending(self, timeout: float) -> None:
        def missed() -> bool:
            return bool(self._one("any_pending", idempotent=True)[0])

        self._wait(frozenset({self.pending_channel}), timeout, missed)

    def put_stats(self, name: str, data: dict[str, Any]) -> None:
        params = {"name": name, "data": orjson.dumps(data).decode()}
        self._run(lambda conn: conn.execute(QUERIES["put_stats"], params), idempotent=True)

    def get_stats(self, name: str) -> dict[str, Any] | None:
        row = self._one("get_stats", {"name": name}, idempotent=True)
        return None if row is None else dict(row[0])

    # ---- workflows, periodic jobs and flow control --------------------------------
    def _lease_lost(self, lease: Lease) -> LeaseLost:
        return LeaseLost(f"lease {lease.name!r} (token {lease.token}) is no longer held")

    def resolve_dependencies(self, lease: Lease, limit: int) -> int:
        params = {
            **self._fence(lease),
            "limit": max(0, int(limit)),
            "pending_channel": self.pending_channel,
            "done_channel": self.done_channel,
        }
        fenced, moved, _ = self._one("resolve_dependencies", params)
        if not fenced:
            raise self._lease_lost(lease)
        return int(moved)

    def concurrency_usage(self, keys: Sequence[str]) -> dict[str, int]:
        if not keys:
            return {}
        rows = self._all("concurrency_usage", {"keys": list(dict.fromkeys(keys))}, idempotent=True)
        return {key: int(n) for key, n in rows if n}

    def put_schedules(self, schedules: Sequence[ScheduleRecord]) -> None:
        specs = {s.name: s.spec for s in schedules}  # a name given twice: the last wins
        if not specs:
            return
        params = {"names": list(specs), "specs": list(specs.values())}
        self._run(lambda conn: conn.execute(QUERIES["put_schedules"], params), idempotent=True)

    def delete_schedules(self, names: Sequence[str]) -> int:
        if not names:
            return 0
        return int(self._one("delete_schedules", {"names": list(dict.fromkeys(names))})[0])

    def list_schedules(self) -> list[ScheduleRecord]:
        return [
            ScheduleRecord(name=name, spec=spec, last_tick=last_tick)
            for name, spec, last_tick in self._all("list_schedules", idempotent=True)
        ]

    def fire_schedule(self, lease: Lease, name: str, tick: float, job: NewJob | None) -> bool:
        params = {**self._fence(lease), "name": name, "tick": float(tick)}

        def op(conn: Conn) -> bool:
            try:
                with conn.transaction(), conn.cursor() as cur:
                    row = cur.execute(QUERIES["tick_schedule"], params).fetchone()
                    assert row is not None
                    fenced, ticked = row
                    if not fenced:
                        raise self._lease_lost(lease)
                    if not ticked:
                        return False
                    if job is not None:
                        self._write_jobs(cur, [job])
                    return True
            except psycopg.errors.UniqueViolation:  # the job's id exists: all rolled back
                return False

        return self._run(op)

    def prune(self, older_than: float) -> int:
        params = {"older_than": float(older_than), "batch": _PRUNE_BATCH}

        def op(conn: Conn) -> int:
            deleted = 0
            while True:
                row = conn.execute(QUERIES["prune_jobs"], params).fetchone()
                n = int(row[0]) if row else 0
                deleted += n
                if n < _PRUNE_BATCH:
                    break
            conn.execute(QUERIES["prune_nodes"], {"older_than": params["older_than"]})
            return deleted

        return self._run(op)

    # ---- LISTEN / NOTIFY -----------------------------------------------------------
    def _close_listener(self) -> None:
        conn, self._listen_conn = self._listen_conn, None
        self._listening.clear()
        if conn is not None:
            with suppress(Exception):  # closing a broken connection
                conn.close()

    def _listen(self, channels: frozenset[str]) -> bool:
        """Make sure the listening connection LISTENs to ``channels`` (connecting it if
        needed). ``True`` when one of them is new: what was sent before is unseen. Raises
        ``psycopg.Error`` when PostgreSQL cannot be reached."""
        if self._closed:
            raise StoreError("the PostgreSQL store is closed")
        now = time.monotonic()
        for channel in channels:
            self._waited[channel] = now
        self._after_fork()
        conn = self._listen_conn
        if conn is None or conn.closed:
            self._close_listener()
            conn = psycopg.connect(self.conninfo, **self._connect_kwargs())
            self._listen_conn = conn
            self._tended = now
        fresh = False
        for channel in channels - self._listening:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            self._listening.add(channel)
            fresh = True
        return fresh

    def _try_listen(self, channels: frozenset[str]) -> None:
        """:meth:`_listen`, best effort (the next wait connects again)."""
        try:
            self._listen(channels)
        except (psycopg.Error, StoreError):
            self._close_listener()

    def _unlisten(self, channels: Iterable[str]) -> None:
        conn = self._listen_conn
        for channel in list(channels):
            self._fired.discard(channel)
            self._waited.pop(channel, None)
            if conn is not None and channel in self._listening:
                self._listening.discard(channel)
                try:
                    conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(channel)))
                except psycopg.Error:
                    self._close_listener()
                    conn = None

    def _tend_listener(self) -> None:
        """Between waits (at most once a second): read what the listening connection has
        received, and UNLISTEN the channels nobody waited on lately (a standby scheduler, a
        worker that stopped waiting), so that unread notifications never pile up."""
        conn = self._listen_conn
        now = time.monotonic()
        if conn is None or now - self._tended < _TEND_EVERY:
            return
        self._tended = now
        try:
            for note in conn.notifies(timeout=0):
                self._fired.add(note.channel)
        except psycopg.Error:
            self._close_listener()
            return
        self._unlisten(
            [c for c in self._listening if now - self._waited.get(c, 0.0) > _LISTEN_IDLE]
        )

    def _wait(
        self, channels: frozenset[str], timeout: float, missed: Callable[[], bool] | None = None
    ) -> bool:
        """Block until a NOTIFY on one of ``channels`` (``True``) or ``timeout`` (``False``).
        Notifications on other channels are kept for later waits. Right after a new LISTEN,
        ``missed()`` tells whether there is work already (then it returns at once)."""
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            fresh = self._listen(channels)
            if fresh and missed is not None and missed():
                return True
            conn = self._listen_conn
            assert conn is not None
            polled = False  # even with no time left, read what has arrived
            while True:
                hit = self._fired & channels
                if hit:
                    self._fired -= hit
                    return True
                left = deadline - time.monotonic()
                if left <= 0 and polled:
                    return False
                for note in conn.notifies(timeout=max(0.0, left), stop_after=1):
                    self._fired.add(note.channel)
                polled = True
        except (psycopg.Error, StoreError):
            # No listening connection: notifications may have been lost, so the caller is
            # woken (after a short pause, not to spin while PostgreSQL is away).
            self._close_listener()
            time.sleep(min(max(0.0, deadline - time.monotonic()), 0.05))
            return True
        finally:
            now = time.monotonic()
            for channel in channels:
                self._waited[channel] = now
