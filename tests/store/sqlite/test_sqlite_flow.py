"""SQLite-specific behaviour of the flow features: workflows, unique keys, limits (the
shared semantics are in ``tests/store/contract``): opening a database made by the previous version, how the settle queue
and has_children behave across retries, fan-out, pruning and idle calls."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

from rota.core.model import Assignment
from rota.core.outcomes import Outcome, OutcomeKind
from rota.core.states import JobState
from rota.store.sqlite.store import SQLiteStore
from tests.store.contract.test_flow_contract import finish, settle
from tests.store.contract.test_store_contract import TTL, job, leader, node, state_of

# The schema of the jobs table (and its indexes) before the flow columns were added, as that version created it.
PREVIOUS_SCHEMA = """
    CREATE TABLE IF NOT EXISTS jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        task TEXT NOT NULL,
        queue TEXT NOT NULL,
        payload TEXT NOT NULL,
        priority INTEGER NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        timeout REAL,
        resources TEXT NOT NULL,
        labels TEXT NOT NULL,
        affinity TEXT NOT NULL,
        backoff_base REAL NOT NULL,
        backoff_max REAL NOT NULL,
        created_at REAL NOT NULL,
        scheduled_at REAL,
        node_id TEXT,
        token INTEGER NOT NULL DEFAULT 0,
        started_at REAL,
        finished_at REAL,
        lease_expires_at REAL,
        result TEXT,
        error TEXT,
        traceback TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX IF NOT EXISTS jobs_pending ON jobs (priority DESC, seq) WHERE state = 'pending';
    CREATE INDEX IF NOT EXISTS jobs_waiting ON jobs (scheduled_at) WHERE state IN ('scheduled', 'retrying');
    CREATE INDEX IF NOT EXISTS jobs_active ON jobs (node_id, state) WHERE state IN ('assigned', 'running');
    CREATE INDEX IF NOT EXISTS jobs_queue_state ON jobs (queue, state);
    DROP INDEX IF EXISTS jobs_state_seq;
    CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
    CREATE TABLE IF NOT EXISTS nodes (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        spec TEXT NOT NULL,
        state TEXT NOT NULL,
        registered_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL,
        gone_at REAL
    );
    CREATE TABLE IF NOT EXISTS leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        token INTEGER NOT NULL,
        expires_at REAL NOT NULL,
        acquired_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS stats (
        name TEXT PRIMARY KEY,
        data TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
"""


def old_database(path: Path) -> list[str]:
    """A database as the previous version left it: one pending and one succeeded job."""
    ids = [uuid.uuid4().hex, uuid.uuid4().hex]
    db = sqlite3.connect(path)
    db.executescript(PREVIOUS_SCHEMA)
    row = (
        "INSERT INTO jobs (id, task, queue, payload, priority, state, max_attempts, resources,"
        " labels, affinity, backoff_base, backoff_max, created_at, scheduled_at, finished_at)"
        " VALUES (?, 'old.task', 'default', '{\"args\":[1],\"kwargs\":{}}', 0, ?, 1, '{}', '{}',"
        " '{}', 1.0, 300.0, 1.0, 1.0, ?)"
    )
    db.execute(row, (ids[0], "pending", None))
    db.execute(row, (ids[1], "succeeded", 2.0))
    db.commit()
    db.close()
    return ids


def test_a_database_of_the_previous_version_is_migrated_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    pending, done = old_database(path)
    store = SQLiteStore(f"sqlite:///{path}")
    try:
        columns = {r[1] for r in store.db.execute("PRAGMA table_info(jobs)")}
        assert {"depends_on", "unique_key", "concurrency_key", "has_children"} <= columns
        rec = store.get_job(pending)
        assert rec is not None and rec.state is JobState.PENDING
        assert rec.depends_on == () and rec.concurrency_key is None and rec.concurrency_limit == 0
        assert rec.arguments() == ([1], {})
        (p,) = store.pending_jobs(10)
        assert (p.id, p.task, p.concurrency_key) == (pending, "old.task", None)
        # New features work on the old rows: a child of the old finished job settles.
        child = job("b", depends_on=(done,), unique_key="u", concurrency_key="c")
        assert store.submit([child]) == [child.id]
        assert settle(store) == 1
        assert state_of(store, child.id) is JobState.PENDING
        assert store.submit([job("b", unique_key="u")]) == [child.id]
    finally:
        store.close()
    again = SQLiteStore(f"sqlite:///{path}")  # opening a migrated database changes nothing
    try:
        assert len(again.list_jobs()) == 3
    finally:
        again.close()


def test_resolve_without_work_takes_no_write_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    store, observer = SQLiteStore(url), SQLiteStore(url)
    try:
        parent = job("a")
        store.submit([parent, job("b", depends_on=(parent.id,))])
        lease = leader(store)
        version = observer.db.execute("PRAGMA data_version").fetchone()[0]
        assert store.resolve_dependencies(lease, 100) == 0  # parent unfinished: no commit
        assert observer.db.execute("PRAGMA data_version").fetchone()[0] == version
    finally:
        store.close()
        observer.close()


def test_a_wide_fan_out_settles_over_calls_within_the_limit(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        top = job("top")
        children = [job("c", i, depends_on=(top.id,)) for i in range(7)]
        store.submit([top, *children])
        finish(store, top)
        lease = leader(store)
        moved = [store.resolve_dependencies(lease, 3) for _ in range(4)]
        assert moved == [3, 3, 1, 0]
        assert {p.id for p in store.pending_jobs(100)} == {c.id for c in children}
    finally:
        store.close()


def test_a_retried_parent_settles_its_children_again(tmp_path: Path) -> None:
    """A dead parent retried before its children were settled: they keep waiting, then
    follow the retry's outcome. A parent that already settled its children settles a child
    added later."""
    store = SQLiteStore(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        parent = job("a")
        child = job("b", depends_on=(parent.id,))
        store.submit([parent, child])
        finish(store, parent, OutcomeKind.FATAL)
        assert store.retry_dead([parent.id]) == 1  # before the scheduler saw it die
        assert settle(store) == 0
        assert state_of(store, child.id) is JobState.WAITING
        finish(store, parent)
        assert settle(store) == 1
        assert state_of(store, child.id) is JobState.PENDING
        late = job("c", depends_on=(parent.id,))
        store.submit([late])
        assert settle(store) == 1
        assert state_of(store, late.id) is JobState.PENDING
    finally:
        store.close()


def test_a_deduplicated_parent_in_the_batch_stands_for_the_held_job(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        held = job("a", unique_key="k")
        store.submit([held])
        again = job("a", unique_key="k")
        child = job("b", depends_on=(again.id,))
        assert store.submit([again, child]) == [held.id, child.id]
        rec = store.get_job(child.id)
        assert rec is not None and rec.depends_on == (held.id,)
        finish(store, held)
        assert settle(store) == 1
    finally:
        store.close()


def test_prune_drops_edges_and_unique_keys_but_keeps_unsettled_parents(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        parent = job("a", unique_key="k")
        child = job("b", depends_on=(parent.id,))
        store.submit([parent, child])
        others = [job("c", i, depends_on=(parent.id,)) for i in range(2)]
        store.submit(others)
        finish(store, parent)
        assert store.prune(-1) == 0  # its children are not queued yet: kept
        assert store.resolve_dependencies(leader(store), 1) == 1
        assert store.prune(-1) == 0  # two are still queued: kept
        assert settle(store) == 2
        store.cancel(others[0].id)
        store.cancel(others[1].id)
        spec = node()
        store.register_node(spec)
        store.assign(leader(store), [Assignment(child.id, spec.id)])
        (rec,) = store.start_jobs(spec.id, 1, TTL)
        store.complete([Outcome(rec.id, rec.token, OutcomeKind.SUCCEEDED, '"x"')])
        assert store.prune(-1) == 4
        for table in ("job_deps", "job_settle", "job_unique"):
            assert store.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0
    finally:
        store.close()
