"""Transactional enqueue on PostgreSQL (``submit_in_transaction``): a rollback leaves
nothing, a commit creates the jobs and wakes the scheduler."""

from __future__ import annotations

import time
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")

from rota.core.states import JobState  # noqa: E402
from tests.store.postgres.helpers import new_job, open_store  # noqa: E402

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
