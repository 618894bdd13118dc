"""Workflows, flow control and periodic schedules in the dashboard's API: the ``waiting`` and
``upstream_failed`` states, a job's parents and flow fields, held jobs, ``/api/schedules``."""

from __future__ import annotations

import time

from starlette.testclient import TestClient

from rota.core.model import ScheduleRecord
from rota.dashboard import create_app
from rota.store import Store
from tests.dashboard.conftest import (
    BEARER,
    TOKEN,
    Flows,
    Seed,
    run_to_end,
    seed,
    seed_flows,
    settle,
)


def test_flow_states_and_fields_on_every_store(any_store: tuple[str, Store]) -> None:
    u, store = any_store
    ids = seed(store)
    flows = seed_flows(store, ids.node.id)
    with TestClient(create_app(u, TOKEN, sample_interval=0.05), headers=BEARER) as c:
        st = c.get("/api/status").json()
        assert st["jobs"]["total"] == {
            "waiting": 1,
            "pending": 4,
            "running": 1,
            "succeeded": 2,
            "dead": 3,
            "upstream_failed": 1,
        }
        assert st["scheduler"]["held"][0] == {
            "reason": "concurrency limit 2 on key user:7",
            "jobs": 5,
        }

        listed = c.get("/api/jobs", params={"state": "waiting"}).json()["jobs"]
        assert [j["id"] for j in listed] == [flows.waiting]
        assert listed[0]["depends_on"] == [flows.done, flows.parent]
        listed = c.get("/api/jobs", params={"state": "upstream_failed"}).json()["jobs"]
        assert [j["id"] for j in listed] == [flows.upstream_failed]

        job = c.get(f"/api/jobs/{flows.waiting}").json()
        assert job["state"] == "waiting" and job["depends_on"] == [flows.done, flows.parent]
        assert job["pass_results"] is True and job["workflow_id"] == flows.workflow
        assert job["parents"] == [
            {"id": flows.done, "task": "flow.extract", "state": "succeeded"},
            {"id": flows.parent, "task": "flow.extract", "state": "pending"},
        ]
        assert job["unique_key"] is None and job["concurrency_key"] is None

        orphan = c.get(f"/api/jobs/{flows.upstream_failed}").json()
        assert orphan["state"] == "upstream_failed" and orphan["finished_at"] is not None
        assert orphan["started_at"] is None and orphan["attempts"] == 0
        assert flows.failed_parent in orphan["error"]
        assert orphan["parents"] == [
            {"id": flows.failed_parent, "task": "flow.fetch", "state": "dead"}
        ]

        keyed = c.get(f"/api/jobs/{flows.keyed}").json()
        assert keyed["unique_key"] == "report:42" and keyed["concurrency_key"] == "user:7"
        assert keyed["concurrency_limit"] == 2 and keyed["rate_limit"] == "100/60"
        assert keyed["depends_on"] == [] and keyed["parents"] == []

        (row,) = c.get("/api/schedules").json()["schedules"]
        assert row["name"] == flows.schedule == "nightly report"
        assert (row["task"], row["cron"], row["tz"], row["missed"]) == (
            "reports.weekly",
            "0 7 * * mon",
            "Europe/Paris",
            "run_once",
        )
        assert row["last_tick"] is None and row["last_tick_iso"] is None
        assert st["now"] < row["next_tick"] <= st["now"] + 7 * 86400 + 3600
        assert row["next_tick_iso"].endswith(("T07:00:00+01:00", "T07:00:00+02:00"))

        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            samples = c.get("/api/history").json()["samples"]
            if samples:
                break
            time.sleep(0.05)
        assert samples[-1]["depth"]["waiting"] == 1
        assert samples[-1]["counts"]["upstream_failed"] == 1


def test_waiting_job_turns_pending(authed: TestClient, store: Store, seeded: Seed) -> None:
    flows = seed_flows(store, seeded.node.id)
    assert authed.get(f"/api/jobs/{flows.waiting}").json()["state"] == "waiting"
    run_to_end(store, seeded.node.id, flows.parent, ok=True)
    assert settle(store) == 1
    job = authed.get(f"/api/jobs/{flows.waiting}").json()
    assert job["state"] == "pending"
    assert [p["state"] for p in job["parents"]] == ["succeeded", "succeeded"]
    assert authed.get("/api/status").json()["jobs"]["total"].get("waiting", 0) == 0


def test_cancel_a_waiting_job_and_not_an_upstream_failed_one(
    authed: TestClient, store: Store, seeded: Seed
) -> None:
    flows = seed_flows(store, seeded.node.id)
    r = authed.post(f"/api/jobs/{flows.waiting}/cancel")
    assert r.json() == {"id": flows.waiting, "state": "cancelled"}
    r = authed.post(f"/api/jobs/{flows.upstream_failed}/cancel")
    assert r.json()["state"] == "upstream_failed"  # final: left as it is
    r = authed.post(f"/api/jobs/{flows.upstream_failed}/retry")
    assert r.status_code == 409 and "upstream_failed" in r.json()["error"]


def test_parent_no_longer_stored(authed: TestClient, store: Store, seeded: Seed) -> None:
    flows = seed_flows(store, seeded.node.id)
    store.prune(-1e9)  # every final job that may go
    job = authed.get(f"/api/jobs/{flows.waiting}").json()
    assert store.get_job(flows.done) is None  # its child was queued: it could go
    assert job["parents"] == [
        {"id": flows.done, "task": None, "state": None},
        {"id": flows.parent, "task": "flow.extract", "state": "pending"},
    ]


def test_schedules_endpoint(client: TestClient, store: Store) -> None:
    assert client.get("/api/schedules").status_code == 401
    client.headers.update(BEARER)
    assert client.get("/api/schedules").json() == {"schedules": []}
    store.put_schedules([ScheduleRecord("broken", "{not json")])
    seed_flows(store, store.list_nodes()[0].id)
    rows = client.get("/api/schedules").json()["schedules"]
    assert [r["name"] for r in rows] == ["broken", "nightly report"]
    assert rows[0]["last_tick"] is None and "damaged spec" in rows[0]["error"]
    assert "error" not in rows[1]
    assert client.post("/api/schedules").status_code == 405


def test_flow_fields_keep_html_as_text(authed: TestClient, store: Store, seeded: Seed) -> None:
    from tests.dashboard.conftest import XSS

    flows: Flows = seed_flows(store, seeded.node.id, XSS)
    keyed = authed.get(f"/api/jobs/{flows.keyed}").json()
    assert keyed["unique_key"] == f"report:{XSS}42"
    assert keyed["concurrency_key"] == f"user:{XSS}7"
    (row,) = authed.get("/api/schedules").json()["schedules"]
    assert row["name"] == f"nightly {XSS}report" and row["task"] == f"reports.{XSS}weekly"
    held = authed.get("/api/status").json()["scheduler"]["held"]
    assert held[0]["reason"] == f"concurrency limit 2 on key user:{XSS}7"
