"""Take the documentation screenshots in docs/screenshots/ from a live fleet: runs
``rota demo`` (a scheduler and four worker nodes, one killed midway) on a temporary SQLite
store, serves the dashboard over the same store, and photographs each page once the charts
have some history (the scheduler page shows the demo's periodic schedule, workflow.png the
demo workflow's join step with its parents). Not a test; run it by hand (about two minutes):

    python -m tests.dashboard.screenshots [--seconds 90] [--jobs 20000]

Needs playwright and Debian's chromium at /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

from rota.core.states import JobState
from rota.dashboard import create_app
from rota.store import open_store
from tests.dashboard.test_browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, _free_port

TOKEN = "screenshot-token"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=SCREENSHOTS)
    opts = parser.parse_args()
    opts.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="rota-shots-"))
    url = f"sqlite:///{workdir / 'rota.db'}"
    open_store(url).close()  # create the schema before both sides use it
    demo = subprocess.Popen(
        [sys.executable, "-m", "rota", "demo", "--store", url, "--jobs", str(opts.jobs)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "COLUMNS": "120"},
    )
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(url, TOKEN, sample_interval=1.0), port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        time.sleep(opts.seconds)
        store = open_store(url)
        dead = store.list_jobs(state=JobState.DEAD, limit=1)
        joins = store.list_jobs(task="demo.assemble", limit=1)  # the workflow's join step
        store.close()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(base + "/login")
            page.fill("#token", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_selector("#nodes")
            for name, route, selector in (
                ("fleet", "#/fleet", "#nodes"),
                ("charts", "#/charts", ".chart svg"),
                ("queues", "#/queues", "#queues"),
                ("scheduler", "#/scheduler", "#scheduler"),
                ("jobs", "#/jobs?limit=30", "#jobs"),
            ):
                page.goto(f"{base}/{route}")
                page.wait_for_selector(selector)
                page.wait_for_timeout(500)
                page.screenshot(path=str(opts.out / f"{name}.png"), full_page=True)
                print("wrote", opts.out / f"{name}.png")
            if dead:
                page.goto(f"{base}/#/job/{dead[0].id}")
                page.wait_for_selector("#job")
                page.screenshot(path=str(opts.out / "job.png"), full_page=True)
                print("wrote", opts.out / "job.png")
            if joins:
                page.goto(f"{base}/#/job/{joins[0].id}")
                page.wait_for_selector("#job-parents")
                page.screenshot(path=str(opts.out / "workflow.png"), full_page=True)
                print("wrote", opts.out / "workflow.png")
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(timeout=30)


if __name__ == "__main__":
    main()
