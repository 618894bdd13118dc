"""Operator commands (`rota cancel`, `rota retry`) against a real SQLite store, in-process."""

from __future__ import annotations

import uuid
from pathlib import Path

from click.testing import CliRunner

from rota.cli import cli
from rota.core.model import Assignment, NewJob, NodeSpec
from rota.core.outcomes import Outcome, OutcomeKind
from rota.core.payload import encode_arguments
from rota.core.states import JobState
from rota.store import SCHEDULER_LEASE, open_store


def _job() -> NewJob:
    return NewJob(id=uuid.uuid4().hex, task="t", queue="default", payload=encode_arguments([], {}))


def test_cancel_and_retry_dead(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    store = open_store(url)
    waiting, failing = _job(), _job()
    store.submit([waiting, failing])
    spec = NodeSpec(id="n1", name="n1", slots=2, prefetch=0)
    store.register_node(spec)
    lease = store.acquire_lease(SCHEDULER_LEASE, "test", 30)
    assert lease is not None
    store.assign(lease, [Assignment(failing.id, spec.id)])
    (started,) = store.start_jobs(spec.id, 1, 30)
    store.complete([Outcome(failing.id, started.token, OutcomeKind.FAILED, error="E")])

    runner = CliRunner()
    out = runner.invoke(cli, ["cancel", "--store", url, waiting.id, "nope"])
    assert out.exit_code == 1, out.output  # an unknown id: an error, and nothing done
    assert "no job nope" in out.output
    out = runner.invoke(cli, ["cancel", "--store", url, waiting.id])
    assert out.exit_code == 0, out.output
    assert f"{waiting.id}: cancelled" in out.output
    out = runner.invoke(cli, ["retry", "--store", url, "--all-dead"])
    assert out.exit_code == 0, out.output
    assert "1 job(s) sent back to pending" in out.output
    jobs = {j.id: j.state for j in store.get_jobs([waiting.id, failing.id])}
    assert jobs == {waiting.id: JobState.CANCELLED, failing.id: JobState.PENDING}
    store.close()


def test_schedules_lists_the_store_schedules(tmp_path: Path) -> None:
    from rota import Rota

    url = f"sqlite:///{tmp_path / 'cron.db'}"
    app = Rota(url)

    @app.periodic("*/5 * * * *", tz="Europe/Paris", name="r[b]x")
    def report() -> None: ...

    assert app.sync_schedules() == 1
    runner = CliRunner()
    out = runner.invoke(cli, ["schedules", "--store", url])
    assert out.exit_code == 0, out.output
    assert "r[b]x" in out.output and "*/5 * * * *" in out.output  # not read as markup
    out = runner.invoke(cli, ["schedules", "--store", url, "--json"])
    assert out.exit_code == 0, out.output
    import orjson

    (row,) = orjson.loads(out.output)
    assert row["tz"] == "Europe/Paris" and row["last_tick"] is None
    assert row["next_tick"] % 300 == 0  # on a 5-minute boundary (Paris is whole hours off)
    empty = f"sqlite:///{tmp_path / 'none.db'}"
    out = runner.invoke(cli, ["schedules", "--store", empty])
    assert out.exit_code == 1 and "no rota store at" in out.output  # and none is created
    assert not (tmp_path / "none.db").exists()
    open_store(empty).close()
    out = runner.invoke(cli, ["schedules", "--store", empty])
    assert out.exit_code == 0 and "no periodic schedules" in out.output
    app.close()
