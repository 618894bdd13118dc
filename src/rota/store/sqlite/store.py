"""The embedded SQLite store: WAL mode, ``BEGIN IMMEDIATE`` for every write, statements in
``queries.sql``. Many processes on one machine share one database file."""

from __future__ import annotations

import logging
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from rota.core.errors import InvalidOption, LeaseLost, SubmitError
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
    OutcomeKind,
    PendingJob,
    ReapReport,
    ScheduleRecord,
)
from rota.core.states import FAILED_STATES, FINAL_STATES, JobState, after_parents
from rota.store.contract import Store
from rota.store.named_queries import load_queries
from rota.store.sqlite.wal import (
    POLL_MAX,
    POLL_MIN,
    POLL_SLOPE,
    WATCH_AFTER,
    WATCH_MAX,
    Checkpointer,
    WalWatch,
)

Q = load_queries("rota.store.sqlite", "queries.sql")
log = logging.getLogger("rota.store.sqlite")
_SPEC_CACHE = 16384  # decoded node specs kept for list_nodes
_AUTOCHECKPOINT = 10000  # WAL pages before a committing writer checkpoints in-line itself
_WAL_SIZE_LIMIT = 32 * 1024 * 1024  # bytes the WAL file is cut back to when it starts over
_ADDED_COLUMN = re.compile(r"ADD COLUMN (\w+)")


def sqlite_path(url: str) -> str:
    """``sqlite:///rota.db`` -> ``rota.db``; ``sqlite:////tmp/x.db`` -> ``/tmp/x.db``."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc:
        raise InvalidOption(f"SQLite URLs look like sqlite:///path/to/file.db, not {url!r}")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise InvalidOption(f"SQLite URL {url!r} names no file")
    return path


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


# Rows are turned into records positionally (a third of the cost of keywords, on the
# path every started job takes), so the queries' column order must be the records' field
# order: checked once here, on import.
_JOB_FIELDS = (
    "id", "task", "queue", "payload", "priority", "state", "attempts", "max_attempts",
    "timeout", "resources", "labels", "affinity", "backoff_base", "backoff_max",
    "created_at", "scheduled_at", "node_id", "token", "started_at", "finished_at",
    "lease_expires_at", "result", "error", "traceback", "cancel_requested", "seq",
    "depends_on", "pass_results", "workflow_id", "unique_key", "concurrency_key",
    "concurrency_limit", "rate_limit",
)  # fmt: skip
_PENDING_FIELDS = (
    "id", "queue", "priority", "seq", "resources", "labels", "affinity", "task",
    "concurrency_key", "concurrency_limit", "rate_limit",
)  # fmt: skip
for _record, _names in ((JobRecord, _JOB_FIELDS), (PendingJob, _PENDING_FIELDS)):
    if tuple(f.name for f in fields(_record))[: len(_names)] != _names:
        raise RuntimeError(
            f"rota.store.sqlite reads {_record.__name__} fields in the order {_names}"
        )


def job_from_row(row: Sequence[Any]) -> JobRecord:
    """A ``JobRecord`` from a row in the column order of the ``get_jobs`` query."""
    r, loads = row, orjson.loads
    return JobRecord(
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        JobState(r[5]),
        r[6],
        r[7],
        r[8],
        loads(r[9]),
        loads(r[10]),
        loads(r[11]),
        r[12],
        r[13],
        r[14],
        r[15],
        r[16],
        r[17],
        r[18],
        r[19],
        r[20],
        r[21],
        r[22],
        r[23],
        bool(r[24]),
        r[25],
        tuple(loads(r[26])) if r[26] else (),
        bool(r[27]),
        r[28],
        r[29],
        r[30],
        r[31],
        r[32],
    )


def pending_from_row(row: Sequence[Any]) -> PendingJob:
    """A ``PendingJob`` from a row of the ``pending_first`` / ``pending_after`` queries."""
    r, loads = row, orjson.loads
    return PendingJob(
        r[0], r[1], r[2], r[3], loads(r[4]), loads(r[5]), loads(r[6]), r[7], r[8], r[9], r[10]
    )


def _uses_flow(job: NewJob) -> bool:
    """Whether a job sets one of the flow options (then its row has the flow columns)."""
    return bool(
        job.depends_on
        or job.unique_key is not None
        or job.concurrency_key is not None
        or job.rate_limit is not None
        or job.workflow_id is not None
        or job.pass_results
    )


def _statements(script: str) -> Iterator[str]:
    """The complete statements of a script (a ``;`` inside one, as in a trigger body,
    does not split it)."""
    pending = ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""
    if pending.strip(" \n;"):
        yield pending


def _started(rows: list[Any]) -> list[JobRecord]:
    """Jobs from ``start_jobs`` rows, highest priority then oldest first (``RETURNING``
    gives no order)."""
    jobs = [job_from_row(r) for r in rows]
    jobs.sort(key=lambda j: (-j.priority, j.seq))
    return jobs


def node_spec_to_json(spec: NodeSpec) -> str:
    return _json(
        {
            "id": spec.id,
            "name": spec.name,
            "slots": spec.slots,
            "prefetch": spec.prefetch,
            "resources": spec.resources,
            "labels": spec.labels,
            "queues": list(spec.queues),
            "host": spec.host,
            "pid": spec.pid,
        }
    )


def node_spec_from_json(text: str | bytes) -> NodeSpec:
    d = orjson.loads(text)
    return NodeSpec(
        id=d["id"],
        name=d["name"],
        slots=d["slots"],
        prefetch=d["prefetch"],
        resources=d["resources"],
        labels=d["labels"],
        queues=tuple(d["queues"]),
        host=d.get("host", ""),
        pid=d.get("pid", 0),
    )


def _job_row(job: NewJob, now: float, parents: tuple[str, ...] | None) -> dict[str, Any]:
    """The parameters of ``insert_job`` (``parents is None``) or ``insert_flow_job`` for
    ``job``; a job with parents starts waiting."""
    due = job.eta if job.eta is not None else now + job.delay
    row = {
        "id": job.id,
        "task": job.task,
        "queue": job.queue,
        "payload": job.payload,
        "priority": job.priority,
        "state": "scheduled" if due > now else "pending",
        "max_attempts": job.max_attempts,
        "timeout": job.timeout,
        "resources": _json(job.resources),
        "labels": _json(job.labels),
        "affinity": _json(job.affinity),
        "backoff_base": job.backoff_base,
        "backoff_max": job.backoff_max,
        "now": now,
        "scheduled_at": due,
    }
    if parents is not None:
        if parents:
            row["state"] = "waiting"
        row["depends_on"] = _json(list(parents)) if parents else None
        row["pass_results"] = int(job.pass_results)
        row["workflow_id"] = job.workflow_id
        row["unique_key"] = job.unique_key
        row["concurrency_key"] = job.concurrency_key
        row["concurrency_limit"] = job.concurrency_limit
        row["rate_limit"] = job.rate_limit
    return row


class SQLiteStore(Store):
    """Store in one SQLite file (``sqlite:///path``)."""

    def __init__(self, url: str, *, busy_timeout: float = 30.0) -> None:
        self.url = url
        self.busy_timeout = busy_timeout
        self.path = sqlite_path(url)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT}")
        self.db.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
        self.db.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        with self._write():
            self._create_schema()
        self._seen_version = self._data_version()
        self._changed_at = time.monotonic()
        self._checkpointer = Checkpointer.attach(self.path)
        self._specs: dict[str, tuple[str, NodeSpec]] = {}
        self._watch: WalWatch | None = None  # opened by the first wait for changes
        self._watch_tried = False

    def _create_schema(self) -> None:
        """Create what is missing: tables, then the columns later versions added (a
        database made by an earlier version gets them here), then what uses them."""
        for statement in _statements(Q["schema"]):
            self.db.execute(statement)
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(jobs)")}
        for statement in _statements(Q["jobs_columns"]):
            added = _ADDED_COLUMN.search(statement)
            column = added.group(1) if added else ""
            if column not in columns:
                log.info("adding column jobs.%s to %s", column, self.path)
                self.db.execute(statement)
        for statement in _statements(Q["schema_after_columns"]):
            self.db.execute(statement)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction (``BEGIN IMMEDIATE``: the write lock is taken up front)."""
        cur = self.db.cursor()
        self._begin_immediate(cur)
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def _begin_immediate(self, cur: sqlite3.Cursor) -> None:
        """Take the write lock, retrying with short jittered sleeps. SQLite's own busy
        handler sleeps 1 to 100 ms between tries, which would dominate job latency when a
        scheduler and several workers take turns at the lock."""
        delay = 0.0002
        deadline = 0.0
        cur.execute("PRAGMA busy_timeout=0")
        try:
            while True:
                try:
                    cur.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise
                    now = time.monotonic()
                    deadline = deadline or now + self.busy_timeout
                    if now > deadline:
                        raise
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 0.005)
        finally:
            cur.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")

    def _now(self, cur: sqlite3.Cursor) -> float:
        value: float = cur.execute(Q["now"]).fetchone()[0]
        return value

    def _data_version(self) -> int:
        value: int = self.db.execute("PRAGMA data_version").fetchone()[0]
        return value

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._checkpointer is not None:
            self._checkpointer.detach()
            self._checkpointer = None
        self.db.close()

    def now(self) -> float:
        return self._now(self.db.cursor())

    # ---- producers and operators ---------------------------------------------------
    def submit(self, jobs: Sequence[NewJob]) -> list[str]:
        with self._write() as cur:
            return self._insert(cur, self._now(cur), jobs)

    def _insert(self, cur: sqlite3.Cursor, now: float, jobs: Sequence[NewJob]) -> list[str]:
        """Store ``jobs`` inside the caller's write transaction (see ``submit``)."""
        if any(_uses_flow(job) for job in jobs):
            return self._insert_flow(cur, now, jobs)
        rows = [_job_row(job, now, None) for job in jobs]
        self._insert_rows(cur, Q["insert_job"], rows)
        return [job.id for job in jobs]

    def _insert_rows(self, cur: sqlite3.Cursor, query: str, rows: list[dict[str, Any]]) -> None:
        try:
            cur.executemany(query, rows)
        except sqlite3.IntegrityError as exc:  # the caller rolls back: nothing is stored
            raise SubmitError(f"a job with one of these ids is already stored ({exc})") from None

    def _insert_flow(self, cur: sqlite3.Cursor, now: float, jobs: Sequence[NewJob]) -> list[str]:
        """Submit with uniqueness and dependencies: a job whose unique key is held by an
        unfinished job gives that job's id instead (a child naming it then depends on that
        job); a child's parents must be stored or earlier in the batch; edges go to
        ``job_deps`` and parents are flagged ``has_children = 1`` (one final already is
        then picked up by the next ``resolve_dependencies``)."""
        returned: list[str] = []
        rows: list[dict[str, Any]] = []
        batch: set[str] = set()  # ids stored by this batch so far
        instead: dict[str, str] = {}  # id of a job not stored (unique) -> the id returned
        keys: dict[str, str] = {}  # unique keys taken by this batch -> job id
        known: dict[str, bool] = {}  # whether a parent not in the batch is stored
        taken: list[dict[str, Any]] = []
        edges: list[tuple[str, str]] = []
        for job in jobs:
            key = job.unique_key
            if key is not None:
                holder = keys.get(key)
                if holder is None:
                    holder = self._unique_holder(cur, now, key)
                if holder is not None:
                    returned.append(holder)
                    instead[job.id] = holder
                    continue
                keys[key] = job.id
                expires = None if job.unique_for is None else now + job.unique_for
                taken.append({"key": key, "job_id": job.id, "expires_at": expires})
            parents = tuple(dict.fromkeys(instead.get(p, p) for p in job.depends_on))
            for parent in parents:
                if parent not in batch:
                    if parent not in known:
                        known[parent] = cur.execute(Q["job_exists"], (parent,)).fetchone()[0]
                    if not known[parent]:
                        raise InvalidOption(
                            f"job {job.id} depends on unknown job {parent!r}: a parent must "
                            "be stored already or come earlier in the same submit"
                        )
                edges.append((parent, job.id))
            rows.append(_job_row(job, now, parents))
            batch.add(job.id)
            returned.append(job.id)
        self._insert_rows(cur, Q["insert_flow_job"], rows)
        if taken:
            cur.executemany(Q["take_unique"], taken)
        if edges:
            cur.executemany(Q["insert_edge"], edges)
            cur.executemany(Q["mark_parent"], [(p,) for p in dict.fromkeys(p for p, _ in edges)])
        return returned

    def _unique_holder(self, cur: sqlite3.Cursor, now: float, key: str) -> str | None:
        """The unfinished, unexpired job holding ``key``, if any."""
        row = cur.execute(Q["unique_holder"], (key,)).fetchone()
        if row is None or row[1] is None or JobState(row[1]) in FINAL_STATES:
            return None
        if row[2] is not None and now >= row[2]:
            return None
        holder: str = row[0]
        return holder

    def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord]:
        ids = list(job_ids)
        rows = self.db.execute(Q["get_jobs"], (_json(ids),))
        found = {row[0]: job_from_row(row) for row in rows}
        return [found[i] for i in ids if i in found]

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
            "state": state.value if state else None,
            "queue": queue,
            "task": task,
            "node_id": node_id,
            "limit": limit,
        }
        return [job_from_row(r) for r in self.db.execute(Q["list_jobs"], params)]

    def count_jobs(self) -> dict[tuple[str, JobState], int]:
        return {(q, JobState(s)): n for q, s, n in self.db.execute(Q["count_jobs"])}

    def cancel(self, job_id: str) -> JobState | None:
        with self._write() as cur:
            now = self._now(cur)
            cur.execute(Q["cancel_waiting"], {"id": job_id, "now": now})
            cur.execute(Q["cancel_running"], {"id": job_id})
            row = cur.execute(Q["job_state"], (job_id,)).fetchone()
        return JobState(row[0]) if row else None

    def retry_dead(self, job_ids: Sequence[str]) -> int:
        with self._write() as cur:
            now = self._now(cur)
            cur.executemany(Q["retry_dead"], [{"id": i, "now": now} for i in job_ids])
            return max(cur.rowcount, 0)

    # ---- worker nodes --------------------------------------------------------------
    def register_node(self, spec: NodeSpec) -> None:
        with self._write() as cur:
            now = self._now(cur)
            params = {"id": spec.id, "name": spec.name, "spec": node_spec_to_json(spec), "now": now}
            cur.execute(Q["register_node"], params)

    def heartbeat(
        self, node_id: str, running: Sequence[tuple[str, int]], lease_ttl: float
    ) -> HeartbeatReply:
        with self._write() as cur:
            now = self._now(cur)
            row = cur.execute(Q["node_state"], (node_id,)).fetchone()
            if row is None or row[0] == NodeState.DEAD:
                return HeartbeatReply(alive=False, lost=tuple(i for i, _ in running))
            cur.execute(Q["touch_node"], {"id": node_id, "now": now})
            lost = []
            for job_id, token in running:
                params = {
                    "id": job_id,
                    "token": token,
                    "node_id": node_id,
                    "expires": now + lease_ttl,
                }
                if cur.execute(Q["extend_lease"], params).rowcount == 0:
                    lost.append(job_id)
            cancel = tuple(r[0] for r in cur.execute(Q["cancel_requested"], (node_id,)))
        return HeartbeatReply(alive=True, lost=tuple(lost), cancel=cancel)

    def set_node_state(self, node_id: str, state: NodeState) -> None:
        with self._write() as cur:
            now = self._now(cur)
            cur.execute(Q["set_node_state"], {"id": node_id, "state": state.value, "now": now})

    def list_nodes(self, states: Sequence[NodeState] | None = None) -> list[NodeRecord]:
        cur = self.db.cursor()
        cur.execute("BEGIN")  # one consistent snapshot of nodes and their load
        try:
            nodes = {
                r[0]: NodeRecord(
                    spec=self._node_spec(r[0], r[1]),
                    state=NodeState(r[2]),
                    registered_at=r[3],
                    heartbeat_at=r[4],
                )
                for r in cur.execute(Q["list_nodes"])
                if states is None or r[2] in states
            }
            for node_id, state, count in cur.execute(Q["node_counts"]):
                node = nodes.get(node_id)
                if node is not None:
                    if state == "assigned":
                        node.assigned = count
                    else:
                        node.running = count
            for node_id, name, total in cur.execute(Q["node_usage"]):
                node = nodes.get(node_id)
                if node is not None:
                    node.used[name] = total
        finally:
            cur.execute("COMMIT")
        return list(nodes.values())

    def _node_spec(self, node_id: str, text: str) -> NodeSpec:
        """The decoded spec of a node, cached while its stored text stays the same (a
        scheduler lists every node each cycle; a spec only changes on registration)."""
        cached = self._specs.get(node_id)
        if cached is not None and cached[0] == text:
            return cached[1]
        spec = node_spec_from_json(text)
        if len(self._specs) >= _SPEC_CACHE:  # nodes come and go: forget old ones
            self._specs.clear()
        self._specs[node_id] = (text, spec)
        return spec

    def start_jobs(self, node_id: str, limit: int, lease_ttl: float) -> list[JobRecord]:
        if limit <= 0 or not self.db.execute(Q["has_assigned"], (node_id,)).fetchone()[0]:
            return []  # nothing to start: no write transaction
        with self._write() as cur:
            rows = self._start(cur, self._now(cur), node_id, limit, lease_ttl)
        return _started(rows)

    def complete(self, outcomes: Sequence[Outcome]) -> list[bool]:
        with self._write() as cur:
            return self._complete(cur, self._now(cur), outcomes)

    def complete_and_start(
        self, outcomes: Sequence[Outcome], node_id: str, limit: int, lease_ttl: float
    ) -> tuple[list[bool], list[JobRecord]]:
        """``complete(outcomes)``, then ``start_jobs(node_id, limit, lease_ttl)``, in one
        write transaction: a worker's report of finished jobs and its claim of the next ones
        cost one commit, and one wake-up of every waiter, instead of two."""
        if not outcomes:
            return [], self.start_jobs(node_id, limit, lease_ttl)
        with self._write() as cur:
            now = self._now(cur)
            accepted = self._complete(cur, now, outcomes)
            rows = self._start(cur, now, node_id, limit, lease_ttl) if limit > 0 else []
        return accepted, _started(rows)

    def _start(
        self, cur: sqlite3.Cursor, now: float, node_id: str, limit: int, lease_ttl: float
    ) -> list[Any]:
        row = cur.execute(Q["node_state"], (node_id,)).fetchone()
        if row is None or row[0] not in (NodeState.LIVE, NodeState.DRAINING):
            return []
        params = {"node_id": node_id, "limit": limit, "now": now, "expires": now + lease_ttl}
        return cur.execute(Q["start_jobs"], params).fetchall()

    def _complete(self, cur: sqlite3.Cursor, now: float, outcomes: Sequence[Outcome]) -> list[bool]:
        accepted = []
        execute = cur.execute
        succeeded = Q["complete_succeeded"]
        for o in outcomes:
            if o.kind is OutcomeKind.SUCCEEDED:
                params = {"id": o.job_id, "token": o.token, "now": now, "result": o.result}
                execute(succeeded, params)
            elif o.kind is OutcomeKind.FAILED:
                params = {
                    "id": o.job_id,
                    "token": o.token,
                    "now": now,
                    "delay": max(o.retry_delay, 0.0),
                    "error": o.error,
                    "traceback": o.traceback,
                }
                execute(Q["complete_failed"], params)
            else:
                state = JobState.DEAD if o.kind is OutcomeKind.FATAL else JobState.CANCELLED
                params = {
                    "id": o.job_id,
                    "token": o.token,
                    "now": now,
                    "state": state.value,
                    "error": o.error,
                    "traceback": o.traceback,
                }
                execute(Q["complete_final"], params)
            accepted.append(cur.rowcount == 1)
        return accepted

    def release_jobs(self, node_id: str, jobs: Sequence[tuple[str, int]]) -> int:
        with self._write() as cur:
            now = self._now(cur)
            rows = [{"id": i, "token": t, "node_id": node_id, "now": now} for i, t in jobs]
            cur.executemany(Q["release_job"], rows)
            return max(cur.rowcount, 0)

    def _wait_for_change(self, timeout: float, ready: Callable[[], bool]) -> None:
        """Wait until another connection commits and ``ready()`` says so, or until
        ``timeout`` passes."""
        if self._watch is None and not self._watch_tried:
            self._watch_tried = True  # opened before reading the version: no lost wake-up
            self._watch = WalWatch.open(self.path)
        watch = self._watch
        now = time.monotonic()
        deadline = now + timeout
        # The baseline is the version seen when the previous wait ended, not now: a commit
        # that became visible while the caller worked (after it read the state it acted on)
        # must end this wait at once, not be taken for the starting point.
        version = self._seen_version
        current = self._data_version()
        if current != version:
            version = self._seen_version = current
            self._changed_at = now
            if ready():
                return
        while True:
            left = deadline - now
            if left <= 0:
                return
            quiet = now - self._changed_at
            if watch is not None:
                # A commit writes the WAL before it publishes itself in the WAL index, so a
                # write is followed by checks at doubling intervals until it is old news;
                # only then does the wait block until the next write.
                step = max(quiet, POLL_MIN) if quiet < WATCH_AFTER else WATCH_MAX
                if watch.wait(min(left, step)):
                    self._changed_at = time.monotonic()
            else:
                time.sleep(min(max(quiet * POLL_SLOPE, POLL_MIN), POLL_MAX, left))
            current = self._data_version()
            now = time.monotonic()
            if current != version:
                version = self._seen_version = current
                self._changed_at = now
                if ready():
                    return

    def wait_for_assignments(self, node_id: str, timeout: float) -> None:
        def ready() -> bool:
            return bool(self.db.execute(Q["has_assigned"], (node_id,)).fetchone()[0])

        if not ready():
            self._wait_for_change(timeout, ready)

    # ---- scheduler -----------------------------------------------------------------
    def _lease_row(self, cur: sqlite3.Cursor, name: str) -> Lease | None:
        row = cur.execute(Q["get_lease"], (name,)).fetchone()
        return Lease(*row) if row else None

    def _check_lease(self, cur: sqlite3.Cursor, lease: Lease, now: float) -> None:
        current = self._lease_row(cur, lease.name)
        if (
            current is None
            or current.token != lease.token
            or current.holder != lease.holder
            or current.expires_at <= now
        ):
            raise LeaseLost(f"lease {lease.name!r} token {lease.token} is no longer current")

    def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        with self._write() as cur:
            now = self._now(cur)
            current = self._lease_row(cur, name)
            params = {"name": name, "holder": holder, "now": now, "expires": now + ttl}
            if current is None:
                cur.execute(Q["insert_lease"], params)
            elif current.holder == holder and current.expires_at > now:
                cur.execute(Q["renew_lease"], {**params, "token": current.token})
            elif current.expires_at <= now:
                cur.execute(Q["take_lease"], {**params, "token": current.token})
            else:
                return None
            return self._lease_row(cur, name)

    def adopt_lease(self, name: str, holder: str, token: int, ttl: float) -> Lease | None:
        with self._write() as cur:
            now = self._now(cur)
            params = {"name": name, "holder": holder, "token": token, "now": now}
            cur.execute(Q["adopt_lease"], {**params, "expires": now + ttl})
            lease = self._lease_row(cur, name)
        return (
            lease if lease is not None and (lease.holder, lease.token) == (holder, token) else None
        )

    def release_lease(self, lease: Lease) -> None:
        with self._write() as cur:
            now = self._now(cur)
            params = {"name": lease.name, "holder": lease.holder, "token": lease.token, "now": now}
            cur.execute(Q["release_lease"], params)

    def get_lease(self, name: str) -> Lease | None:
        cur = self.db.cursor()
        lease = self._lease_row(cur, name)
        return lease if lease is not None and lease.expires_at > self._now(cur) else None

    def promote_due(self, lease: Lease, limit: int) -> int:
        cur = self.db.cursor()
        now = self._now(cur)
        if not cur.execute(Q["any_due"], {"now": now}).fetchone()[0]:
            self._check_lease(cur, lease, now)  # still fenced, but no write transaction
            return 0
        with self._write() as cur:
            now = self._now(cur)
            self._check_lease(cur, lease, now)
            return cur.execute(Q["promote_due"], {"now": now, "limit": limit}).rowcount

    def reap(self, lease: Lease, failure_timeout: float) -> ReapReport:
        cur = self.db.cursor()
        now = self._now(cur)
        params = {"cutoff": now - failure_timeout, "now": now}
        if not cur.execute(Q["any_to_reap"], params).fetchone()[0]:
            self._check_lease(cur, lease, now)  # still fenced, but no write transaction
            return ReapReport()
        with self._write() as cur:
            now = self._now(cur)
            self._check_lease(cur, lease, now)
            silent = [
                r[0] for r in cur.execute(Q["silent_nodes"], {"cutoff": now - failure_timeout})
            ]
            for node_id in silent:
                cur.execute(Q["set_node_state"], {"id": node_id, "state": "dead", "now": now})
            requeued = cur.execute(Q["requeue_lost_assigned"]).rowcount
            cur.execute(Q["cancel_lost_running"], {"now": now})
            dead_jobs = cur.execute(Q["kill_lost_running"], {"now": now}).rowcount
            retried = cur.execute(Q["retry_lost_running"], {"now": now}).rowcount
        return ReapReport(tuple(silent), requeued, retried, dead_jobs)

    def pending_jobs(self, limit: int, after: tuple[int, int] | None = None) -> list[PendingJob]:
        if after is None:
            rows = self.db.execute(Q["pending_first"], {"limit": limit})
        else:
            params = {"limit": limit, "priority": after[0], "seq": after[1]}
            rows = self.db.execute(Q["pending_after"], params)
        return [pending_from_row(r) for r in rows]

    def assign(self, lease: Lease, assignments: Sequence[Assignment]) -> int:
        with self._write() as cur:
            now = self._now(cur)
            self._check_lease(cur, lease, now)
            live = {r[0] for r in cur.execute(Q["live_node_ids"])}
            rows = [(a.job_id, a.node_id) for a in assignments if a.node_id in live]
            if not rows:
                return 0
            cur.execute(Q["assign_jobs"], {"batch": _json(rows)})
            return max(cur.rowcount, 0)

    def wait_for_pending(self, timeout: float) -> None:
        self._wait_for_change(timeout, lambda: True)

    def put_stats(self, name: str, data: dict[str, Any]) -> None:
        with self._write() as cur:
            now = self._now(cur)
            cur.execute(Q["put_stats"], {"name": name, "data": _json(data), "now": now})

    def get_stats(self, name: str) -> dict[str, Any] | None:
        row = self.db.execute(Q["get_stats"], (name,)).fetchone()
        if row is None:
            return None
        data: dict[str, Any] = orjson.loads(row[0])
        return data

    # ---- workflows, periodic jobs and flow control --------------------------------
    def resolve_dependencies(self, lease: Lease, limit: int) -> int:
        cur = self.db.cursor()
        if limit <= 0 or not cur.execute(Q["any_to_settle"]).fetchone()[0]:
            self._check_lease(cur, lease, self._now(cur))  # fenced, without a write
            return 0
        with self._write() as cur:
            now = self._now(cur)
            self._check_lease(cur, lease, now)
            done = [r[0] for r in cur.execute(Q["parents_done"], {"limit": limit})]
            if done:  # their children wait in job_settle from now on
                cur.execute(Q["queue_children"], (_json(done),))
                cur.execute(Q["parents_queued"], (_json(done),))
            queued: list[int] = []
            parents: dict[str, list[tuple[str, JobState]]] = {}
            for r, child, state, parent, parent_state in cur.execute(
                Q["settle_batch"], {"limit": limit}
            ):
                if not queued or queued[-1] != r:
                    queued.append(r)
                if state != JobState.WAITING:
                    continue  # gone, cancelled or settled already
                # A parent that is gone had succeeded: prune keeps parents while children
                # are queued, and a failed parent fails its children when they are.
                found = parents.setdefault(child, [])
                if parent is not None:
                    found.append((parent, JobState(parent_state or JobState.SUCCEEDED)))
            if queued:
                cur.execute(Q["unqueue_settle"], (_json(queued),))
            ready: list[str] = []
            failed: list[dict[str, Any]] = []
            for child, found in parents.items():
                outcome = after_parents([s for _, s in found])
                if outcome is JobState.PENDING:
                    ready.append(child)
                elif outcome is JobState.UPSTREAM_FAILED:
                    culprit, st = next((p, s) for p, s in found if s in FAILED_STATES)
                    error = f"upstream failed: parent {culprit} is {st.value}"
                    failed.append({"id": child, "now": now, "error": error})
            moved = 0
            if ready:
                moved += cur.execute(Q["parents_succeeded"], (_json(ready),)).rowcount
            if failed:
                cur.executemany(Q["upstream_failed"], failed)
                moved += max(cur.rowcount, 0)
        return moved

    def concurrency_usage(self, keys: Sequence[str]) -> dict[str, int]:
        if not keys:
            return {}
        rows = self.db.execute(Q["concurrency_usage"], (_json(list(keys)),))
        return {key: count for key, count in rows}

    def put_schedules(self, schedules: Sequence[ScheduleRecord]) -> None:
        with self._write() as cur:
            cur.executemany(
                Q["put_schedule"], [{"name": s.name, "spec": s.spec} for s in schedules]
            )

    def delete_schedules(self, names: Sequence[str]) -> int:
        with self._write() as cur:
            cur.executemany(Q["delete_schedule"], [(n,) for n in names])
            return max(cur.rowcount, 0)

    def list_schedules(self) -> list[ScheduleRecord]:
        return [ScheduleRecord(n, s, t) for n, s, t in self.db.execute(Q["list_schedules"])]

    def fire_schedule(self, lease: Lease, name: str, tick: float, job: NewJob | None) -> bool:
        with self._write() as cur:
            now = self._now(cur)
            self._check_lease(cur, lease, now)
            if job is not None and cur.execute(Q["job_exists"], (job.id,)).fetchone()[0]:
                return False  # that tick's job is stored already: never overwrite it
            if cur.execute(Q["fire_schedule"], {"name": name, "tick": tick}).rowcount == 0:
                return False
            if job is not None:
                self._insert(cur, now, [job])
            return True

    def prune(self, older_than: float) -> int:
        with self._write() as cur:
            cutoff = self._now(cur) - older_than
            cur.execute(Q["prune_edges"], {"cutoff": cutoff})
            cur.execute(Q["prune_unique"], {"cutoff": cutoff})
            deleted = cur.execute(Q["prune_jobs"], {"cutoff": cutoff}).rowcount
            cur.execute(Q["prune_nodes"], {"cutoff": cutoff})
        return deleted
