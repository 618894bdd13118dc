"""`rota job ID` shows the job's attempt history (a table, and `attempt_history` in --json)."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
from click.testing import CliRunner

from rota.cli import cli
from rota.core.model import Assignment, NewJob, NodeSpec
from rota.core.outcomes import CutShort, Outcome, OutcomeKind
from rota.core.payload import encode_arguments
from rota.store import SCHEDULER_LEASE, open_store


def test_job_shows_every_attempt(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'attempts.db'}"
    store = open_store(url)
    job = NewJob(
        id=uuid.uuid4().hex,
        task="t",
        queue="default",
        payload=encode_arguments([], {}),
        max_attempts=3,
    )
    store.submit([job])
    spec = NodeSpec(id="node-a1", name="a", slots=1, prefetch=0)
    store.register_node(spec)
    lease = store.acquire_lease(SCHEDULER_LEASE, "test", 30)
    assert lease is not None
    store.assign(lease, [Assignment(job.id, spec.id)])
    (first,) = store.start_jobs(spec.id, 1, 30)
    timed_out = Outcome(
        job.id,
        first.token,
        OutcomeKind.FAILED,
        error="timed out after [2] s",
        traceback="Traceback: [bold]x[/bold]",
        cut_short=CutShort.TIMEOUT,
    )
    assert store.complete([timed_out]) == [True]
    store.promote_due(lease, 10)
    store.assign(lease, [Assignment(job.id, spec.id)])
    store.start_jobs(spec.id, 1, 30)
    store.close()

    runner = CliRunner()
    out = runner.invoke(cli, ["job", "--store", url, job.id], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "Attempts" in out.output and "node-a1" in out.output
    assert "timeout" in out.output and "running" in out.output
    assert "timed out after [2] s" in out.output  # printed literally, not as markup
    assert "[bold]x[/bold]" in out.output

    out = runner.invoke(cli, ["job", "--store", url, job.id, "--json"])
    assert out.exit_code == 0, out.output
    history = orjson.loads(out.output)["attempt_history"]
    assert [(a["attempt"], a["outcome"], a["cut_short"]) for a in history] == [
        (1, "failed", "timeout"),
        (2, None, None),
    ]
