"""Fixtures for the dashboard tests: a store with a node and jobs in several states, made
through the real store API, and a TestClient over ``create_app``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from rota.core.model import Assignment, NewJob, NodeSpec, ScheduleRecord
from rota.core.outcomes import Outcome, OutcomeKind
from rota.core.payload import encode_arguments
from rota.core.periodic import ScheduleSpec
from rota.scheduler import STATS_NAME
from rota.store import SCHEDULER_LEASE, Store, open_store
from tests.dashboard.deps import missing
from tests.stores import STORE_KINDS, store_url

if TYPE_CHECKING:
    from starlette.testclient import TestClient

if missing() is not None:  # test_deps.py says why
    collect_ignore = [
        p.name for p in Path(__file__).parent.glob("test_*.py") if p.name != "test_deps.py"
    ]

TOKEN = "s3cret-dashboard-token"
XSS = "<script>alert(1)</script>"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def new_job(
    task: str, *args: object, queue: str = "default", retries: int = 0, **flow: Any
) -> NewJob:
    """A job; ``flow``: workflow and flow-control fields of ``NewJob`` (depends_on, ...)."""
    return NewJob(
        id=uuid.uuid4().hex,
        task=task,
        queue=queue,
        payload=encode_arguments(list(args), {"note": "kw"}),
        max_attempts=retries + 1,
        **flow,
    )


@dataclass
class Seed:
    node: NodeSpec
    running: str
    dead: str
    dead2: str
    pending: str
    succeeded: str
    xss: str


def seed(store: Store) -> Seed:
    """A node ``w1`` (cpu=4, zone=eu) with a running job, two dead jobs (one with
    a traceback), a succeeded one, a pending one in queue ``images`` and one whose
    argument and task name are HTML."""
    spec = NodeSpec(
        id=f"w1-{uuid.uuid4().hex[:8]}",
        name="w1",
        slots=4,
        prefetch=0,
        resources={"cpu": 4.0},
        labels={"zone": "eu"},
        queues=("default", "images"),
        host="host-a",
        pid=4242,
    )
    store.register_node(spec)
    lease = store.acquire_lease(SCHEDULER_LEASE, "sched-test", 30.0)
    assert lease is not None
    running, dead, dead2, ok = (
        new_job("work.run", 1),
        new_job("work.fail", 2),
        new_job("work.fail", 3),
        new_job("work.ok", 4),
    )
    store.submit([running, dead, dead2, ok])
    assert store.assign(lease, [Assignment(j.id, spec.id) for j in (running, dead, dead2, ok)]) == 4
    started = {r.id: r for r in store.start_jobs(spec.id, 4, 30.0)}
    assert len(started) == 4
    store.complete(
        [
            Outcome(
                dead.id,
                started[dead.id].token,
                OutcomeKind.FAILED,
                error="ValueError: boom",
                traceback='Traceback (most recent call last):\n  File "x.py"\nValueError: boom',
            ),
            Outcome(dead2.id, started[dead2.id].token, OutcomeKind.FAILED, error="E2"),
            Outcome(ok.id, started[ok.id].token, OutcomeKind.SUCCEEDED, result="42"),
        ]
    )
    pending = new_job("images.resize", "a.png", 200, queue="images")
    xss = new_job(XSS, XSS, {"html": XSS})
    store.submit([pending, xss])
    store.put_stats(
        STATS_NAME,
        {
            "leader": "sched-test",
            "token": lease.token,
            "since": lease.acquired_at,
            "policy": "least_loaded",
            "decisions_per_s": 12.5,
            "placed_total": 4,
            "waiting": 1,
            "unplaceable": [{"reason": "needs gpu=1, no node has it", "jobs": 3}],
            "held": [{"reason": "concurrency limit 2 on key user:7", "jobs": 5}],
            "preemptions": 2,
            "preempted_work_s": 31,
            "tenants": [
                {
                    "tenant": "acme",
                    "weight": 2.0,
                    "limit": {"gpu": 8.0},
                    "dominant_share": 0.25,
                    "running": 1,
                    "pending": 3,
                }
            ],
        },
    )
    return Seed(spec, running.id, dead.id, dead2.id, pending.id, ok.id, xss.id)


def run_to_end(store: Store, node_id: str, job_id: str, *, ok: bool) -> None:
    """Place ``job_id`` (pending) on ``node_id``, start it and end it succeeded or dead
    (the node must have no other assigned job)."""
    lease = store.acquire_lease(SCHEDULER_LEASE, "sched-test", 30.0)
    assert lease is not None
    assert store.assign(lease, [Assignment(job_id, node_id)]) == 1
    (started,) = store.start_jobs(node_id, 10, 30.0)
    assert started.id == job_id
    kind = OutcomeKind.SUCCEEDED if ok else OutcomeKind.FAILED
    store.complete([Outcome(job_id, started.token, kind, error=None if ok else "E: parent")])


def settle(store: Store) -> int:
    """What the scheduler leader does for workflows: settle waiting jobs (until stable)."""
    lease = store.acquire_lease(SCHEDULER_LEASE, "sched-test", 30.0)
    assert lease is not None
    total = 0
    while moved := store.resolve_dependencies(lease, 100):
        total += moved
    return total


@dataclass
class Flows:
    workflow: str
    done: str  # a succeeded parent of ``waiting``
    parent: str  # a pending parent of ``waiting``
    waiting: str  # waits for ``done`` and ``parent``
    failed_parent: str  # dead
    upstream_failed: str  # a child of ``failed_parent``
    keyed: str  # pending, with a unique key, a concurrency key and limit, a rate limit
    schedule: str  # a periodic schedule's name


def seed_flows(store: Store, node_id: str, text: str = "") -> Flows:
    """Workflow steps and flow control on top of :func:`seed` (``node_id``: its node):
    a ``waiting`` job with a succeeded and a pending parent, an ``upstream_failed`` job
    under a dead parent, a job with a unique key, a concurrency key and a rate limit, a
    periodic schedule, and held jobs in the scheduler's stats. ``text`` goes into the
    keys, the schedule name and the held reasons (e.g. HTML)."""
    wf = f"wf-{uuid.uuid4().hex[:8]}"
    done = new_job("flow.extract", "a", workflow_id=wf)
    parent = new_job("flow.extract", "b", workflow_id=wf)
    failed_parent = new_job("flow.fetch", "c", workflow_id=wf)
    store.submit([done, parent, failed_parent])
    run_to_end(store, node_id, done.id, ok=True)
    run_to_end(store, node_id, failed_parent.id, ok=False)
    waiting = new_job(
        "flow.merge", "out.csv", depends_on=(done.id, parent.id), pass_results=True, workflow_id=wf
    )
    orphan = new_job("flow.merge", "lost.csv", depends_on=(failed_parent.id,), workflow_id=wf)
    keyed = new_job(
        "flow.sync",
        42,
        unique_key=f"report:{text}42",
        concurrency_key=f"user:{text}7",
        concurrency_limit=2,
        rate_limit="100/60",
    )
    store.submit([waiting, orphan, keyed])
    settle(store)
    name = f"nightly {text}report"
    spec = ScheduleSpec(
        name=name,
        cron="0 7 * * mon",
        tz="Europe/Paris",
        missed="run_once",
        job={
            "task": f"reports.{text}weekly",
            "queue": "default",
            "payload": '{"args":[],"kwargs":{}}',
        },
    )
    store.put_schedules([ScheduleRecord(name, spec.to_json())])
    stats = store.get_stats(STATS_NAME) or {}
    stats["held"] = [
        {"reason": f"concurrency limit 2 on key user:{text}7", "jobs": 5},
        {"reason": "rate limit 100/60s on task flow.sync", "jobs": 2},
    ]
    store.put_stats(STATS_NAME, stats)
    return Flows(wf, done.id, parent.id, waiting.id, failed_parent.id, orphan.id, keyed.id, name)


@pytest.fixture(params=STORE_KINDS)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Store]]:
    """A fresh store of every kind (Redis and PostgreSQL skip when their server is down)."""
    with store_url(request.param, tmp_path) as u:
        s = open_store(u)
        try:
            yield u, s
        finally:
            s.close()


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    with store_url("sqlite", tmp_path) as u:
        yield u


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    s = open_store(url)
    yield s
    s.close()


@pytest.fixture
def seeded(store: Store) -> Seed:
    return seed(store)


@pytest.fixture
def client(url: str, seeded: Seed) -> Iterator[TestClient]:
    """A client over a dashboard that requires TOKEN; no credentials by default."""
    from starlette.testclient import TestClient

    from rota.dashboard import create_app

    app = create_app(url, TOKEN, sample_interval=0.05)
    with TestClient(app, base_url="http://testserver") as c:
        yield c


@pytest.fixture
def authed(client: TestClient) -> TestClient:
    client.headers.update(BEARER)
    return client
