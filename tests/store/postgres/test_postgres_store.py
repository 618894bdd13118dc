"""PostgreSQL-specific behaviour of ``PostgresStore`` (the shared semantics are in
``tests/contract``): migrations, the pending index, transactional enqueue, SKIP LOCKED
claims across processes, LISTEN/NOTIFY latency, reconnection, pruning and fencing."""

from __future__ import annotations

import ast
import multiprocessing
import re
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stores import store_url

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402

from rota.core.errors import InvalidOption, LeaseLost, StoreError  # noqa: E402
from rota.core.model import (  # noqa: E402
    Assignment,
    Lease,
    NewJob,
    NodeSpec,
    NodeState,
    Outcome,
    OutcomeKind,
)
from rota.core.states import JobState  # noqa: E402

PAYLOAD = '{"args":[],"kwargs":{}}'


def new_job(**kw: Any) -> NewJob:
    kw.setdefault("id", uuid.uuid4().hex)
    kw.setdefault("task", "tests.noop")
    kw.setdefault("queue", "default")
    kw.setdefault("payload", PAYLOAD)
    return NewJob(**kw)


def node_spec(node_id: str, **kw: Any) -> NodeSpec:
    kw.setdefault("slots", 4)
    kw.setdefault("prefetch", 4)
    return NodeSpec(id=node_id, name=node_id, **kw)


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    with store_url("postgres", tmp_path) as u:
        yield u


@pytest.fixture
def store(url: str) -> Iterator[Any]:
    from rota.store.postgres.store import PostgresStore

    s = PostgresStore(url)
    yield s
    s.close()


@pytest.fixture
def admin(store: Any) -> Iterator[Any]:
    """A plain autocommit connection with the store's schema on its search_path."""
    store.migrate()
    with psycopg.connect(store.conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(store.schema)))
        yield conn


def open_store(url: str) -> Any:
    from rota.store.postgres.store import PostgresStore

    return PostgresStore(url)


# ---- migrations ------------------------------------------------------------------------


def catalog(conn: Any, schema: str) -> dict[str, Any]:
    """Tables, columns (type, nullability, default), indexes, constraints, functions and triggers of
    ``schema``, with the schema's name taken out of definitions."""

    def rows(query: str) -> list[tuple[Any, ...]]:
        out = conn.execute(query, {"s": schema}).fetchall()
        return sorted(tuple(str(v).replace(f"{schema}.", "") for v in row) for row in out)

    return {
        "tables": rows(
            "SELECT table_name, table_type FROM information_schema.tables "
            "WHERE table_schema = %(s)s AND table_name <> 'rota_migrations'"
        ),
        "columns": rows(
            "SELECT table_name, column_name, ordinal_position, data_type, udt_name, "
            "is_nullable, column_default FROM information_schema.columns "
            "WHERE table_schema = %(s)s AND table_name <> 'rota_migrations'"
        ),
        "indexes": rows(
            "SELECT tablename, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = %(s)s AND tablename <> 'rota_migrations'"
        ),
        "constraints": rows(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) "
            "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE n.nspname = %(s)s AND c.conrelid::regclass::text NOT LIKE '%%rota_migrations'"
        ),
        "functions": rows(
            "SELECT p.proname, pg_get_function_identity_arguments(p.oid), "
            "pg_get_function_result(p.oid), p.provolatile, p.prosrc "
            "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %(s)s"
        ),
        "sequences": rows(
            "SELECT sequence_name, data_type FROM information_schema.sequences "
            "WHERE sequence_schema = %(s)s"
        ),
        "triggers": rows(
            "SELECT t.tgrelid::regclass::text, t.tgname, pg_get_triggerdef(t.oid) "
            "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %(s)s AND NOT t.tgisinternal"
        ),
    }


def test_migrations_give_exactly_the_schema_file(store: Any) -> None:
    from rota.store.postgres.queries import SCHEMA_FILE, migrations

    assert store.migrate() == [name for _, name, _ in migrations()]
    assert store.migrate() == []  # nothing left to apply
    reference = f"{store.schema}_ref"
    with psycopg.connect(store.conninfo, autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(reference)))
            with conn.transaction():
                conn.execute(
                    sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(reference))
                )
                conn.execute(SCHEMA_FILE.read_text().encode())
            migrated, expected = catalog(conn, store.schema), catalog(conn, reference)
            versions = conn.execute(
                sql.SQL("SELECT version FROM {}.rota_migrations ORDER BY version").format(
                    sql.Identifier(store.schema)
                )
            ).fetchall()
        finally:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(reference))
            )
    assert [name for name, _ in expected["tables"]] == [
        "jobs", "leases", "nodes", "schedules", "settle_children", "settle_parents", "stats",
        "unique_keys",
    ]  # fmt: skip
    assert any(name == "jobs_pending_idx" for _, name, _ in expected["indexes"])
    for part in expected:
        assert migrated[part] == expected[part], part
    assert [v for (v,) in versions] == [v for v, _, _ in migrations()]


def test_concurrent_first_uses_migrate_once(url: str) -> None:
    stores = [open_store(url) for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    results: list[Any] = []

    def first_use(s: Any) -> None:
        barrier.wait()
        try:
            s.submit([new_job()])
            results.append("ok")
        except Exception as exc:  # pragma: no cover - the failure being tested
            results.append(exc)

    threads = [threading.Thread(target=first_use, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert results == ["ok"] * len(stores)
        assert stores[0].count_jobs() == {("default", JobState.PENDING): len(stores)}
        assert stores[0].migrate() == []
    finally:
        for s in stores:
            s.close()


def test_auto_migrate_off_leaves_the_database_alone(url: str) -> None:
    off = open_store(url + "&auto_migrate=0")
    try:
        with pytest.raises(StoreError):
            off.submit([new_job()])
        assert off.migrate() == ["0001_initial", "0002_rota_now_double", "0003_flows"]
        off.submit([new_job()])
        assert len(off.list_jobs()) == 1
    finally:
        off.close()


def test_migrate_applies_only_what_is_pending(url: str) -> None:
    from rota.store.postgres.queries import migrations

    store = open_store(url + "&auto_migrate=0")
    try:
        first = migrations()[0]
        assert store.migrate() == [name for _, name, _ in migrations()]
        with psycopg.connect(store.conninfo, autocommit=True) as conn:  # back to 0001 only
            conn.execute(
                sql.SQL("DELETE FROM {}.rota_migrations WHERE version > %s").format(
                    sql.Identifier(store.schema)
                ),
                [first[0]],
            )
        assert store.migrate() == [name for _, name, _ in migrations()[1:]]
        assert store.migrate() == []
    finally:
        store.close()


def test_url_parameters() -> None:
    from rota.core.errors import InvalidOption
    from rota.store.postgres.connection import parse_url

    conninfo, schema, auto = parse_url(
        "postgresql://u:p@h:5432/db?sslmode=disable&schema=s1&auto_migrate=0"
    )
    assert (conninfo, schema, auto) == ("postgresql://u:p@h:5432/db?sslmode=disable", "s1", False)
    assert parse_url("postgres://h/db") == ("postgres://h/db", "rota", True)
    with pytest.raises(InvalidOption):
        parse_url("postgresql://h/db?auto_migrate=maybe")
    with pytest.raises(InvalidOption):
        parse_url("postgresql://h/db?schema=" + "x" * 64)


# ---- every statement is parameterised -------------------------------------------------

SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|LISTEN|NOTIFY|CREATE|DROP|SET|WHERE)\b")


def test_sql_is_never_formatted_with_values() -> None:
    from rota.store.postgres.queries import MIGRATIONS_DIR, QUERIES, QUERIES_FILES, SCHEMA_FILE

    assert len(QUERIES_FILES) > 1
    for path in [*QUERIES_FILES, SCHEMA_FILE, *MIGRATIONS_DIR.glob("*.sql")]:
        assert "%" not in path.read_text(), f"{path.name}: parameters are :name, never %"
    for name, text in QUERIES.items():
        stripped = re.sub(r"%\([a-z_]+\)b", "", text)
        assert "%" not in stripped and "{" not in stripped.replace("'{}'", ""), name
    package = Path(SCHEMA_FILE).parent
    trees = [ast.parse(path.read_text()) for path in sorted(package.glob("*.py"))]
    for node in (node for tree in trees for node in ast.walk(tree)):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            pytest.fail(f"%-formatting at line {node.lineno}")
        if isinstance(node, ast.JoinedStr):
            text = "".join(str(v.value) for v in node.values if isinstance(v, ast.Constant))
            assert not SQL_WORDS.search(text), f"f-string SQL at line {node.lineno}"
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "format":
            # only psycopg.sql compositions of identifiers
            assert isinstance(node.func, ast.Attribute)
            base = node.func.value
            assert isinstance(base, ast.Call) and ast.unparse(base.func) == "sql.SQL"
            for arg in node.args:
                assert isinstance(arg, ast.Call) and ast.unparse(arg.func) == "sql.Identifier"


def test_named_query_loader() -> None:
    from rota.store.postgres.queries import psycopg_queries

    text = "-- name: a\n-- doc: x\nSELECT :x::int, 'a'::text, :y\n\n-- name: b\nSELECT 1\n"
    assert psycopg_queries(text) == {"a": "SELECT %(x)b::int, 'a'::text, %(y)b", "b": "SELECT 1"}


# ---- the pending index --------------------------------------------------------------


def test_pending_query_uses_the_partial_index(store: Any, admin: Any) -> None:
    """With 200k finished rows (and 1000 pending) a page of the pending query is an Index
    Scan on ``jobs_pending_idx`` whose condition is the cursor: no Seq Scan on jobs, no
    Sort, nothing read of the finished rows. ``EXPLAIN ANALYZE`` on PostgreSQL 15 (first
    page, then a later page; the generic plan of the prepared statement is the same)::

        Limit  (cost=0.28..189.29 rows=50 width=54) (actual time=0.012..0.037 rows=50 loops=1)
          ->  Index Scan using jobs_pending_idx on jobs
                (cost=0.28..1349.84 rows=357 width=54) (actual time=0.011..0.033 rows=50 loops=1)
                Index Cond: (ROW((- (priority)::bigint), seq)
                             > ROW('-4611686018427387904'::bigint, '0'::bigint))
        Execution Time: 0.059 ms

        Limit  (cost=0.28..189.29 rows=50 width=54) (actual time=0.015..0.042 rows=50 loops=1)
          ->  Index Scan using jobs_pending_idx on jobs
                (cost=0.28..1349.84 rows=357 width=54) (actual time=0.015..0.038 rows=50 loops=1)
                Index Cond: (ROW((- (priority)::bigint), seq) > ROW('-3'::bigint, '200250'::bigint))
        Execution Time: 0.058 ms

    (A page larger than the whole pending set may instead be planned as a Bitmap Index Scan
    of the same partial index plus a sort of the pending rows: still never a Seq Scan.)
    """
    from rota.store.postgres.queries import query

    t0 = time.perf_counter()
    admin.execute(
        "INSERT INTO jobs (id, task, queue, payload, state, created_at, finished_at) "
        "SELECT 'done-' || g, 'tests.noop', 'default', '{}', 'succeeded', 0, 0 "
        "FROM generate_series(1, 200000) AS g"
    )
    assert time.perf_counter() - t0 < 30
    pending = [new_job(priority=i % 5) for i in range(1000)]
    store.submit(pending)
    admin.execute("ANALYZE jobs")

    seen = store.pending_jobs(50)
    assert [(j.priority, j.seq) for j in seen] == sorted(
        ((j.priority, j.seq) for j in seen), key=lambda k: (-k[0], k[1])
    )
    cursor = (seen[-1].priority, seen[-1].seq)
    while page := store.pending_jobs(300, after=(seen[-1].priority, seen[-1].seq)):
        seen += page
    assert [j.id for j in seen] == [
        j.id
        for j in sorted(store.get_jobs([p.id for p in pending]), key=lambda r: (-r.priority, r.seq))
    ]

    for neg_priority, seq in [(-(2**62), 0), (-cursor[0], cursor[1])]:
        params = {"neg_priority": neg_priority, "seq": seq, "limit": 50}
        plan = "\n".join(
            row[0] for row in admin.execute(("EXPLAIN " + query("pending_jobs")).encode(), params)
        )
        assert re.search(r"Index (Only )?Scan using jobs_pending_idx on jobs", plan), plan
        assert "Index Cond: (ROW(" in plan, plan
        assert "Seq Scan" not in plan and "Sort" not in plan, plan
    # Whatever the page size, the finished rows are never read.
    params = {"neg_priority": -(2**62), "seq": 0, "limit": 5000}
    plan = "\n".join(
        row[0] for row in admin.execute(("EXPLAIN " + query("pending_jobs")).encode(), params)
    )
    assert "jobs_pending_idx" in plan and "Seq Scan" not in plan, plan


def test_pending_cursor_covers_extreme_priorities(store: Any) -> None:
    low, high = -(2**31), 2**31 - 1
    jobs = [new_job(priority=p) for p in (0, low, high, 5, -5, high, low)]
    store.submit(jobs)
    seen = []
    after = None
    while True:
        page = store.pending_jobs(2, after=after)
        if not page:
            break
        seen += page
        after = (page[-1].priority, page[-1].seq)
    assert [j.priority for j in seen] == [high, high, 5, 0, -5, low, low]
    assert len({j.id for j in seen}) == len(jobs)


# ---- transactional enqueue ----------------------------------------------------------


def test_submit_in_transaction_rollback_leaves_nothing(store: Any) -> None:
    store.migrate()
    job = new_job()
    with psycopg.connect(store.conninfo) as conn:
        before = conn.execute("SHOW search_path").fetchone()
        assert store.submit_in_transaction(conn, [job]) == [job.id]
        assert conn.execute("SHOW search_path").fetchone() == before
        assert store.get_job(job.id) is None  # not visible outside the transaction
        conn.rollback()
    assert store.get_job(job.id) is None
    assert store.count_jobs() == {}


def test_submit_in_transaction_commit_creates_and_wakes(url: str, store: Any) -> None:
    store.migrate()
    scheduler = open_store(url)
    try:
        scheduler.wait_for_pending(0)  # LISTEN from now on
        jobs = [new_job(), new_job(delay=60)]
        with psycopg.connect(store.conninfo) as conn:
            conn.execute("CREATE TEMP TABLE orders (id int)")
            conn.execute("INSERT INTO orders VALUES (1)")
            store.submit_in_transaction(conn, jobs)
            t0 = time.monotonic()
            scheduler.wait_for_pending(0.3)  # the NOTIFY waits for the commit
            assert time.monotonic() - t0 >= 0.25
            conn.commit()
        t0 = time.monotonic()
        scheduler.wait_for_pending(5)
        assert time.monotonic() - t0 < 0.5
        states = {r.id: r.state for r in store.get_jobs([j.id for j in jobs])}
        assert states == {jobs[0].id: JobState.PENDING, jobs[1].id: JobState.SCHEDULED}
    finally:
        scheduler.close()


def test_submit_in_transaction_on_an_autocommit_connection(store: Any) -> None:
    store.migrate()
    job = new_job()
    with psycopg.connect(store.conninfo, autocommit=True) as conn:
        store.submit_in_transaction(conn, [job])
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert store.get_job(job.id) is not None


# ---- claims across processes --------------------------------------------------------


def _assign_in_process(url: str, lease: tuple[Any, ...], job_ids: list[str], node_id: str,
                       barrier: Any, out: Any) -> None:  # fmt: skip
    store = open_store(url)
    try:
        barrier.wait()
        placed = 0
        for i in range(0, len(job_ids), 40):
            batch = [Assignment(job_id, node_id) for job_id in job_ids[i : i + 40]]
            placed += store.assign(Lease(*lease), batch)
        out.put(placed)
    finally:
        store.close()


def _start_in_process(url: str, node_ids: list[str], barrier: Any, out: Any) -> None:
    store = open_store(url)
    try:
        barrier.wait()
        started: list[tuple[str, int]] = []
        for node_id in node_ids:
            while batch := store.start_jobs(node_id, 7, 60):
                started += [(j.id, j.token) for j in batch]
        out.put(started)
    finally:
        store.close()


def _run_processes(target: Any, args_list: list[tuple[Any, ...]]) -> list[Any]:
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(len(args_list)), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, out)) for args in args_list]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return results


def test_skip_locked_claims_never_hand_a_job_out_twice(url: str, store: Any) -> None:
    n_jobs, n_procs = 600, 4
    jobs = [new_job(priority=i % 3) for i in range(n_jobs)]
    store.submit(jobs)
    nodes = [f"node-{i}" for i in range(n_procs)]
    for node_id in nodes:
        store.register_node(node_spec(node_id))
    lease = store.acquire_lease("scheduler", "test", 60)
    fields = (lease.name, lease.holder, lease.token, lease.expires_at, lease.acquired_at)
    ids = [j.id for j in jobs]

    # Every process tries to place every job (on its own node) at the same time.
    placed = _run_processes(
        _assign_in_process, [(url, fields, ids, nodes[p]) for p in range(n_procs)]
    )
    assert sum(placed) == n_jobs
    records = store.get_jobs(ids)
    assert all(r.state is JobState.ASSIGNED and r.token == 1 for r in records)
    by_node = {n.id: n.assigned for n in store.list_nodes()}
    assert sum(by_node.values()) == n_jobs

    # Every process starts jobs of every node at the same time, in a different order.
    started = _run_processes(
        _start_in_process,
        [(url, nodes[p:] + nodes[:p]) for p in range(n_procs)],
    )
    flat = [job_id for batch in started for job_id, _ in batch]
    assert len(flat) == n_jobs
    assert len(set(flat)) == n_jobs
    records = store.get_jobs(ids)
    assert all(r.state is JobState.RUNNING and r.attempts == 1 for r in records)


# ---- LISTEN / NOTIFY ----------------------------------------------------------------


def _latencies(wait: Any, act: Any, rounds: int = 5) -> list[float]:
    """How long after ``act()`` starts a ``wait()`` blocked in another thread returns."""
    out = []
    for _ in range(rounds):
        woke: list[float] = []

        def run(woke: list[float] = woke) -> None:
            wait()
            woke.append(time.perf_counter())

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(0.1)
        assert not woke, "the wait returned before anything happened"
        t0 = time.perf_counter()
        act()
        thread.join(10)
        out.append(woke[0] - t0)
    return out


def assert_fast(latencies: list[float]) -> None:
    assert statistics.median(latencies) < 0.05, latencies
    assert max(latencies) < 0.2, latencies


def test_wait_for_pending_wakes_within_milliseconds_of_a_submit(url: str, store: Any) -> None:
    scheduler = open_store(url)
    try:
        store.submit([new_job()])
        scheduler.wait_for_pending(0)  # LISTEN
        assert_fast(
            _latencies(lambda: scheduler.wait_for_pending(5), lambda: store.submit([new_job()]))
        )
        t0 = time.monotonic()
        scheduler.wait_for_pending(0.2)  # nothing happened: a full wait
        assert time.monotonic() - t0 >= 0.15
    finally:
        scheduler.close()


def test_wait_for_assignments_wakes_within_milliseconds_of_an_assign(url: str, store: Any) -> None:
    worker = open_store(url)
    try:
        worker.register_node(node_spec("n1"))
        worker.register_node(node_spec("n2"))
        lease = store.acquire_lease("scheduler", "s", 60)

        def assign_one(node_id: str) -> None:
            job = new_job()
            store.submit([job])
            assert store.assign(lease, [Assignment(job.id, node_id)]) == 1

        worker.wait_for_assignments("n1", 0)
        assert_fast(
            _latencies(lambda: worker.wait_for_assignments("n1", 5), lambda: assign_one("n1"))
        )
        # Work for another node does not wake this one.
        t0 = time.monotonic()
        threading.Timer(0.05, assign_one, args=("n2",)).start()
        worker.wait_for_assignments("n1", 0.3)
        assert time.monotonic() - t0 >= 0.25
        # ...but a cancellation of one of its running jobs does.
        assign_one("n1")
        running = worker.start_jobs("n1", 100, 60)[0]
        worker.wait_for_assignments("n1", 0)  # forget the assignment's wake-up
        assert_fast(
            _latencies(
                lambda: worker.wait_for_assignments("n1", 5),
                lambda: store.cancel(running.id),
                rounds=1,
            )
        )
    finally:
        worker.close()


def test_wait_for_results_wakes_on_completion(url: str, store: Any) -> None:
    producer = open_store(url)
    try:
        store.register_node(node_spec("n1"))
        lease = store.acquire_lease("scheduler", "s", 60)
        jobs = [new_job() for _ in range(5)]
        producer.submit(jobs)
        store.assign(lease, [Assignment(j.id, "n1") for j in jobs])
        running = store.start_jobs("n1", 10, 60)
        results: list[Any] = []
        it = iter(running)

        def finish_one() -> None:
            job = next(it)
            store.complete([Outcome(job.id, job.token, OutcomeKind.SUCCEEDED, result="1")])

        def wait_one() -> None:
            job_id = running[len(results)].id
            results.append(producer.wait_for_results([job_id], 5))

        assert_fast(_latencies(wait_one, finish_one))
        assert [r[0].state for r in results] == [JobState.SUCCEEDED] * 5
        assert producer.wait_for_results([jobs[0].id, "missing"], 0.1) != []
    finally:
        producer.close()


def test_channels_are_namespaced_by_schema(url: str) -> None:
    other_url = re.sub(r"schema=([a-z0-9_]+)", r"schema=\1_other", url)
    a, b = open_store(url), open_store(other_url)
    try:
        assert a.pending_channel != b.pending_channel
        a.wait_for_pending(0)
        b.submit([new_job()])
        t0 = time.monotonic()
        a.wait_for_pending(0.3)
        assert time.monotonic() - t0 >= 0.25
    finally:
        a.close()
        b.close()
        with psycopg.connect(a.conninfo, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(b.schema))
            )


def listening_channels(store: Any) -> set[str]:
    """What the store's listening connection LISTENs to, as the server sees it."""
    if store._listen_conn is None:
        return set()
    return {row[0] for row in store._listen_conn.execute("SELECT pg_listening_channels()")}


def test_channels_nobody_waits_on_are_dropped(
    url: str, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A LISTENing connection nobody reads holds back PostgreSQL's global notification
    queue: a standby scheduler (no more waits, still calling the store) and a producer
    done waiting for results must not stay subscribed."""
    from rota.store.postgres import listen

    monkeypatch.setattr(listen, "LISTEN_IDLE", 1.5)
    monkeypatch.setattr(listen, "TEND_EVERY", 0.0)
    store.wait_for_pending(0)
    store.wait_for_assignments("n1", 0)
    assert listening_channels(store) == {store.pending_channel, store.node_channel("n1")}
    store.submit([new_job()])  # a notification left unread...
    time.sleep(1.6)
    store.acquire_lease("scheduler", "standby", 5)  # ...read and forgotten by the next call
    assert listening_channels(store) == set()
    store.wait_for_results(["missing"], 0.05)
    assert listening_channels(store) == set()  # the results channel is for the call only
    t0 = time.monotonic()
    store.wait_for_pending(5)  # subscribing again: pending work exists, no wait
    assert time.monotonic() - t0 < 0.5


# ---- reconnection -------------------------------------------------------------------


def terminate_backends(store: Any) -> int:
    with psycopg.connect(store.conninfo, autocommit=True, application_name="rota-test-admin") as c:
        row = c.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            [store.application_name],
        ).fetchone()
    time.sleep(0.05)
    return int(row[0])


def test_store_reconnects_after_its_backends_are_terminated(url: str, store: Any) -> None:
    other = open_store(url)
    try:
        store.submit([new_job()])
        store.wait_for_pending(0)  # a listening connection too
        assert terminate_backends(store) >= 2
        job = new_job()
        store.submit([job])  # not lost, not doubled
        assert [r.id for r in store.get_jobs([job.id])] == [job.id]
        assert len(store.list_jobs()) == 2
        # The first waits return at once: notifications could have been lost while the
        # listening connection was down, and pending jobs exist.
        for _ in range(3):
            store.wait_for_pending(0)
        assert_fast(
            _latencies(lambda: store.wait_for_pending(5), lambda: other.submit([new_job()]), 2)
        )
        # Again, with work in flight on every kind of call.
        store.register_node(node_spec("n1"))
        lease = store.acquire_lease("scheduler", "s", 60)
        assert terminate_backends(store) >= 1
        assert store.assign(lease, [Assignment(job.id, "n1")]) == 1
        assert terminate_backends(store) >= 1
        (started,) = store.start_jobs("n1", 5, 60)
        assert terminate_backends(store) >= 1
        assert store.complete([Outcome(started.id, started.token, OutcomeKind.SUCCEEDED)]) == [True]
    finally:
        other.close()


# ---- leases and fencing -------------------------------------------------------------


def test_lease_tokens_grow_and_fenced_calls_check_them(store: Any) -> None:
    first = store.acquire_lease("scheduler", "a", 0.3)
    assert first.token == 1
    assert store.acquire_lease("scheduler", "b", 10) is None
    renewed = store.acquire_lease("scheduler", "a", 0.3)
    assert renewed.token == 1 and renewed.expires_at >= first.expires_at
    time.sleep(0.4)
    calls: list[Callable[[], object]] = [
        lambda: store.promote_due(first, 10),
        lambda: store.reap(first, 30),
        lambda: store.assign(first, []),
    ]
    for call in calls:
        with pytest.raises(LeaseLost):
            call()
    second = store.acquire_lease("scheduler", "b", 10)
    assert second.token == 2
    store.release_lease(first)  # not held any more: no effect
    assert store.get_lease("scheduler") == second
    store.release_lease(second)
    assert store.get_lease("scheduler") is None
    third = store.acquire_lease("scheduler", "a", 10)
    assert third.token == 3  # a released lease still gives the next holder a new token
    assert store.promote_due(third, 10) == 0
    with pytest.raises(LeaseLost):
        store.promote_due(second, 10)


def test_a_stale_leader_cannot_assign(store: Any) -> None:
    store.register_node(node_spec("n1"))
    job = new_job()
    store.submit([job])
    stale = store.acquire_lease("scheduler", "old", 0.2)
    time.sleep(0.3)
    store.acquire_lease("scheduler", "new", 10)
    with pytest.raises(LeaseLost):
        store.assign(stale, [Assignment(job.id, "n1")])
    assert store.get_job(job.id).state is JobState.PENDING


# ---- prune --------------------------------------------------------------------------


def test_prune_deletes_only_final_jobs_and_gone_nodes_past_retention(
    store: Any, admin: Any
) -> None:
    old = [new_job() for _ in range(3)]
    recent, waiting = new_job(), new_job(delay=3600)
    store.submit([*old, recent, waiting])
    for job in [*old, recent]:
        store.cancel(job.id)
    store.register_node(node_spec("gone"))
    store.register_node(node_spec("here"))
    store.set_node_state("gone", NodeState.STOPPED)
    admin.execute(
        "UPDATE jobs SET finished_at = finished_at - 7200, created_at = created_at - 7200 "
        "WHERE id = ANY(%s)",
        [[j.id for j in old]],
    )
    admin.execute("UPDATE nodes SET gone_at = gone_at - 7200 WHERE id = 'gone'")
    assert store.prune(3600) == 3
    assert {r.id for r in store.list_jobs()} == {recent.id, waiting.id}
    assert [n.id for n in store.list_nodes()] == ["here"]
    assert store.prune(3600) == 0


def test_prune_works_in_batches(store: Any, admin: Any) -> None:
    from rota.store.postgres import store as postgres

    n = postgres.PRUNE_BATCH * 2 + 7
    admin.execute(
        "INSERT INTO jobs (id, task, queue, payload, state, created_at, finished_at) "
        "SELECT 'old-' || g, 't', 'default', '{}', 'dead', 0, 0 FROM generate_series(1, %s) g",
        [n],
    )
    assert store.prune(60) == n
    assert store.count_jobs() == {}


# ---- clock --------------------------------------------------------------------------


def test_times_come_from_the_server_clock(store: Any, admin: Any) -> None:
    (server,) = admin.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    assert abs(store.now() - server) < 1
    job = new_job(delay=30)
    store.submit([job])
    record = store.get_job(job.id)
    assert record.state is JobState.SCHEDULED
    assert record.scheduled_at == pytest.approx(record.created_at + 30)
    assert abs(record.created_at - server) < 1


def test_a_forked_child_opens_its_own_connections(store: Any) -> None:
    import os

    store.submit([new_job()])
    store.wait_for_pending(0)
    backends = set(store._pool._pool) | {store._listen_conn}
    pids = {conn.info.backend_pid for conn in backends}
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            store.submit([new_job()])
            store.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's connections were neither used nor closed by the child.
    assert all(not conn.closed and not conn.broken for conn in backends)
    assert store._run(lambda conn: conn.info.backend_pid) in pids
    assert store._listen_conn is not None and store._listen_conn.info.backend_pid in pids
    assert len(store.list_jobs()) == 2
    store.wait_for_pending(0)


def test_overlapping_batches_in_opposite_orders_do_not_deadlock(url: str, store: Any) -> None:
    """Batch statements lock their rows in id order, so two callers completing the same
    jobs in opposite orders wait for each other instead of deadlocking (which PostgreSQL
    would break after a second by failing one of them)."""
    store.register_node(node_spec("n1"))
    lease = store.acquire_lease("scheduler", "s", 60)
    jobs = [new_job() for _ in range(300)]
    store.submit(jobs)
    store.assign(lease, [Assignment(j.id, "n1") for j in jobs])
    running = store.start_jobs("n1", 300, 60)
    others = [open_store(url) for _ in range(2)]
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def finish(s: Any, batch: list[Any]) -> None:
        barrier.wait()
        try:
            s.heartbeat("n1", [(r.id, r.token) for r in batch], 60)
            results.append(
                s.complete([Outcome(r.id, r.token, OutcomeKind.SUCCEEDED) for r in batch])
            )
        except Exception as exc:  # pragma: no cover - the failure being tested
            results.append(exc)

    try:
        threads = [
            threading.Thread(target=finish, args=(others[0], running)),
            threading.Thread(target=finish, args=(others[1], running[::-1])),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for s in others:
            s.close()
    assert all(isinstance(r, list) for r in results), results
    accepted = [sum(pair) for pair in zip(results[0], reversed(results[1]), strict=True)]
    assert sorted(set(accepted)) == [1]  # whichever order the two ran in
    assert store.count_jobs() == {("default", JobState.SUCCEEDED): 300}


# ---- workflows, unique keys, schedules ----------------------------------------------


def _finish(store: Any, job_id: str, kind: OutcomeKind = OutcomeKind.SUCCEEDED) -> None:
    """Take a pending job through a node to the end with ``kind``."""
    node_id = f"n-{uuid.uuid4().hex[:8]}"
    store.register_node(node_spec(node_id))
    lease = store.acquire_lease("scheduler", "test", 60)
    assert store.assign(lease, [Assignment(job_id, node_id)]) == 1
    (rec,) = store.start_jobs(node_id, 1, 60)
    assert store.complete([Outcome(rec.id, rec.token, kind, result="1")]) == [True]


def test_a_store_of_the_previous_version_is_upgraded(url: str) -> None:
    """A schema made by 0001+0002 (the release before workflows), with jobs in it, is
    migrated in place: old rows read back with the new fields' defaults and can be parents."""
    from rota.store.postgres.queries import QUERIES, migrations

    old = [m for m in migrations() if m[0] <= 2]
    store = open_store(url + "&auto_migrate=0")
    try:
        with psycopg.connect(store.conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(store.schema)))
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(store.schema)))
            conn.execute(QUERIES["create_migrations_table"])
            for version, name, text in old:
                conn.execute(text.encode())
                conn.execute(QUERIES["record_migration"], {"version": version, "name": name})
            conn.execute(
                "INSERT INTO jobs (id, task, queue, payload, state, created_at, finished_at) "
                "VALUES ('old-done', 't', 'default', %s, 'succeeded', 1, 2), "
                "('old-pending', 't', 'default', %s, 'pending', 1, NULL)",
                [PAYLOAD, PAYLOAD],
            )
        assert store.migrate() == [name for v, name, _ in migrations() if v > 2]
        done, pending = store.get_jobs(["old-done", "old-pending"])
        assert (done.state, pending.state) == (JobState.SUCCEEDED, JobState.PENDING)
        assert pending.depends_on == () and pending.concurrency_key is None
        assert (pending.concurrency_limit, pending.pass_results) == (0, False)
        (page,) = store.pending_jobs(10)
        assert (page.id, page.task, page.concurrency_key) == ("old-pending", "t", None)
        child = new_job(depends_on=("old-done", "old-pending"))
        store.submit([child])
        lease = store.acquire_lease("scheduler", "test", 60)
        assert store.resolve_dependencies(lease, 10) == 0  # old-pending is not done yet
        _finish(store, "old-pending")
        assert store.resolve_dependencies(lease, 10) == 1
        assert store.get_job(child.id).state is JobState.PENDING
    finally:
        store.close()


def test_children_are_found_through_the_partial_gin_index(store: Any, admin: Any) -> None:
    """resolve_dependencies never reads the waiting jobs unrelated to the parents that
    finished: the candidates come from a Bitmap Index Scan on jobs_children_idx."""
    from rota.store.postgres.queries import query

    admin.execute(
        "INSERT INTO jobs (id, task, queue, payload, state, created_at, has_children) "
        "SELECT 'p-' || g, 't', 'default', '{}', 'pending', 0, true "
        "FROM generate_series(1, 20000) AS g"
    )
    admin.execute(
        "INSERT INTO jobs (id, task, queue, payload, state, created_at, depends_on) "
        "SELECT 'c-' || g, 't', 'default', '{}', 'waiting', 0, ARRAY['p-' || g] "
        "FROM generate_series(1, 20000) AS g"
    )
    admin.execute("UPDATE jobs SET state = 'dead', finished_at = 0 WHERE id IN ('p-7', 'p-9')")
    admin.execute("INSERT INTO settle_parents (parent_id) VALUES ('p-7'), ('p-9')")  # as reap
    admin.execute("ANALYZE jobs")
    lease = store.acquire_lease("scheduler", "test", 60)
    params = {
        "lease_name": lease.name,
        "holder": lease.holder,
        "token": lease.token,
        "limit": 1000,
        "pending_channel": "x",
        "done_channel": "y",
    }
    with admin.transaction(force_rollback=True):
        plan = "\n".join(
            row[0]
            for row in admin.execute(
                ("EXPLAIN ANALYZE " + query("resolve_dependencies")).encode(), params
            )
        )
    assert "Bitmap Index Scan on jobs_children_idx" in plan, plan
    assert "Seq Scan on jobs" not in plan, plan
    assert store.resolve_dependencies(lease, 1000) == 2
    failed = store.get_jobs(["c-7", "c-9"])
    assert [r.error for r in failed] == [
        "upstream failed: parent p-7 is dead",
        "upstream failed: parent p-9 is dead",
    ]
    assert store.resolve_dependencies(lease, 1000) == 0
    assert store.count_jobs()[("default", JobState.WAITING)] == 19998


def test_a_wide_fan_out_settles_limit_jobs_per_call(store: Any) -> None:
    parent = new_job()
    children = [new_job(depends_on=(parent.id,)) for _ in range(25)]
    store.submit([parent, *children])
    _finish(store, parent.id)
    lease = store.acquire_lease("scheduler", "test", 60)
    assert [store.resolve_dependencies(lease, 10) for _ in range(4)] == [10, 10, 5, 0]
    assert len(store.pending_jobs(100)) == 25


def test_a_child_submitted_while_its_parent_finishes_is_never_lost(url: str, store: Any) -> None:
    """The child's submit locks its parent row: either the parent is final already (the
    child is queued for settling) or it is marked has_children before it can finish (then
    the trigger queues it). Raced many times; every child must settle."""
    other = open_store(url)
    node_id = "racer"
    store.register_node(node_spec(node_id, slots=100))
    lease = store.acquire_lease("scheduler", "test", 60)
    rounds = 40
    parents = [new_job() for _ in range(rounds)]
    store.submit(parents)
    store.assign(lease, [Assignment(p.id, node_id) for p in parents])
    running = {r.id: r for r in store.start_jobs(node_id, rounds, 60)}
    children = [new_job(depends_on=(p.id,)) for p in parents]
    try:
        for parent, child in zip(parents, children, strict=True):
            rec = running[parent.id]
            barrier = threading.Barrier(2)

            def complete(rec: Any = rec, barrier: Any = barrier) -> None:
                barrier.wait()
                other.complete([Outcome(rec.id, rec.token, OutcomeKind.SUCCEEDED, "1")])

            t = threading.Thread(target=complete)
            t.start()
            barrier.wait()
            store.submit([child])
            t.join()
    finally:
        other.close()
    moved = sum(store.resolve_dependencies(lease, 1000) for _ in range(3))
    assert moved == rounds
    assert {r.state for r in store.get_jobs([c.id for c in children])} == {JobState.PENDING}


def test_a_parent_replaced_by_its_unique_holder_is_the_one_depended_on(store: Any) -> None:
    holder = new_job(unique_key="nightly")
    store.submit([holder])
    dup = new_job(unique_key="nightly")
    child = new_job(depends_on=(dup.id,))
    assert store.submit([dup, child]) == [holder.id, child.id]
    assert store.get_job(child.id).depends_on == (holder.id,)
    _finish(store, holder.id)
    lease = store.acquire_lease("scheduler", "test", 60)
    assert store.resolve_dependencies(lease, 10) == 1


def test_unknown_parent_in_a_transaction_leaves_the_callers_work(store: Any) -> None:
    store.migrate()
    parent = new_job()
    with psycopg.connect(store.conninfo) as conn:
        conn.execute("CREATE TEMP TABLE orders (id int)")
        conn.execute("INSERT INTO orders VALUES (1)")
        before = conn.execute("SHOW search_path").fetchone()
        store.submit_in_transaction(conn, [parent])
        with pytest.raises(InvalidOption, match="nope"):
            store.submit_in_transaction(conn, [new_job(depends_on=("nope",))])
        assert conn.execute("SHOW search_path").fetchone() == before
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (1,)
        child = new_job(depends_on=(parent.id,), unique_key="once")
        assert store.submit_in_transaction(conn, [child]) == [child.id]
        again = new_job(unique_key="once")
        assert store.submit_in_transaction(conn, [again]) == [child.id]  # its own tx sees it
        conn.commit()
    assert {r.state for r in store.get_jobs([parent.id, child.id])} == {
        JobState.PENDING,
        JobState.WAITING,
    }


def test_a_rolled_back_unique_job_does_not_hold_its_key(store: Any) -> None:
    store.migrate()
    first = new_job(unique_key="k")
    with psycopg.connect(store.conninfo) as conn:
        assert store.submit_in_transaction(conn, [first]) == [first.id]
        conn.rollback()
    second = new_job(unique_key="k")
    assert store.submit([second]) == [second.id]


def test_prune_keeps_parents_of_waiting_children_and_frees_unique_keys(
    store: Any, admin: Any
) -> None:
    parent, other = new_job(), new_job()
    keyed = new_job(unique_key="k")
    child = new_job(depends_on=(parent.id, other.id))
    store.submit([parent, other, keyed, child])
    _finish(store, parent.id)
    _finish(store, keyed.id)
    admin.execute("UPDATE jobs SET finished_at = finished_at - 7200 WHERE finished_at IS NOT NULL")
    assert store.prune(3600) == 1  # keyed; parent stays while its child waits
    assert admin.execute("SELECT count(*) FROM unique_keys").fetchone() == (0,)
    assert store.get_job(parent.id) is not None
    _finish(store, other.id)
    lease = store.acquire_lease("scheduler", "test", 60)
    assert store.resolve_dependencies(lease, 10) == 1
    admin.execute("UPDATE jobs SET finished_at = finished_at - 7200 WHERE finished_at IS NOT NULL")
    assert store.prune(3600) == 2
    assert store.get_job(parent.id) is None


def test_fire_schedule_with_an_existing_job_id_changes_nothing(store: Any) -> None:
    from rota.core.model import ScheduleRecord

    store.put_schedules([ScheduleRecord("s", "{}")])
    lease = store.acquire_lease("scheduler", "test", 60)
    fixed = new_job()
    assert store.fire_schedule(lease, "s", 60.0, fixed)
    assert not store.fire_schedule(lease, "s", 120.0, new_job(id=fixed.id, task="other"))
    (rec,) = store.list_schedules()
    assert rec.last_tick == 60.0
    assert store.get_job(fixed.id).task == fixed.task
    keyed = new_job(unique_key="tick")
    assert store.fire_schedule(lease, "s", 180.0, keyed)
    assert store.fire_schedule(lease, "s", 240.0, new_job(unique_key="tick"))  # deduplicated
    assert len(store.list_jobs(limit=10)) == 2


def test_every_statement_that_ends_a_parent_queues_its_children(store: Any) -> None:
    """complete and cancel are in the contract suite; here: reap (lease expired on the last
    attempt) and release_jobs of a job whose cancellation was requested."""
    store.register_node(node_spec("n1"))
    lease = store.acquire_lease("scheduler", "test", 60)
    reaped, released = new_job(), new_job()
    kids = [new_job(depends_on=(reaped.id,)), new_job(depends_on=(released.id,))]
    store.submit([reaped, released, *kids])
    store.assign(lease, [Assignment(reaped.id, "n1"), Assignment(released.id, "n1")])
    running = {r.id: r for r in store.start_jobs("n1", 2, 0.2)}
    store.heartbeat("n1", [(released.id, running[released.id].token)], 60)
    assert store.cancel(released.id) is JobState.RUNNING  # flagged
    assert store.release_jobs("n1", [(released.id, running[released.id].token)]) == 1
    time.sleep(0.3)
    assert store.reap(lease, 60).dead_jobs == 1
    assert store.resolve_dependencies(lease, 10) == 2
    errors = [r.error for r in store.get_jobs([k.id for k in kids])]
    assert errors == [
        f"upstream failed: parent {reaped.id} is dead",
        f"upstream failed: parent {released.id} is cancelled",
    ]
