"""The UI in a real browser (Playwright + Debian's chromium): the fleet shows the node,
the jobs page shows jobs, a dead job's page shows its traceback, Retry sends it back to
pending, and HTML in job values is shown as text, never run. Workflows and flow control:
a waiting job's page lists its parents and turns pending when they succeed, an
upstream_failed job shows which parent failed, the scheduler page shows held jobs and the
periodic schedules; HTML in keys, schedule names and held reasons is text.

Skips when Playwright or /usr/bin/chromium is missing, unless ROTA_REQUIRE_SERVICES=1.
Screenshots go to a temporary directory, or to docs/screenshots/ with
ROTA_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from rota.core.model import Assignment, NodeSpec
from rota.dashboard import create_app
from rota.store import SCHEDULER_LEASE, Store
from tests.dashboard.conftest import TOKEN, XSS, Seed, new_job, run_to_end, seed_flows, settle
from tests.stores import skip_or_fail

CHROMIUM = os.environ.get("ROTA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def _need_browser() -> Any:
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "the browser test needs 'pip install playwright'"
    if reason is None and not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        reason = f"the browser test needs chromium at {CHROMIUM} (apt-get install chromium)"
    if reason is not None:
        skip_or_fail(reason)
    from playwright.sync_api import expect, sync_playwright

    return sync_playwright, expect


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(url: str, seeded: Seed) -> Iterator[str]:
    import uvicorn

    port = _free_port()
    app = create_app(url, TOKEN, sample_interval=0.25)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn exited"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def _more_fleet(store: Store) -> None:
    """Two more nodes and some load, so the screenshots show a fleet."""
    lease = store.acquire_lease(SCHEDULER_LEASE, "sched-test", 30.0)
    assert lease is not None
    for name, slots, res, labels in (
        ("gpu-1", 2, {"cpu": 8.0, "gpu": 1.0, "mem": 32e9}, {"zone": "eu", "gpu": "a100"}),
        ("w2", 8, {"cpu": 16.0}, {"zone": "us"}),
    ):
        spec = NodeSpec(
            id=f"{name}-{uuid.uuid4().hex[:8]}",
            name=name,
            slots=slots,
            prefetch=2,
            resources=res,
            labels=labels,
            host="host-b",
            pid=1000 + slots,
        )
        store.register_node(spec)
        jobs = [
            new_job("images.resize", f"img-{i}.png", 200, queue="images")
            for i in range(slots // 2 + 1)
        ]
        store.submit(jobs)
        store.assign(lease, [Assignment(j.id, spec.id) for j in jobs])
        store.start_jobs(spec.id, slots // 2, 30.0)
    store.submit([new_job("reports.build", i) for i in range(5)])


@contextmanager
def _browser() -> Iterator[tuple[Any, Any, list[str]]]:
    """A fresh page in headless Chromium, ``expect``, and the page's script errors and
    dialogs (both must stay empty)."""
    sync_playwright, expect = _need_browser()
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(10_000)

            def on_dialog(dialog: Any) -> None:
                problems.append(f"dialog: {dialog.message}")
                dialog.dismiss()

            page.on("dialog", on_dialog)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            yield page, expect, problems
        finally:
            browser.close()


def test_ui_end_to_end(server: str, store: Store, seeded: Seed, tmp_path: Path) -> None:
    out = SCREENSHOTS if os.environ.get("ROTA_UPDATE_SCREENSHOTS") == "1" else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    _more_fleet(store)
    with _browser() as (page, expect, problems):
        # not signed in: the login form
        page.goto(server + "/")
        page.wait_for_url("**/login")
        page.fill("#token", "wrong")
        page.click("button[type=submit]")
        page.wait_for_selector("text=Wrong token.")
        page.fill("#token", TOKEN)
        page.click("button[type=submit]")

        # fleet: the node appears
        page.wait_for_selector(f"#nodes tr[data-node='{seeded.node.id}']")
        row = page.locator(f"#nodes tr[data-node='{seeded.node.id}']")
        assert "w1" in row.inner_text() and "live" in row.inner_text()
        assert "1 / 4 running" in row.inner_text() and "zone=eu" in row.inner_text()
        # a node that registers now appears without a reload
        late = NodeSpec(id=f"late-{uuid.uuid4().hex[:8]}", name="late", slots=1, prefetch=0)
        store.register_node(late)
        page.wait_for_selector(f"#nodes tr[data-node='{late.id}']")
        page.wait_for_timeout(600)  # a few history samples, for the charts
        page.screenshot(path=str(out / "fleet.png"), full_page=True)

        # charts render as inline SVG and update without reload
        page.click("#nav a[data-page=charts]")
        page.wait_for_selector(".chart svg path.line", state="attached")
        assert page.locator(".chart").count() == 4
        page.screenshot(path=str(out / "charts.png"), full_page=True)

        page.click("#nav a[data-page=scheduler]")
        page.wait_for_selector("#scheduler")
        assert "sched-test" in page.inner_text("#scheduler")
        assert "needs gpu=1" in page.inner_text("main")

        # jobs: the list, filtered by state
        page.click("#nav a[data-page=jobs]")
        page.wait_for_selector(f"#jobs tr[data-job='{seeded.dead}']")
        page.wait_for_selector(f"#jobs tr[data-job='{seeded.xss}']")
        # HTML in a task name / argument is text, not markup, and never runs
        assert XSS in page.locator(f"#jobs tr[data-job='{seeded.xss}']").inner_text()
        assert page.locator("#jobs script").count() == 0
        page.screenshot(path=str(out / "jobs.png"), full_page=True)
        page.select_option("select[name=state]", "dead")
        page.click("#job-filters button[type=submit]")
        expect(page.locator("#jobs tbody tr")).to_have_count(2)
        assert page.url.endswith("#/jobs?state=dead&limit=100")

        page.goto(f"{server}/#/job/{seeded.xss}")
        page.wait_for_selector("#job-args")
        assert XSS in page.inner_text("#job-args")
        assert page.locator("main script").count() == 0

        # one dead job: its page, then Retry
        page.goto(f"{server}/#/job/{seeded.dead}")
        page.wait_for_selector("#job-traceback")
        assert "ValueError: boom" in page.inner_text("#job-error")
        assert "dead" in page.inner_text("#job-state")
        assert "1 of 1" in page.inner_text("#job")
        page.screenshot(path=str(out / "job.png"), full_page=True)
        page.click("#retry-job")
        page.wait_for_selector("#job-state >> text=pending")
        assert store.get_job(seeded.dead).state.value == "pending"  # type: ignore[union-attr]
        assert page.locator("#retry-job").count() == 0
    assert problems == [], f"a dialog opened or a script failed: {problems}"


@contextmanager
def _signed_in(server: str) -> Iterator[tuple[Any, Any, list[str]]]:
    """:func:`_browser`, signed in, on the fleet view."""
    with _browser() as (page, expect, problems):
        page.goto(server + "/login")
        page.fill("#token", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_selector("#nodes")
        yield page, expect, problems


def test_ui_workflows_flow_control_and_schedules(
    server: str, store: Store, seeded: Seed, tmp_path: Path
) -> None:
    flows = seed_flows(store, seeded.node.id, XSS)  # HTML in keys, schedule, held reasons
    with _signed_in(server) as (page, expect, problems):
        cards = page.inner_text(".cards")
        assert "waiting (workflows)" in cards and "upstream failed" in cards
        assert "held back" in cards

        # a waiting job: its parents, each a link with its state; it turns pending live
        page.goto(f"{server}/#/job/{flows.waiting}")
        expect(page.locator("#job-state")).to_contain_text("waiting")
        parents = page.locator("#job-parents")
        expect(parents.locator(f"[data-parent='{flows.done}']")).to_contain_text("succeeded")
        expect(parents.locator(f"[data-parent='{flows.parent}']")).to_contain_text("pending")
        assert page.inner_text("#job-workflow") == flows.workflow
        assert "passed as its first argument" in page.inner_text("#job")
        assert page.locator("#cancel-job").count() == 1  # not final: can be cancelled
        page.screenshot(path=str(tmp_path / "waiting.png"), full_page=True)
        run_to_end(store, seeded.node.id, flows.parent, ok=True)
        assert settle(store) == 1
        expect(page.locator("#job-state")).to_contain_text("pending")
        expect(parents.locator(f"[data-parent='{flows.parent}']")).to_contain_text("succeeded")
        # a parent link leads to the parent's page
        page.click(f"#job-parents [data-parent='{flows.parent}'] a")
        expect(page.locator("#job-id")).to_have_text(flows.parent)
        expect(page.locator("#job-state")).to_contain_text("succeeded")

        # an upstream_failed job: final, never ran, names its dead parent
        page.goto(f"{server}/#/job/{flows.upstream_failed}")
        expect(page.locator("#job-state")).to_contain_text("upstream_failed")
        assert flows.failed_parent in page.inner_text("#job-error")
        expect(page.locator(f"[data-parent='{flows.failed_parent}']")).to_contain_text("dead")
        assert page.locator("#cancel-job").count() == 0 and page.locator("#retry-job").count() == 0

        # flow-control fields, with HTML in them shown as text
        page.goto(f"{server}/#/job/{flows.keyed}")
        expect(page.locator("#job-unique-key")).to_have_text(f"report:{XSS}42")
        expect(page.locator("#job-concurrency")).to_contain_text(f"user:{XSS}7")
        assert "at most 2 assigned or running" in page.inner_text("#job-concurrency")
        assert "100 per 60 s" in page.inner_text("#job-rate-limit")
        assert page.locator("#job-parents").count() == 0  # no parents: no row
        assert page.locator("main script").count() == 0

        # the new states in the jobs filter
        page.goto(f"{server}/#/jobs")
        page.select_option("select[name=state]", "upstream_failed")
        page.click("#job-filters button[type=submit]")
        expect(page.locator("#jobs tbody tr")).to_have_count(1)
        expect(page.locator(f"#jobs tr[data-job='{flows.upstream_failed}']")).to_contain_text(
            "upstream_failed"
        )

        # queues: a column per state
        page.click("#nav a[data-page=queues]")
        header = page.inner_text("#queues thead")
        assert "waiting" in header and "upstream failed" in header

        # scheduler: held jobs with their reasons, and the schedules panel
        page.click("#nav a[data-page=scheduler]")
        row = page.locator("#schedules tbody tr").filter(has_text=flows.schedule)
        expect(row).to_have_count(1)
        text = row.inner_text()
        for part in (f"reports.{XSS}weekly", "0 7 * * mon", "Europe/Paris", "run once"):
            assert part in text, part
        assert "none yet" in text and "(in " in text
        held = page.inner_text("#held")
        assert f"concurrency limit 2 on key user:{XSS}7" in held
        assert "rate limit 100/60s on task flow.sync" in held
        assert "needs gpu=1" in page.inner_text("#unplaceable")
        tenants = page.inner_text("#tenants")
        assert "acme" in tenants and "gpu=8" in tenants and "25.0 %" in tenants
        assert page.locator("main script").count() == 0
        page.screenshot(path=str(tmp_path / "scheduler.png"), full_page=True)
        assert problems == [], problems
