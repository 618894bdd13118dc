"""LISTEN/NOTIFY on PostgreSQL: waits wake within milliseconds, channels are namespaced by
schema and dropped when nobody waits on them."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402

from rota.core.model import Assignment  # noqa: E402
from rota.core.outcomes import Outcome, OutcomeKind  # noqa: E402
from rota.core.states import JobState  # noqa: E402
from tests.store.postgres.helpers import assert_fast, latencies, new_job, node_spec, open_store  # noqa: E402

# ---- LISTEN / NOTIFY ----------------------------------------------------------------


def test_wait_for_pending_wakes_within_milliseconds_of_a_submit(url: str, store: Any) -> None:
    scheduler = open_store(url)
    try:
        store.submit([new_job()])
        scheduler.wait_for_pending(0)  # LISTEN
        assert_fast(
            latencies(lambda: scheduler.wait_for_pending(5), lambda: store.submit([new_job()]))
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
            latencies(lambda: worker.wait_for_assignments("n1", 5), lambda: assign_one("n1"))
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
            latencies(
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

        assert_fast(latencies(wait_one, finish_one))
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
