"""Workflow building, flow options and periodic registration (pure: no store)."""

from __future__ import annotations

import pytest

from rota import Rota, chain, group
from rota.core.errors import CorruptPayload, InvalidOption
from rota.core.model import JobRecord
from rota.core.payload import decode_arguments, encode_arguments
from rota.core.periodic import ScheduleSpec
from rota.core.states import JobState
from rota.workflow import build, with_parent_results


@pytest.fixture
def app(tmp_path: object) -> Rota:
    app = Rota("sqlite:////nonexistent/never-opened.db")

    @app.task
    def add(x: int, y: int = 0) -> int:
        return x + y

    @app.task
    def total(values: list[int]) -> int:
        return sum(values)

    return app


def test_chain_links_each_step_to_the_previous_and_passes_results(app: Rota) -> None:
    add = app.get_task("add")
    jobs, outputs = build(chain(add.s(1, 2), add.s(3), add.s(y=4)), (), "wf")
    a, b, c = jobs
    assert a.depends_on == () and not a.pass_results
    assert b.depends_on == (a.id,) and b.pass_results
    assert c.depends_on == (b.id,) and c.pass_results
    assert outputs == [c.id] and {j.workflow_id for j in jobs} == {"wf"}


def test_group_then_step_is_a_chord(app: Rota) -> None:
    add, total = app.get_task("add"), app.get_task("total")
    jobs, outputs = build(chain(group(add.s(1), add.s(2), add.s(3)), total.s()), (), "wf")
    members, last = jobs[:3], jobs[3]
    assert all(m.depends_on == () for m in members)
    assert last.depends_on == tuple(m.id for m in members) and last.pass_results
    assert outputs == [last.id]


def test_group_of_chains(app: Rota) -> None:
    add = app.get_task("add")
    jobs, outputs = build(group(chain(add.s(1), add.s(1)), add.s(5)), (), "wf")
    assert len(jobs) == 3 and outputs == [jobs[1].id, jobs[2].id]
    assert jobs[1].depends_on == (jobs[0].id,)


def test_steps_are_checked_against_the_signature_with_the_passed_result(app: Rota) -> None:
    add = app.get_task("add")
    with pytest.raises(InvalidOption, match="bad arguments"):
        build(chain(add.s(1), add.s(1, 2)), (), "wf")  # add(result, 1, 2): one too many
    with pytest.raises(InvalidOption):
        chain()
    with pytest.raises(InvalidOption):
        group(add)  # type: ignore[arg-type]


def test_parent_results_are_put_first() -> None:
    def rec(job_id: str, result: str | None, state: JobState = JobState.SUCCEEDED) -> JobRecord:
        return JobRecord(
            id=job_id, task="t", queue="q", payload="{}", priority=0, state=state,
            attempts=1, max_attempts=1, timeout=None, resources={}, labels={}, affinity={},
            backoff_base=1, backoff_max=1, created_at=0, result=result,
        )  # fmt: skip

    payload = encode_arguments([10], {"k": 1})
    one = with_parent_results(payload, ["a"], [rec("a", "5")])
    assert decode_arguments(one) == ([5, 10], {"k": 1})
    two = with_parent_results(payload, ["b", "a"], [rec("a", "1"), rec("b", '"x"')])
    assert decode_arguments(two) == ([["x", 1], 10], {"k": 1})
    with pytest.raises(CorruptPayload, match="gone"):
        with_parent_results(payload, ["a", "zz"], [rec("a", "1")])
    with pytest.raises(CorruptPayload, match="dead"):
        with_parent_results(payload, ["a"], [rec("a", None, JobState.DEAD)])


def test_flow_options_are_validated(app: Rota) -> None:
    add = app.get_task("add")
    with pytest.raises(InvalidOption, match="concurrency_limit"):
        add.options(concurrency_key="k").new_job((1,), {})
    with pytest.raises(InvalidOption, match="delay"):
        add.options(depends_on=["x"], delay=5).new_job((1,), {})
    with pytest.raises(InvalidOption, match="pass_results"):
        add.options(pass_results=True).new_job((1,), {})
    with pytest.raises(InvalidOption):
        add.options(unique_for=0)
    with pytest.raises(InvalidOption):
        add.options(rate_limit="lots")
    with pytest.raises(InvalidOption):
        add.options(depends_on=[3])
    job = add.options(
        depends_on=["p1", "p1", "p2"],
        unique_key="u",
        unique_for=60,
        concurrency_key=lambda y, x, **_: f"user:{x}",
        concurrency_limit=2,
        rate_limit="100/m",
    ).new_job((7,), {})
    assert job.depends_on == ("p1", "p2") and job.unique_key == "u" and job.unique_for == 60
    assert (job.concurrency_key, job.concurrency_limit, job.rate_limit) == ("user:7", 2, "100/60")
    with pytest.raises(InvalidOption, match="must return a string"):
        add.options(concurrency_key=lambda x, **_: x, concurrency_limit=1).new_job((7,), {})


def test_task_defaults_carry_flow_control(app: Rota) -> None:
    @app.task(concurrency_key=lambda user_id, **_: f"user:{user_id}", concurrency_limit=2,
              rate_limit="10/s")  # fmt: skip
    def mail(user_id: int, text: str) -> None: ...

    job = mail.s(42, "hi").call.new_job((42, "hi"), {})
    assert (job.concurrency_key, job.concurrency_limit, job.rate_limit) == ("user:42", 2, "10/1")


def test_periodic_registration(app: Rota) -> None:
    @app.periodic("*/5 * * * *", tz="Europe/Paris", args=(1,), queue="cron", missed="run_once")
    def tick(n: int) -> int:
        return n

    spec = app.schedules[tick.name]
    assert isinstance(spec, ScheduleSpec) and spec.tz == "Europe/Paris"
    assert spec.job["queue"] == "cron" and spec.job["task"] == tick.name
    assert decode_arguments(spec.new_job(300.0).payload) == ([1], {})
    again = app.schedule("add", cron="0 * * * *", args=(1, 2), name="hourly-add")
    assert app.schedules["hourly-add"] is again
    with pytest.raises(InvalidOption, match="bad arguments"):
        app.schedule("add", cron="0 * * * *", name="broken")
    with pytest.raises(InvalidOption, match="already used"):
        app.schedule("add", cron="1 * * * *", args=(1, 2), name="hourly-add")
    with pytest.raises(InvalidOption, match="cron"):
        app.schedule("add", cron="every day", args=(1,), name="x")
