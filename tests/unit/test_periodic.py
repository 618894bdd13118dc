"""Periodic schedules (pure): which tick runs when, and the missed-tick policies."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from rota.core.errors import InvalidOption
from rota.core.periodic import ScheduleSpec, latest_tick, next_action, next_tick, tick_job_id

JOB = {"task": "t", "queue": "default", "payload": '{"args":[],"kwargs":{}}'}


def spec(cron: str = "* * * * *", **kw: object) -> ScheduleSpec:
    return ScheduleSpec(name="s", cron=cron, job=dict(JOB), **kw)  # type: ignore[arg-type]


def test_first_sight_records_the_latest_tick_without_running_it() -> None:
    action = next_action(spec(), None, 125.0)
    assert action is not None and action.tick == 120.0 and not action.run


def test_nothing_due_before_the_next_tick() -> None:
    assert next_action(spec(), 120.0, 179.9) is None


def test_on_time_tick_runs() -> None:
    action = next_action(spec(), 120.0, 180.5)
    assert action is not None and (action.tick, action.run, action.missed) == (180.0, True, 0)


def test_exact_tick_time_is_due() -> None:
    action = next_action(spec(), 120.0, 180.0)
    assert action is not None and action.tick == 180.0
    assert latest_tick(spec(), 180.0) == 180.0


def test_skip_policy_runs_only_the_latest_tick_within_grace() -> None:
    s = spec(grace=10.0)
    late = next_action(s, 120.0, 305.0)  # ticks 180, 240, 300 due: 300 is 5 s late
    assert late is not None and (late.tick, late.run, late.missed) == (300.0, True, 2)
    too_late = next_action(s, 120.0, 355.0)  # 300 is 55 s late
    assert too_late is not None and (too_late.tick, too_late.run, too_late.missed) == (
        300.0,
        False,
        3,
    )


def test_run_once_policy_runs_the_latest_tick_however_late() -> None:
    action = next_action(spec(missed="run_once", grace=1.0), 120.0, 3590.0)
    assert action is not None and action.tick == 3540.0 and action.run and action.missed == 56


def test_seconds_field_and_time_zone() -> None:
    every2 = spec("* * * * * */2")
    assert next_tick(every2, 10.0) == 12.0
    paris = spec("0 9 * * *", tz="Europe/Paris")
    start = datetime(2026, 3, 27, 12, tzinfo=ZoneInfo("UTC")).timestamp()
    first = datetime.fromtimestamp(next_tick(paris, start), ZoneInfo("Europe/Paris"))
    second = datetime.fromtimestamp(next_tick(paris, first.timestamp()), ZoneInfo("Europe/Paris"))
    assert (first.hour, second.hour) == (9, 9)  # 9:00 local on both sides of the DST change
    assert second.timestamp() - first.timestamp() == 23 * 3600


def test_very_long_outage_jumps_to_the_latest_tick() -> None:
    action = next_action(spec("* * * * * *", missed="run_once"), 0.0, 50_000.0)
    assert action is not None and action.tick == 50_000.0 and action.run


def test_spec_json_roundtrip_and_job_ids() -> None:
    s = spec("*/5 * * * *", tz="Europe/Paris", missed="run_once", grace=3.0)
    again = ScheduleSpec.from_json("s", s.to_json())
    assert again == s
    job = s.new_job(300.0)
    assert job.id == tick_job_id("s", 300.0) != tick_job_id("s", 600.0)
    assert job.task == "t" and job.resources == {}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cron": "not cron"},
        {"cron": "* * * * *", "tz": "Mars/Olympus"},
        {"cron": "* * * * *", "missed": "sometimes"},
        {"cron": "* * * * *", "grace": -1.0},
    ],
)
def test_bad_specs_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidOption):
        ScheduleSpec(name="s", job=dict(JOB), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidOption):
        ScheduleSpec.from_json("s", "{not json")
