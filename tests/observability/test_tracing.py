"""OpenTelemetry: submit and run spans linked through the payload; off by default, at the
cost of a boolean, without importing opentelemetry."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from rota import Rota
from rota.core.outcomes import ExecKind, ExecResult
from rota.core.payload import decode_arguments
from rota.telemetry.tracing import trace_carrier, traced_run, tracing_enabled
from tests.observability.conftest import node_in_thread, wait_final
from tests.observability.test_logs import job_record

REPO = Path(__file__).resolve().parents[2]


def build(url: str, tracing: bool | None = None) -> Rota:
    app = Rota(url, tracing=tracing)

    @app.task(name="tr.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="tr.async_add")
    async def async_add(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    @app.task(name="tr.whoami")
    def whoami() -> list[str]:
        """The trace and span ids current inside a sync task (in a pool process)."""
        from opentelemetry import trace

        ctx = trace.get_current_span().get_span_context()
        return [f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"]

    @app.task(name="tr.fails", retries=0)
    async def fails(message: str) -> None:
        raise ValueError(message)

    return app


def test_enabled_by_flag_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROTA_TRACING", raising=False)
    assert tracing_enabled(None) is False
    assert tracing_enabled(True) is True
    monkeypatch.setenv("ROTA_TRACING", "1")
    assert tracing_enabled(None) is True
    assert tracing_enabled(False) is False  # the argument wins
    assert Rota("sqlite:////nonexistent/x.db").tracing is True
    monkeypatch.setenv("ROTA_TRACING", "0")
    assert Rota("sqlite:////nonexistent/x.db").tracing is False


def test_off_by_default_no_trace_key_and_no_import(tmp_path: Path) -> None:
    """A fresh interpreter: building and encoding jobs with tracing off never imports
    opentelemetry, and the payload is exactly the arguments."""
    code = f"""
import sys
from rota import Rota
app = Rota("sqlite:///{tmp_path / "x.db"}")
assert app.tracing is False
@app.task(name="t")
def t(a, b=0): return a
job = app.get_task("t").options(queue="q").new_job([1], {{"b": 2}})
assert job.payload == '{{"args":[1],"kwargs":{{"b":2}}}}', job.payload
import rota.worker.node
bad = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not bad, bad
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if k not in ("ROTA_TRACING", "ROTA_STORE")}
    env["PYTHONPATH"] = str(REPO / "src")
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_submit_span_and_trace_context_in_the_payload(spans: Any) -> None:
    app = build("sqlite:////nonexistent/x.db", tracing=True)
    job = app.get_task("tr.add").options(queue="math").new_job([1, 2], {})
    assert decode_arguments(job.payload) == ([1, 2], {})  # the extra key is ignored
    data = orjson.loads(job.payload)
    assert set(data) == {"args", "kwargs", "trace"}
    (span,) = spans.get_finished_spans()
    assert span.name == "rota.submit tr.add" and span.kind.name == "PRODUCER"
    assert span.attributes["rota.queue"] == "math" and span.attributes["rota.task"] == "tr.add"
    ctx = span.get_span_context()
    _version, trace_id, span_id, _flags = data["trace"]["traceparent"].split("-")
    assert (int(trace_id, 16), int(span_id, 16)) == (ctx.trace_id, ctx.span_id)
    assert trace_carrier(job.payload) == data["trace"]
    assert trace_carrier('{"args":[],"kwargs":{}}') == {} and trace_carrier("not json") == {}


def test_run_span_is_a_child_of_the_submit_span_and_records_the_outcome(spans: Any) -> None:
    app = build("sqlite:////nonexistent/x.db", tracing=True)
    submitted = app.get_task("tr.fails").options().new_job(["bad width"], {})
    job = job_record(task="tr.fails", attempts=1, max_attempts=1)
    job = dataclasses.replace(job, payload=submitted.payload, id=submitted.id)

    async def run(j: Any) -> ExecResult:
        from opentelemetry import trace

        assert trace.get_current_span().get_span_context().is_valid  # current while it runs
        return ExecResult(ExecKind.ERROR, error="ValueError: bad width", traceback="Traceback ...")

    result = asyncio.run(traced_run(run, job, "w1-abc"))
    assert result.kind == "error"
    submit, run_span = spans.get_finished_spans()
    assert run_span.name == "rota.run tr.fails" and run_span.kind.name == "CONSUMER"
    assert run_span.parent is not None
    assert run_span.parent.span_id == submit.get_span_context().span_id
    assert run_span.context.trace_id == submit.context.trace_id
    attrs = run_span.attributes
    assert attrs["rota.job.id"] == job.id and attrs["rota.node"] == "w1-abc"
    assert attrs["rota.attempt"] == 1 and attrs["rota.outcome"] == "error"
    assert run_span.status.status_code.name == "ERROR"
    (event,) = run_span.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "bad width"


def test_worker_runs_sync_and_async_jobs_in_spans_linked_to_their_submit(
    url: str, spans: Any
) -> None:
    app = build(url, tracing=True)
    try:
        with node_in_thread(app, name="tr") as node:
            sync = app.get_task("tr.add").submit(1, 2)
            asyn = app.get_task("tr.async_add").submit(3, 4)
            bad = app.get_task("tr.fails").submit("nope")
            assert sync.result(timeout=20) == 3 and asyn.result(timeout=20) == 7
            wait_final(app, [bad.id])
            node_id = node.node_id
    finally:
        app.close()
    finished = spans.get_finished_spans()
    by_name = {s.name: s for s in finished}
    for task, job_id, outcome in (
        ("tr.add", sync.id, "ok"),
        ("tr.async_add", asyn.id, "ok"),
        ("tr.fails", bad.id, "error"),
    ):
        submit, run = by_name[f"rota.submit {task}"], by_name[f"rota.run {task}"]
        assert run.context.trace_id == submit.context.trace_id, task
        assert run.parent is not None and run.parent.span_id == submit.context.span_id, task
        assert run.attributes["rota.job.id"] == job_id
        assert run.attributes["rota.task"] == task and run.attributes["rota.queue"] == "default"
        assert run.attributes["rota.attempt"] == 1 and run.attributes["rota.node"] == node_id
        assert run.attributes["rota.outcome"] == outcome
    assert by_name["rota.run tr.fails"].status.status_code.name == "ERROR"


def test_worker_with_tracing_off_makes_no_spans(url: str, spans: Any) -> None:
    app = build(url)
    try:
        with node_in_thread(app, name="tr-off"):
            job = app.get_task("tr.async_add").submit(1, 1)
            assert job.result(timeout=20) == 2
            assert "trace" not in orjson.loads(app.store.get_job(job.id).payload)  # type: ignore[union-attr]
    finally:
        app.close()
    assert spans.get_finished_spans() == ()


def test_a_sync_task_runs_inside_its_run_span_context(url: str, spans: Any) -> None:
    """The pool process gets the run span's context: spans a sync task makes itself nest
    under ``rota.run``."""
    app = build(url, tracing=True)
    try:
        with node_in_thread(app, name="tr-child"):
            job = app.get_task("tr.whoami").submit()
            trace_id, span_id = job.result(timeout=20)
    finally:
        app.close()
    run = {s.name: s for s in spans.get_finished_spans()}["rota.run tr.whoami"]
    assert (int(trace_id, 16), int(span_id, 16)) == (run.context.trace_id, run.context.span_id)


def test_child_context_is_a_no_op_without_a_carrier() -> None:
    from rota.telemetry.tracing import carries_trace, child_context

    plain = '{"args":[{"trace":"x"}],"kwargs":{}}'
    assert carries_trace(plain)  # looks like one: child_context finds none and does nothing
    with child_context(plain):
        pass
    assert not carries_trace('{"args":[1],"kwargs":{}}')
