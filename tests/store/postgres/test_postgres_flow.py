"""Workflows, unique keys and schedules on PostgreSQL: upgrading a store of the previous
version, the GIN index of children, fan-out, races with finishing parents, rollbacks."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402

from rota.core.errors import InvalidOption  # noqa: E402
from rota.core.model import Assignment  # noqa: E402
from rota.core.outcomes import Outcome, OutcomeKind  # noqa: E402
from rota.core.states import JobState  # noqa: E402
from tests.store.postgres.helpers import PAYLOAD, new_job, node_spec, open_store  # noqa: E402

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
