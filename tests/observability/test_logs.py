"""Structured logs: the formatters, the job fields on the worker's lines (caplog), the
fields of a sync task's own lines in its pool process, and a real worker process logging
JSON to stderr."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from rota import Rota
from rota.core.model import JobRecord
from rota.core.outcomes import ExecKind, ExecResult
from rota.core.payload import encode_arguments
from rota.core.states import JobState
from rota.telemetry.logs import (
    JOB_FIELDS,
    JobContextFilter,
    JsonFormatter,
    TextFormatter,
    job_context,
    job_log_fields,
    setup_logging,
)
from rota.worker.node import WorkerNode
from rota.worker.pool import ProcessPool
from tests.acceptance.conftest import Fleet

WORKER = ["worker", "tests.acceptance.apps.basic:app", "--name", "w1", "--heartbeat", "0.5"]
FIELDS: dict[str, Any] = {"job": "j1", "task": "app.resize", "node": "w1-abc", "attempt": 2}


def job_record(task: str = "app.resize", attempts: int = 2, max_attempts: int = 3) -> JobRecord:
    return JobRecord(
        id=uuid.uuid4().hex,
        task=task,
        queue="images",
        payload=encode_arguments(["a.png"], {}),
        priority=0,
        state=JobState.RUNNING,
        attempts=attempts,
        max_attempts=max_attempts,
        timeout=None,
        resources={},
        labels={},
        affinity={},
        backoff_base=1.0,
        backoff_max=10.0,
        created_at=time.time(),
        token=7,
    )


def make_record(msg: str = "attempt failed", exc: bool = False, **extra: Any) -> logging.LogRecord:
    logger = logging.getLogger("rota.test")
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    return logger.makeRecord("rota.test", logging.INFO, __file__, 1, msg, (), exc_info, extra=extra)


# ---- formatters -------------------------------------------------------------------------------
def test_job_log_fields() -> None:
    job = job_record()
    assert job_log_fields(job, "w1-abc") == {
        "job": job.id,
        "task": "app.resize",
        "node": "w1-abc",
        "attempt": 2,
    }


def test_text_format_appends_the_job_fields_in_order() -> None:
    fmt = TextFormatter("%(levelname)s %(name)s: %(message)s")
    line = fmt.format(make_record(**FIELDS))
    assert line == "INFO rota.test: attempt failed job=j1 task=app.resize node=w1-abc attempt=2"
    assert fmt.format(make_record()) == "INFO rota.test: attempt failed"  # no fields, no tail
    # values that would break the key=value layout are quoted
    spaced = fmt.format(make_record(**{**FIELDS, "task": 'odd name="x"'}))
    assert spaced.endswith('task="odd name=\\"x\\"" node=w1-abc attempt=2')
    # other extras (uvicorn's color_message...) are not appended to text
    assert fmt.format(make_record(color_message="x")) == "INFO rota.test: attempt failed"


def test_text_format_keeps_the_fields_on_the_first_line_of_a_traceback() -> None:
    fmt = TextFormatter("%(message)s")
    lines = fmt.format(make_record(exc=True, **FIELDS)).splitlines()
    assert lines[0] == "attempt failed job=j1 task=app.resize node=w1-abc attempt=2"
    assert lines[-1] == "ValueError: boom"


def test_json_format_one_object_per_line_with_the_fields_as_keys() -> None:
    line = JsonFormatter().format(make_record(exc=True, **FIELDS))
    assert "\n" not in line
    data = orjson.loads(line)
    assert {k: data[k] for k in JOB_FIELDS} == FIELDS
    assert data["msg"] == "attempt failed" and data["level"] == "info"
    assert data["logger"] == "rota.test" and data["exc"].endswith("ValueError: boom")


def test_job_context_fills_in_records_that_lack_the_fields() -> None:
    flt = JobContextFilter()
    outside = make_record()
    flt.filter(outside)
    assert not hasattr(outside, "job")
    with job_context(FIELDS):
        inside = make_record()
        flt.filter(inside)
        explicit = make_record(job="other")
        flt.filter(explicit)
    assert {k: getattr(inside, k) for k in JOB_FIELDS} == FIELDS
    assert explicit.__dict__["job"] == "other"  # an explicit field wins


def test_setup_logging_selects_the_format(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("DEBUG", json=True)
        (handler,) = root.handlers
        assert isinstance(handler.formatter, JsonFormatter)
        assert any(isinstance(f, JobContextFilter) for f in handler.filters)
        setup_logging("INFO", json=False, prefix="[w1] ")
        (handler,) = root.handlers
        assert isinstance(handler.formatter, TextFormatter)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


# ---- the worker's lines -----------------------------------------------------------------------
def node_for_logs() -> WorkerNode:
    node = WorkerNode(Rota("sqlite:////nonexistent/never-opened.db"))
    node.node_id = "w1-abc"
    return node


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return {k: getattr(record, k, None) for k in JOB_FIELDS}


def test_worker_lines_about_a_job_carry_its_fields(caplog: pytest.LogCaptureFixture) -> None:
    node = node_for_logs()
    failed, cancelled, refused = job_record(), job_record(), job_record(attempts=3)
    caplog.set_level(logging.DEBUG, logger="rota")
    node._record(failed, ExecResult(ExecKind.ERROR, error="ValueError: bad width"))
    node._record(cancelled, ExecResult(ExecKind.CANCELLED, error="cancelled"))
    node._record(refused, ExecResult(ExecKind.OK, result="1"))
    batch, node.outcomes = node.outcomes, []
    node._count_refused(batch, [True, True, False])
    by_job: dict[str, list[logging.LogRecord]] = {}
    for rec in caplog.records:
        by_job.setdefault(getattr(rec, "job", "?"), []).append(rec)
    assert "?" not in by_job, [r.getMessage() for r in by_job["?"]]
    for job in (failed, cancelled, refused):
        assert by_job[job.id], job.id
        for rec in by_job[job.id]:
            assert fields_of(rec) == job_log_fields(job, "w1-abc"), rec.getMessage()
    (fail_line,) = by_job[failed.id]
    assert "attempt 2/3 failed (error): ValueError: bad width; next attempt in" in (
        fail_line.getMessage()
    )
    assert any("refused: lease lost" in r.getMessage() for r in by_job[refused.id])
    assert any(r.getMessage().endswith("succeeded") for r in by_job[refused.id])


def _logging_task(word: str) -> str:
    logging.getLogger("user.task").warning("the task says %s", word)
    return word


def test_a_sync_tasks_own_lines_carry_the_job_fields(tmp_path: Path) -> None:
    """The pool process inherits the worker's handler; its records get the job's fields
    while it runs that job."""
    app = Rota(f"sqlite:///{tmp_path / 'never-opened.db'}")
    app.task(name="t.logging")(_logging_task)
    out = tmp_path / "child.log"
    handler = logging.FileHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(JobContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:

        async def main() -> ExecResult:
            pool = ProcessPool(app, 1)
            await pool.start()
            try:
                payload = encode_arguments(["hi"], {})
                return await pool.run("j1", "t.logging", payload, 10.0, FIELDS)
            finally:
                await pool.close(0)

        result = asyncio.run(main())
    finally:
        root.removeHandler(handler)
        handler.close()
    assert result.kind == "ok", result
    lines = [orjson.loads(line) for line in out.read_text().splitlines()]
    said = [d for d in lines if d["logger"] == "user.task"]
    assert said and {k: said[0][k] for k in JOB_FIELDS} == FIELDS
    assert said[0]["msg"] == "the task says hi"


# ---- a real worker process --------------------------------------------------------------------
@pytest.mark.acceptance
@pytest.mark.timeout(60)
def test_worker_process_logs_one_json_object_per_line(fleet: Fleet, url: str) -> None:
    from tests.acceptance.apps import basic

    client = basic.build(url)
    try:
        fleet.scheduler()
        fleet.start(
            "w1",
            [*WORKER, "--log-json", "--log-level", "DEBUG"],
        )
        fleet.wait_nodes(1, ["w1"])
        ok = client.get_task("acc.square").submit(3).id
        aok = client.get_task("acc.async_double").submit(4).id
        bad = client.get_task("acc.always_fails").options(retries=1).submit("nope").id
        fleet.wait_final([ok, aok, bad], 30)
        fleet.kill("w1", 15)
        fleet.wait_exit("w1", 15)
    finally:
        client.close()
    lines = [line for line in fleet.log("w1").splitlines() if line.strip()]
    records = [orjson.loads(line) for line in lines]  # every line is one JSON object
    node_id = next(n.id for n in fleet.nodes() if n.spec.name == "w1")
    about: dict[str, list[dict[str, Any]]] = {ok: [], aok: [], bad: []}
    for rec in records:
        assert {"ts", "level", "logger", "msg"} <= rec.keys()
        if rec.get("job") in about:
            about[rec["job"]].append(rec)
            assert rec["node"] == node_id and isinstance(rec["attempt"], int), rec
        else:
            for job_id in about:  # a line naming a job carries its fields
                assert job_id not in rec["msg"], rec
    assert {r["task"] for r in about[ok]} == {"acc.square"}
    assert any(r["msg"].endswith("succeeded") for r in about[ok])
    assert any(r["msg"].endswith("succeeded") for r in about[aok])
    failures = [r for r in about[bad] if "failed" in r["msg"]]
    assert [r["attempt"] for r in failures] == [1, 2], failures
    assert "ValueError: nope" in failures[-1]["msg"] and "no attempt left" in failures[-1]["msg"]
