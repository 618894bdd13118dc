"""The PostgreSQL store: ``postgresql://user@host:5432/db?schema=rota``.

* psycopg 3 with a small connection pool (one ``PostgresStore`` is used by one thread at a
  time; many processes share the database). Connections are autocommit: a method is one
  statement where it can be (one round trip), or one explicit transaction.
* The schema is ``schema.sql``; every statement is a named query in
  ``queries/*.sql`` (loaded by ``queries.py``), with server-bound parameters only. Migrations
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
  (dropped after ``LISTEN_IDLE`` seconds without a wait; ``done`` for the call only), so
  that unread notifications never hold back the server's notification queue.
* :meth:`PostgresStore.submit_in_transaction` enqueues with the caller's connection, inside
  the caller's transaction (a rollback leaves no job; NOTIFY is delivered on commit).
* Batch statements (submit, assign, complete, heartbeat) take column arrays, bound in
  binary, and lock rows in id order (so concurrent batches never deadlock).
* Workflows, unique jobs, schedules: a batch using none of the flow fields is the
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

This module is the store class, its methods grouped by the role that calls them;
``connection.py`` (URL, pool, statements, migrations), ``listen.py`` (LISTEN/NOTIFY),
``claims.py`` (a worker's start_jobs and complete, and the fast paths: complete_and_start
in one round trip, claim grants),
``submit.py`` (writing a batch of jobs), ``codec.py`` (rows -> records) and ``queries.py``
(the SQL files) do the rest.

URL parameters besides libpq's: ``schema`` (default ``rota``; created if missing),
``auto_migrate`` (``1``/``0``, default ``1``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import orjson
import psycopg
from psycopg import pq, sql
from psycopg.rows import tuple_row

from rota.core.errors import LeaseLost, StoreError, SubmitError
from rota.core.model import (
    AllocSpec,
    Assignment,
    AttemptRecord,
    HeartbeatReply,
    JobRecord,
    Lease,
    NewJob,
    NodeRecord,
    NodeSpec,
    NodeState,
    PendingJob,
    ReapReport,
    RunningJob,
    ScheduleRecord,
)
from rota.core.states import FINAL_STATES, JobState
from rota.store.contract import CLAIM_PREFIX, Store
from rota.store.postgres.claims import PostgresClaims
from rota.store.postgres.codec import floats_of, job_from_row, json_text
from rota.store.postgres.connection import Conn
from rota.store.postgres.listen import PostgresListener
from rota.store.postgres.queries import QUERIES
from rota.store.postgres.submit import submit_params, write_flow, write_jobs

PRUNE_BATCH = 5000
NODE_STATES = {s.value: s for s in NodeState}
FIRST_PAGE = (-(2**62), 0)  # a cursor before every pending job: -priority > -2**62


class PostgresStore(PostgresListener, PostgresClaims, Store):
    """Jobs, nodes and leases in PostgreSQL (see the module docstring)."""

    def __init__(self, url: str, *, pool_size: int = 2, timeout: float = 15.0) -> None:
        super().__init__(url, pool_size=pool_size, timeout=timeout)
        self._specs: dict[str, tuple[float, NodeSpec]] = {}  # list_nodes: id -> kept spec

    # ---- lifecycle and clock -------------------------------------------------------
    def now(self) -> float:
        return float(self._one("now", idempotent=True)[0])

    # ---- producers and operators ---------------------------------------------------
    def submit(self, jobs: Sequence[NewJob]) -> list[str]:
        if not jobs:
            return []
        flow = any(j.uses_flow for j in jobs)

        def op(conn: Conn) -> list[str]:
            try:
                if not flow:
                    params = submit_params(jobs, self.pending_channel)
                    conn.execute(QUERIES["submit"], params)
                    return list(params["ids"])
                with conn.transaction(), conn.cursor() as cur:
                    return write_flow(cur, jobs, self.pending_channel)
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
                    if any(j.uses_flow for j in jobs):
                        with conn.transaction():  # a savepoint: the caller's is open
                            ids = write_flow(cur, jobs, self.pending_channel)
                    else:
                        ids = write_jobs(cur, jobs, self.pending_channel)
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
        return [job_from_row(by_id[i]) for i in job_ids if i in by_id]

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
        return [job_from_row(row) for row in self._all("list_jobs", params, idempotent=True)]

    def count_jobs(self) -> dict[tuple[str, JobState], int]:
        rows = self._all("count_jobs", idempotent=True)
        return {(queue, JobState(state)): int(n) for queue, state, n in rows if n}

    def job_attempts(self, job_id: str) -> list[AttemptRecord]:
        rows = self._all("job_attempts", {"id": job_id}, idempotent=True)
        return [AttemptRecord(*row) for row in rows]

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
            "resources": json_text(spec.resources),
            "labels": json_text(spec.labels),
            "queues": list(spec.queues),
            "host": spec.host,
            "pid": spec.pid,
            "pending_channel": self.pending_channel,
        }
        self._one("register_node", params, idempotent=True)

    def heartbeat(
        self, node_id: str, running: Sequence[tuple[str, int]], lease_ttl: float
    ) -> HeartbeatReply:
        """One statement, committed without waiting for the WAL flush (a beat lost to a
        crash is redone by the next one: see ``queries/worker.sql``); a node reporting no
        running job takes ``heartbeat_idle``, one UPDATE of its own row."""
        if not running:
            row = self._one("heartbeat_idle", {"node_id": node_id}, idempotent=True)
            return HeartbeatReply(alive=row is not None)
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
        """The nodes' loads in one statement (``node_loads``), with the specs this client
        keeps by ``registered_at`` (``self._specs``); a second statement reads the specs
        of nodes new or registered again. A 1,000-node scheduler snapshot decodes 1,000
        short rows instead of 1,000 specs (jsonb, arrays) each cycle."""
        params = {"states": None if states is None else [NodeState(s).value for s in states]}
        rows = self._all("node_loads", params, idempotent=True)
        specs = self._specs
        missing = [r[0] for r in rows if specs.get(r[0], (None,))[0] != r[1]]
        if missing:
            for (id_, registered_at, name, slots, prefetch, resources, labels, queues, host,
                 pid) in self._all("node_specs", {"ids": missing}, idempotent=True):  # fmt: skip
                specs[id_] = (registered_at, NodeSpec(
                    id=id_, name=name, slots=slots, prefetch=prefetch,
                    resources=floats_of(resources), labels=dict(labels or {}),
                    queues=tuple(queues), host=host, pid=pid,
                ))  # fmt: skip
        if len(specs) > 2 * len(rows) + 1000:  # forget nodes long pruned
            listed = {r[0] for r in rows}
            for id_ in [i for i in specs if i not in listed]:
                del specs[id_]
        out = []
        for id_, registered_at, state, heartbeat_at, assigned, running, used in rows:
            kept = specs.get(id_)
            if kept is None:  # pruned between the two statements
                continue
            out.append(
                NodeRecord(
                    spec=kept[1],
                    state=NODE_STATES[state],
                    registered_at=registered_at,
                    heartbeat_at=heartbeat_at,
                    assigned=int(assigned),
                    running=int(running),
                    used=floats_of(used) if used else {},
                )
            )
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

    def adopt_lease(self, name: str, holder: str, token: int, ttl: float) -> Lease | None:
        params = {"name": name, "holder": holder, "token": int(token), "ttl": float(ttl)}
        row = self._one("adopt_lease", params)
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
        neg_priority, seq = FIRST_PAGE if after is None else (-after[0], after[1])
        params = {"neg_priority": neg_priority, "seq": seq, "limit": max(0, int(limit))}
        return [
            PendingJob(
                id=id_,
                queue=queue,
                priority=priority,
                seq=seq,
                resources=floats_of(resources),
                labels=dict(labels or {}),
                affinity=dict(affinity or {}),
                task=task,
                concurrency_key=concurrency_key,
                concurrency_limit=concurrency_limit or 0,
                rate_limit=rate_limit,
                alloc=AllocSpec.from_json(alloc),
                timeout=timeout,
                enqueued_at=enqueued_at,
            )
            for (id_, queue, priority, seq, resources, labels, affinity, task, concurrency_key,
                 concurrency_limit, rate_limit, alloc, timeout, enqueued_at) in self._all(
                "pending_jobs", params, idempotent=True
            )
        ]  # fmt: skip

    def running_jobs(self, limit: int = 10_000) -> list[RunningJob]:
        rows = self._all("running_jobs", {"limit": max(0, int(limit))}, idempotent=True)
        return [
            RunningJob(
                id_,
                node_id,
                priority,
                floats_of(resources),
                started_at,
                timeout,
                AllocSpec.from_json(alloc),
                preempted_at,
                bool(stopping),
                queue,
            )
            for (id_, node_id, priority, resources, started_at, timeout, alloc, preempted_at,
                 stopping, queue) in rows
        ]  # fmt: skip

    def preempt(self, lease: Lease, victims: Sequence[tuple[str, str]]) -> int:
        wanted = dict(victims)  # one reason per job: the last wins
        params = {
            **self._fence(lease),
            "job_ids": list(wanted),
            "reasons": list(wanted.values()),
            "node_prefix": self.node_prefix,
            "pending_channel": self.pending_channel,
        }
        fenced, done, _ = self._one("preempt", params)
        if not fenced:
            raise LeaseLost(f"lease {lease.name!r} (token {lease.token}) is no longer held")
        return int(done)

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

    def put_stats_once(self, name: str, data: dict[str, Any]) -> bool:
        params = {"name": name, "data": orjson.dumps(data).decode()}
        return bool(self._one("put_stats_once", params, idempotent=True)[0])

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
                        write_jobs(cur, [job], self.pending_channel)
                    return True
            except psycopg.errors.UniqueViolation:  # the job's id exists: all rolled back
                return False

        return self._run(op)

    def prune(self, older_than: float) -> int:
        params = {"older_than": float(older_than), "batch": PRUNE_BATCH}

        def op(conn: Conn) -> int:
            deleted = 0
            while True:
                row = conn.execute(QUERIES["prune_jobs"], params).fetchone()
                n = int(row[0]) if row else 0
                deleted += n
                if n < PRUNE_BATCH:
                    break
            conn.execute(QUERIES["prune_nodes"], {"older_than": params["older_than"]})
            claims = {"older_than": params["older_than"], "prefix": CLAIM_PREFIX}
            conn.execute(QUERIES["prune_claims"], claims)
            return deleted

        return self._run(op)
