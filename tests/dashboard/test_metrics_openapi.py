"""``/metrics`` series and the OpenAPI document."""

from __future__ import annotations

import json
import re
import time

from starlette.routing import Route
from starlette.testclient import TestClient

from rota.core.model import ScheduleRecord
from rota.core.states import JobState
from rota.dashboard import create_app
from rota.store import Store, open_store
from tests.dashboard.conftest import BEARER, TOKEN, Seed, seed_flows


def test_metrics_series(authed: TestClient, seeded: Seed) -> None:
    r = authed.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    node = f'name="w1",node="{seeded.node.id}"'
    for line in (
        "rota_store_up 1.0",
        'rota_jobs{queue="default",state="dead"} 2.0',
        'rota_jobs{queue="default",state="running"} 1.0',
        'rota_jobs{queue="images",state="pending"} 1.0',
        'rota_jobs{queue="images",state="running"} 0.0',
        'rota_nodes{state="live"} 1.0',
        'rota_nodes{state="dead"} 0.0',
        f"rota_node_slots{{{node}}} 4.0",
        f"rota_node_slots_used{{{node}}} 1.0",
        f'rota_node_resource_capacity{{{node},resource="cpu"}} 4.0',
        f'rota_node_resource_used{{{node},resource="cpu"}} 0.0',
        'rota_scheduler_leader{holder="sched-test"} 1.0',
        "rota_scheduler_placements_per_second 12.5",
        "rota_scheduler_placed_total 4.0",
        'rota_scheduler_unplaceable_jobs{reason="needs gpu=1, no node has it"} 3.0',
        'rota_scheduler_held_jobs{reason="concurrency limit 2 on key user:7"} 5.0',
        'rota_scheduler_tenant_dominant_share{tenant="acme"} 0.25',
        'rota_scheduler_tenant_jobs{state="running",tenant="acme"} 1.0',
        'rota_scheduler_tenant_jobs{state="pending",tenant="acme"} 3.0',
        "rota_scheduler_preemptions_total 2.0",
        "rota_scheduler_preempted_work_seconds_total 31.0",
    ):
        assert line in text, line
    assert re.search(r"^rota_scheduler_leader_token [1-9]", text, re.M)
    assert re.search(rf"^rota_node_heartbeat_age_seconds\{{{re.escape(node)}\}} ", text, re.M)
    assert "# TYPE rota_jobs gauge" in text


def test_openapi_covers_every_route(authed: TestClient) -> None:
    doc = authed.get("/api/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    routes = [
        r
        for r in authed.app.routes  # type: ignore[attr-defined]
        if isinstance(r, Route) and (r.path.startswith("/api/") or r.path == "/metrics")
    ]
    assert len(routes) >= 10
    for route in routes:
        assert route.path in paths, route.path
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in paths[route.path], (route.path, method)
    for path, ops in paths.items():  # and nothing documented that does not exist
        assert any(r.path == path for r in routes), path
        for op in ops.values():
            assert "200" in op["responses"]
    refs = re.findall(r"#/components/(\w+)/(\w+)", json.dumps(doc))
    assert refs
    for kind, name in refs:
        assert name in doc["components"][kind], (kind, name)


def test_store_down(url: str) -> None:
    def broken(_url: str) -> Store:
        raise ConnectionError("store at postgresql://u:pw@db/x is down")

    app = create_app(url, TOKEN, store_factory=broken, sample_interval=0.05)
    with TestClient(app, headers=BEARER, raise_server_exceptions=False) as c:
        metrics = c.get("/metrics")
        assert metrics.status_code == 200 and "rota_store_up 0.0" in metrics.text
        assert "rota_jobs" not in metrics.text
        r = c.get("/api/status")
        assert r.status_code == 500 and r.json()["error"].startswith("ConnectionError")
        assert "pw" not in r.text
        time.sleep(0.2)
        assert "is down" in c.get("/api/history").json()["last_error"]


def test_store_pool_reuses_connections(url: str, seeded: Seed) -> None:
    opened: list[Store] = []

    def factory(u: str) -> Store:
        opened.append(open_store(u))
        return opened[-1]

    app = create_app(url, TOKEN, store_factory=factory, sample_interval=60)
    with TestClient(app, headers=BEARER) as c:
        for _ in range(20):
            assert c.get("/api/status").status_code == 200
            assert c.get("/api/jobs").status_code == 200
    assert len(opened) <= 3  # the sampler's, and one or two for the requests


def test_openapi_documents_what_the_api_returns(
    authed: TestClient, store: Store, seeded: Seed
) -> None:
    """Every field of a job (list and detail), a schedule and the scheduler's status is
    documented, and the state enums hold every state, ``waiting`` and ``upstream_failed``
    included."""
    flows = seed_flows(store, seeded.node.id)
    doc = authed.get("/api/openapi.json").json()
    schemas = doc["components"]["schemas"]
    summary = schemas["JobSummary"]["properties"]
    detail = {**summary, **schemas["Job"]["allOf"][1]["properties"]}
    states = {s.value for s in JobState}
    assert {"waiting", "upstream_failed"} <= states
    assert set(summary["state"]["enum"]) == states
    param = doc["paths"]["/api/jobs"]["get"]["parameters"][0]
    assert param["name"] == "state" and states <= set(param["schema"]["enum"])
    assert set(detail["parents"]["items"]["properties"]["state"]["enum"]) == states
    for job in authed.get("/api/jobs", params={"limit": 1000}).json()["jobs"]:
        assert set(job) <= set(summary), set(job) - set(summary)
    for job_id in (flows.waiting, flows.upstream_failed, flows.keyed, seeded.dead):
        job = authed.get(f"/api/jobs/{job_id}").json()
        assert set(job) <= set(detail), set(job) - set(detail)
        for parent in job["parents"]:
            assert set(parent) == set(detail["parents"]["items"]["properties"])
    for field in ("depends_on", "workflow_id", "unique_key", "concurrency_key", "rate_limit"):
        assert field in summary, field
    store.put_schedules([ScheduleRecord("broken", "{")])
    rows = authed.get("/api/schedules").json()["schedules"]
    assert len(rows) == 2
    documented = schemas["Schedule"]["properties"]
    for row in rows:
        assert set(row) <= set(documented), set(row) - set(documented)
    ok = doc["paths"]["/api/schedules"]["get"]["responses"]["200"]
    items = ok["content"]["application/json"]["schema"]["properties"]["schedules"]["items"]
    assert items == {"$ref": "#/components/schemas/Schedule"}
    scheduler = authed.get("/api/status").json()["scheduler"]
    props = schemas["Status"]["properties"]["scheduler"]["properties"]
    assert set(scheduler) <= set(props), set(scheduler) - set(props)
    assert scheduler["held"] and set(scheduler["held"][0]) == set(
        props["held"]["items"]["properties"]
    )
    sample = schemas["Sample"]["properties"]
    assert "waiting" in sample["depth"]["description"]
    assert "upstream_failed" in sample["failure_rate"]["description"]
