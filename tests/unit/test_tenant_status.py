"""Fair share seen by an operator: a scheduler leader (in-process, real SQLite store)
reads the shares ``Rota.sync_shares`` published, holds a tenant at its cap, and
``rota status`` / ``rota job`` show the tenants and why the held job waits."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import orjson
from click.testing import CliRunner

from rota import Rota
from rota.cli import cli
from rota.core.model import NodeSpec
from rota.core.states import JobState
from rota.scheduler import STATS_NAME
from rota.scheduler.config import SchedulerConfig
from rota.scheduler.leader import Scheduler


def test_tenant_cap_holds_a_job_and_status_says_why(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fair.db'}"
    app = Rota(url)

    @app.task(name="t")
    def t() -> None: ...

    app.share("acme", weight=2, limit={"slots": 1})
    assert app.sync_shares() == 1
    store = app.store
    store.register_node(NodeSpec(id="n1", name="n1", slots=4, prefetch=0))
    first, second = (t.options(tenant="acme").submit() for _ in range(2))
    other = t.options(tenant="beta").submit()
    sched = Scheduler(url, SchedulerConfig(stats_every=0.05, idle_wait=0.02))
    runner = threading.Thread(target=sched.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            stats = store.get_stats(STATS_NAME) or {}
            tenants = {r["tenant"]: r for r in stats.get("tenants") or []}
            if second.id in (stats.get("reasons") or {}) and "beta" in tenants:
                break
            time.sleep(0.05)
        states = {j.id: j.state for j in store.get_jobs([first.id, second.id, other.id])}
        # acme is capped at one job at once; beta is not held back by it
        assert states == {
            first.id: JobState.ASSIGNED,
            second.id: JobState.PENDING,
            other.id: JobState.ASSIGNED,
        }
        assert stats["allocation"]["fair_share"] is True
        assert tenants["acme"]["weight"] == 2.0 and tenants["acme"]["limit"] == {"slots": 1.0}
        assert tenants["acme"]["running"] == 1 and tenants["acme"]["pending"] == 1
        assert tenants["acme"]["dominant_share"] == 0.25  # one of 4 slots
    finally:
        sched.stop.set()
        runner.join(10)
    cli_runner = CliRunner()
    out = cli_runner.invoke(cli, ["job", "--store", url, second.id])
    assert out.exit_code == 0, out.output
    assert "tenant acme at its limit slots=1" in out.output and "'tenant': 'acme'" in out.output
    out = cli_runner.invoke(cli, ["job", "--store", url, "--json", second.id])
    assert orjson.loads(out.output)["wait_reason"] == "tenant acme at its limit slots=1"
    out = cli_runner.invoke(cli, ["status", "--store", url], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "Tenants (fair share)" in out.output and "slots=1" in out.output
    assert "25.0 %" in out.output
    app.close()


def test_a_scheduler_started_with_the_app_publishes_its_shares(tmp_path: Path) -> None:
    from rota.cli.main import _sync_schedules
    from rota.scheduler.fairshare import SHARES_NAME, Share, shares_from_doc

    url = f"sqlite:///{tmp_path / 'shares.db'}"
    app = Rota(url)
    _sync_schedules(app)  # no shares: nothing published
    assert app.store.get_stats(SHARES_NAME) is None
    app.share("acme", weight=3, limit={"gpu": 2})
    _sync_schedules(app)
    published = shares_from_doc(app.store.get_stats(SHARES_NAME))
    assert published == {"acme": Share(3.0, {"gpu": 2.0})}
    app.close()
