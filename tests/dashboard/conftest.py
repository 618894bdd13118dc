"""Fixtures for the dashboard tests: a store with a node and jobs in several states, made
through the real store API, and a TestClient over ``create_app``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from rota.model import Assignment, NewJob, NodeSpec, Outcome, OutcomeKind
from rota.payload import encode_arguments
from rota.scheduler import STATS_NAME
from rota.store import SCHEDULER_LEASE, Store, open_store
from tests.dashboard.deps import missing
from tests.stores import store_url

if TYPE_CHECKING:
    from starlette.testclient import TestClient

if missing() is not None:  # test_deps.py says why
    collect_ignore = [
        p.name for p in Path(__file__).parent.glob("test_*.py") if p.name != "test_deps.py"
    ]

TOKEN = "s3cret-dashboard-token"
XSS = "<script>alert(1)</script>"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def new_job(task: str, *args: object, queue: str = "default", retries: int = 0) -> NewJob:
    return NewJob(
        id=uuid.uuid4().hex,
        task=task,
        queue=queue,
        payload=encode_arguments(list(args), {"note": "kw"}),
        max_attempts=retries + 1,
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
        },
    )
    return Seed(spec, running.id, dead.id, dead2.id, pending.id, ok.id, xss.id)


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
