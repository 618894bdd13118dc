"""Prometheus metrics: a worker's own port (per-node registry), and the store-side
counters the scheduler publishes for the dashboard's /metrics."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
import uuid
from typing import Any

import pytest

from rota import Retry, Rota
from rota.core.model import NodeSpec
from rota.core.outcomes import ExecKind, ExecResult, OutcomeLabel
from rota.dashboard.metrics import render
from rota.scheduler import STATS_NAME, Scheduler, SchedulerConfig
from rota.status import collect
from rota.store import open_store
from rota.worker.metrics import WorkerMetrics
from rota.worker.node import WorkerNode
from tests.acceptance.conftest import Fleet
from tests.observability.conftest import node_in_thread, wait_final
from tests.observability.test_logs import WORKER, job_record

pytest.importorskip("prometheus_client")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        return str(r.read().decode())


def value(text: str, series: str) -> float:
    """The value of one series line, e.g. ``rota_worker_jobs_in_flight``; 0 if absent."""
    m = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


# ---- the worker's registry -------------------------------------------------------------------
def test_each_node_has_its_own_registry_served_on_its_port() -> None:
    from prometheus_client import REGISTRY

    a, b = WorkerMetrics(), WorkerMetrics()
    try:
        a.job_started("t", "q")
        a.job_ended("t", "q", OutcomeLabel.SUCCEEDED)
        a.job_ran("t", "q", 0.02)
        a.lease_lost("t", "q", "heartbeat")
        a.track_in_flight(lambda: 3)
        a.set_node("w1-aaa", "w1")
        a.set_node("w1-bbb", "w1")  # registered again: the old id goes
        port = a.serve(0)
        assert port > 0 and a.port == port
        text = scrape(port)
        b_text = b.render().decode()
    finally:
        a.close()
        b.close()
    labels = 'outcome="succeeded",queue="q",task="t"'
    assert value(text, f"rota_worker_jobs_total{{{labels}}}") == 1
    assert value(text, 'rota_worker_jobs_total{outcome="lease_lost",queue="q",task="t"}') == 1
    assert value(text, 'rota_worker_leases_lost_total{queue="q",reason="heartbeat",task="t"}') == 1
    assert value(text, 'rota_worker_jobs_started_total{queue="q",task="t"}') == 1
    assert value(text, 'rota_worker_job_duration_seconds_count{queue="q",task="t"}') == 1
    assert (
        value(text, 'rota_worker_job_duration_seconds_bucket{le="0.025",queue="q",task="t"}') == 1
    )
    assert value(text, "rota_worker_jobs_in_flight") == 3
    assert 'node="w1-bbb"' in text and 'node="w1-aaa"' not in text
    assert "rota_worker_jobs_total{" not in b_text  # nothing shared between nodes
    assert REGISTRY.get_sample_value("rota_worker_jobs_in_flight") is None  # nor global


def test_node_counts_outcomes_once_the_store_accepts_them() -> None:
    node = WorkerNode(Rota("sqlite:////nonexistent/never-opened.db"))
    node.node_id = "w1-abc"
    node.metrics = metrics = WorkerMetrics()
    cases = [
        (job_record(attempts=1, max_attempts=1), ExecResult(ExecKind.OK, result="1"), True),
        (job_record(attempts=1, max_attempts=3), ExecResult(ExecKind.ERROR, error="E: x"), True),
        (
            job_record(attempts=1, max_attempts=3),
            ExecResult(ExecKind.RETRY, error="Retry: y"),
            True,
        ),
        (
            job_record(attempts=3, max_attempts=3),
            ExecResult(ExecKind.TIMEOUT, error="timed out"),
            True,
        ),
        (job_record(attempts=1, max_attempts=3), ExecResult(ExecKind.ERROR, fatal=True), True),
        (job_record(attempts=1, max_attempts=3), ExecResult(ExecKind.CANCELLED), True),
        (job_record(attempts=1, max_attempts=3), ExecResult(ExecKind.OK, result="2"), False),
    ]
    for job, result, _ in cases:
        node._record(job, result)
    batch, node.outcomes = node.outcomes, []
    node._count_refused(batch, [ok for _, _, ok in cases])
    text = metrics.render().decode()
    got = {
        outcome: value(
            text, f'rota_worker_jobs_total{{outcome="{outcome}",queue="images",task="app.resize"}}'
        )
        for outcome in ("succeeded", "failed", "retried", "dead", "cancelled", "lease_lost")
    }
    assert got == {
        "succeeded": 1,
        "failed": 1,
        "retried": 1,
        "dead": 2,
        "cancelled": 1,
        "lease_lost": 1,
    }
    assert node._reporting == {}  # nothing kept once reported


# ---- a real worker node, scraped -------------------------------------------------------------
def build(url: str) -> Rota:
    app = Rota(url)

    @app.task(name="m.square")
    def square(x: int) -> int:
        return x * x

    @app.task(name="m.slow")
    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "ok"

    @app.task(name="m.fails", queue="other", retries=1, backoff=0.05, backoff_max=0.1)
    async def fails() -> None:
        raise ValueError("no")

    @app.task(name="m.again", retries=1)
    async def again() -> None:
        raise Retry(delay=0.05)

    return app


def test_worker_metrics_port_counts_what_the_node_does(url: str) -> None:
    app = build(url)
    try:
        with node_in_thread(app, name="met", metrics_port=0, queues=("default", "other")) as node:
            assert node.metrics is not None and node.metrics.port
            port = node.metrics.port
            slow = app.get_task("m.slow").submit(1.0)
            deadline = time.monotonic() + 10
            while value(scrape(port), "rota_worker_jobs_in_flight") < 1:
                assert time.monotonic() < deadline, "the slow job never showed as in flight"
                time.sleep(0.05)
            ids = [h.id for h in app.get_task("m.square").submit_many([(i,) for i in range(5)])]
            ids += [app.get_task("m.fails").submit().id, app.get_task("m.again").submit().id]
            wait_final(app, [*ids, slow.id])
            time.sleep(0.3)  # the last outcomes' report
            text = scrape(port)
            node_id = node.node_id
    finally:
        app.close()
    ok = 'outcome="succeeded",queue="default",task="m.square"'
    assert value(text, f"rota_worker_jobs_total{{{ok}}}") == 5
    assert value(text, 'rota_worker_jobs_started_total{queue="default",task="m.square"}') == 5
    fails = 'queue="other",task="m.fails"'
    assert value(text, f'rota_worker_jobs_total{{outcome="failed",{fails}}}') == 1
    assert value(text, f'rota_worker_jobs_total{{outcome="dead",{fails}}}') == 1
    again = 'queue="default",task="m.again"'
    assert value(text, f'rota_worker_jobs_total{{outcome="retried",{again}}}') == 1
    assert value(text, f'rota_worker_jobs_total{{outcome="dead",{again}}}') == 1
    assert (
        value(text, 'rota_worker_job_duration_seconds_count{queue="default",task="m.square"}') == 5
    )
    slow_sum = value(text, 'rota_worker_job_duration_seconds_sum{queue="default",task="m.slow"}')
    assert 0.9 < slow_sum < 5
    assert value(text, "rota_worker_jobs_in_flight") == 0
    assert value(text, f'rota_worker_node_info{{name="met",node="{node_id}"}}') == 1


@pytest.mark.acceptance
@pytest.mark.timeout(60)
def test_rota_worker_metrics_port_option(fleet: Fleet, url: str) -> None:
    import socket

    with socket.socket() as s:  # a free port (the worker binds it right after)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from tests.acceptance.apps import basic

    client = basic.build(url)
    try:
        fleet.scheduler()
        fleet.start(
            "w1",
            [*WORKER, "--metrics-port", str(port)],
        )
        fleet.wait_nodes(1, ["w1"])
        ids = [h.id for h in client.get_task("acc.add").submit_many([(1, 2), (3, 4)])]
        fleet.wait_final(ids, 30)

        def counted() -> bool:
            labels = 'outcome="succeeded",queue="default",task="acc.add"'
            return value(scrape(port), f"rota_worker_jobs_total{{{labels}}}") == 2

        fleet.wait_for("the worker's counters", counted, 10)
    finally:
        client.close()


# ---- store-side counters for the dashboard ------------------------------------------------------
def test_scheduler_totals_carry_over_between_leaders_and_reach_metrics(url: str) -> None:
    store = open_store(url)
    try:
        cfg = SchedulerConfig(failure_timeout=0.2, reap_every=0.0, stats_every=0.0)
        first = Scheduler(url, cfg, holder="s1")
        first.cycle(store)
        assert first.totals["leader_changes"] == 1
        spec = NodeSpec(id=f"gone-{uuid.uuid4().hex[:6]}", name="gone", slots=1, prefetch=0)
        store.register_node(spec)
        time.sleep(0.4)  # silent for longer than the failure timeout
        first.cycle(store)
        assert first.totals["nodes_reaped"] == 1
        assert store.get_stats(STATS_NAME)["nodes_reaped"] == 1  # type: ignore[index]
        assert first.lease is not None
        store.release_lease(first.lease)
        second = Scheduler(url, cfg, holder="s2")
        second.cycle(store)  # takes over: carries on from what the first published
        assert second.totals["leader_changes"] == 2 and second.totals["nodes_reaped"] == 1
        text = render(collect(store)).decode()
    finally:
        store.close()
    assert "rota_scheduler_leader_changes_total 2.0" in text
    assert "rota_scheduler_nodes_reaped_total 1.0" in text
    assert "rota_scheduler_lease_expiries_total 0.0" in text
    assert "rota_scheduler_jobs_requeued_total 0.0" in text
    assert 'rota_nodes{state="dead"} 1.0' in text


def test_metrics_from_a_snapshot_without_totals() -> None:
    """Stats published by an older scheduler: the counters read 0."""
    data: dict[str, Any] = {
        "jobs": {"by_queue": {}},
        "nodes": [],
        "scheduler": {"leader": None, "token": None, "decisions_per_s": None},
    }
    text = render(data).decode()
    assert "rota_scheduler_leader_changes_total 0.0" in text
    assert "# TYPE rota_scheduler_lease_expiries_total counter" in text
