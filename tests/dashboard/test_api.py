"""The JSON API over real stores: read endpoints on every store kind, actions on SQLite."""

from __future__ import annotations

import time

from starlette.testclient import TestClient

from rota.core.states import JobState
from rota.dashboard import create_app
from rota.store import Store
from tests.dashboard.conftest import BEARER, TOKEN, XSS, Seed, seed


def test_read_endpoints_on_every_store(any_store: tuple[str, Store]) -> None:
    u, store = any_store
    ids = seed(store)
    with TestClient(create_app(u, TOKEN, sample_interval=0.05), headers=BEARER) as c:
        st = c.get("/api/status").json()
        (node,) = st["nodes"]
        assert node["id"] == ids.node.id and node["name"] == "w1" and node["state"] == "live"
        assert node["slots"] == 4 and node["running"] == 1 and node["labels"] == {"zone": "eu"}
        assert node["resources"] == {"cpu": 4.0}
        assert st["jobs"]["total"] == {"running": 1, "dead": 2, "succeeded": 1, "pending": 2}
        assert st["jobs"]["by_queue"]["images"] == {"pending": 1}
        assert st["scheduler"]["leader"] == "sched-test"
        assert st["scheduler"]["unplaceable"][0]["jobs"] == 3

        jobs = c.get("/api/jobs").json()["jobs"]
        assert {j["id"] for j in jobs} == {
            ids.running,
            ids.dead,
            ids.dead2,
            ids.pending,
            ids.succeeded,
            ids.xss,
        }
        assert all("traceback" not in j for j in jobs)
        dead = c.get("/api/jobs", params={"state": "failed"}).json()["jobs"]
        assert {j["id"] for j in dead} == {ids.dead, ids.dead2}
        assert [j["id"] for j in c.get("/api/jobs?queue=images").json()["jobs"]] == [ids.pending]
        assert [j["id"] for j in c.get("/api/jobs?task=work.run").json()["jobs"]] == [ids.running]
        on_node = c.get("/api/jobs", params={"node": ids.node.id}).json()["jobs"]
        assert ids.running in {j["id"] for j in on_node} and ids.pending not in {
            j["id"] for j in on_node
        }
        assert len(c.get("/api/jobs?limit=2").json()["jobs"]) == 2

        job = c.get(f"/api/jobs/{ids.dead}").json()
        assert job["state"] == "dead" and job["error"] == "ValueError: boom"
        assert job["traceback"].startswith("Traceback") and job["args"] == [2]
        assert job["kwargs"] == {"note": "kw"} and job["attempts"] == 1
        assert job["node_id"] == ids.node.id and job["timings"]["ran"] is not None
        (attempt,) = job["attempt_history"]
        assert (attempt["attempt"], attempt["node_id"], attempt["outcome"]) == (
            1,
            ids.node.id,
            "failed",
        )
        assert attempt["error"] == "ValueError: boom" and attempt["ended_at"] is not None
        running = c.get(f"/api/jobs/{ids.running}").json()["attempt_history"]
        assert [(a["outcome"], a["ended_at"]) for a in running] == [(None, None)]
        assert c.get(f"/api/jobs/{ids.succeeded}").json()["result"] == 42

        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            hist = c.get("/api/history").json()
            if len(hist["samples"]) >= 2:
                break
            time.sleep(0.05)
        assert len(hist["samples"]) >= 2, hist
        last = hist["samples"][-1]
        assert last["depth"]["pending"] == 2 and last["slots_total"] == 4
        assert last["nodes"][ids.node.id]["running"] == 1
        newer = c.get("/api/history", params={"since": last["t"]}).json()["samples"]
        assert all(p["t"] > last["t"] for p in newer)


def test_bad_parameters_and_missing_jobs(authed: TestClient) -> None:
    assert authed.get("/api/jobs?state=bogus").status_code == 400
    assert "unknown job state" in authed.get("/api/jobs?state=bogus").json()["error"]
    assert authed.get("/api/jobs?limit=0").status_code == 400
    assert authed.get("/api/jobs?limit=x").status_code == 400
    assert authed.get("/api/history?since=abc").status_code == 400
    assert authed.get("/api/jobs/nope").status_code == 404
    assert authed.post("/api/jobs/nope/retry").status_code == 404
    assert authed.post("/api/jobs/nope/cancel").status_code == 404
    assert authed.get("/api/jobs/retry-dead").status_code == 404  # GET: no such job
    assert authed.post("/api/jobs/retry-dead", content=b"[1]").status_code == 400
    assert authed.post("/api/jobs/retry-dead", json={"ids": "x"}).status_code == 400


def test_retry_one_dead_job(authed: TestClient, seeded: Seed, store: Store) -> None:
    r = authed.post(f"/api/jobs/{seeded.dead}/retry")
    assert r.status_code == 200, r.text
    assert r.json()["retried"] == 1 and r.json()["job"]["state"] == "pending"
    assert store.get_job(seeded.dead).state is JobState.PENDING  # type: ignore[union-attr]
    again = authed.post(f"/api/jobs/{seeded.dead}/retry")
    assert again.status_code == 409 and "pending" in again.json()["error"]
    assert authed.post(f"/api/jobs/{seeded.succeeded}/retry").status_code == 409


def test_cancel(authed: TestClient, seeded: Seed, store: Store) -> None:
    assert authed.post(f"/api/jobs/{seeded.pending}/cancel").json() == {
        "id": seeded.pending,
        "state": "cancelled",
    }
    assert store.get_job(seeded.pending).state is JobState.CANCELLED  # type: ignore[union-attr]
    assert authed.post(f"/api/jobs/{seeded.running}/cancel").status_code == 200
    assert store.get_job(seeded.running).cancel_requested  # type: ignore[union-attr]
    # final jobs are left as they are
    assert authed.post(f"/api/jobs/{seeded.succeeded}/cancel").json()["state"] == "succeeded"


def test_bulk_retry_dead(authed: TestClient, seeded: Seed, store: Store) -> None:
    assert authed.post("/api/jobs/retry-dead", json={"task": "nope"}).json() == {"retried": 0}
    assert authed.post("/api/jobs/retry-dead", json={"ids": [seeded.dead2]}).json() == {
        "retried": 1
    }
    assert authed.post("/api/jobs/retry-dead").json() == {"retried": 1}
    assert store.list_jobs(state=JobState.DEAD) == []
    assert authed.post("/api/jobs/retry-dead").json() == {"retried": 0}


def test_html_in_job_values_is_returned_as_json_text(authed: TestClient, seeded: Seed) -> None:
    r = authed.get(f"/api/jobs/{seeded.xss}")
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-content-type-options"] == "nosniff"
    job = r.json()
    assert job["task"] == XSS and job["args"] == [XSS, {"html": XSS}]
    listed = authed.get("/api/jobs", params={"task": XSS}).json()["jobs"]
    assert [j["id"] for j in listed] == [seeded.xss]


def test_index_and_static_assets(authed: TestClient) -> None:
    page = authed.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    js = authed.get("/static/app.js")
    assert js.status_code == 200 and "textContent" in js.text
    assert ".innerHTML" not in js.text and "insertAdjacentHTML" not in js.text
