"""Reconnection on PostgreSQL: the store survives its backends being terminated, with work
in flight on every kind of call."""

from __future__ import annotations

import time
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")

from rota.core.model import Assignment  # noqa: E402
from rota.core.outcomes import Outcome, OutcomeKind  # noqa: E402
from tests.store.postgres.helpers import assert_fast, latencies, new_job, node_spec, open_store  # noqa: E402

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
            latencies(lambda: store.wait_for_pending(5), lambda: other.submit([new_job()]), 2)
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
