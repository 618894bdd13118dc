"""Hostile input at the dashboard API's doors (property-based): random and malicious query
parameters, job ids and bodies always get a clear 4xx (or an empty, valid answer), never a
500, and never change what is stored."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rota.core.model import ScheduleRecord
from rota.store import Store
from tests.dashboard.conftest import Seed

if TYPE_CHECKING:
    from starlette.testclient import TestClient

NASTY = st.sampled_from(
    [
        "",
        "'; DROP TABLE jobs; --",
        '" OR 1=1 --',
        "redis.call('FLUSHALL')",
        "]]--",
        "{rota}:*",
        "../../etc/passwd",
        "<script>alert(1)</script>",
        "\x00",
        "%ff%fe",
        "nan",
        "-1",
        "99999999999999999999999",
        "ünïcødé ☃",
        "x" * 5000,
    ]
)
TEXT = st.one_of(NASTY, st.text(max_size=60))
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def snapshot(store: Store) -> list[dict[str, Any]]:
    return [j.to_dict() for j in store.list_jobs(limit=10_000)]


@FUZZ
@given(state=TEXT, task=TEXT, queue=TEXT, node=TEXT, limit=TEXT)
def test_job_search_never_fails_on_hostile_filters(
    authed: TestClient,
    store: Store,
    seeded: Seed,
    state: str,
    task: str,
    queue: str,
    node: str,
    limit: str,
) -> None:
    before = snapshot(store)
    params = {"state": state, "task": task, "queue": queue, "node": node, "limit": limit}
    r = authed.get("/api/jobs", params=params)
    assert r.status_code in (200, 400), (r.status_code, r.text[:300])
    if r.status_code == 400:
        assert "error" in r.json() or "detail" in r.json()
    assert snapshot(store) == before


@FUZZ
@given(job_id=TEXT.filter(bool), action=st.sampled_from(["retry", "cancel"]))
def test_unknown_job_ids_get_a_clear_answer_and_change_nothing(
    authed: TestClient, store: Store, seeded: Seed, job_id: str, action: str
) -> None:
    before = snapshot(store)
    path_id = quote(job_id, safe="")
    got = authed.get(f"/api/jobs/{path_id}")
    assert got.status_code in (400, 404, 405), (got.status_code, got.text[:300])
    posted = authed.post(f"/api/jobs/{path_id}/{action}")
    assert posted.status_code in (400, 404, 405, 409), (posted.status_code, posted.text[:300])
    assert snapshot(store) == before


@FUZZ
@given(body=st.one_of(st.binary(max_size=200), TEXT.map(str.encode)))
def test_bulk_retry_ignores_any_body(
    authed: TestClient, store: Store, seeded: Seed, body: bytes
) -> None:
    r = authed.post(
        "/api/jobs/retry-dead", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code < 500, (r.status_code, r.text[:300])


@FUZZ
@given(name=TEXT.filter(lambda t: 1 <= len(t) <= 200), cron=st.sampled_from(["*/5 * * * *", "?"]))
def test_schedules_come_back_verbatim_whatever_their_name(
    authed: TestClient, store: Store, seeded: Seed, name: str, cron: str
) -> None:
    """Any schedule name (HTML, SQL, Lua, control characters), with a valid or a damaged
    spec, is listed exactly as stored: never a 500."""
    spec = orjson.dumps({"cron": cron, "tz": "UTC", "job": {"task": "t"}}).decode()
    store.put_schedules([ScheduleRecord(name, spec)])
    try:
        r = authed.get("/api/schedules")
        assert r.status_code == 200, (r.status_code, r.text[:300])
        (row,) = r.json()["schedules"]
        assert row["name"] == name
        assert ("error" in row) == (cron == "?")
    finally:
        store.delete_schedules([name])
