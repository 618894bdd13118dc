"""Periodic jobs (pure): schedule specs and the decision of which tick to run.

A schedule is stored by name with a JSON spec (cron expression, time zone, the job to
submit) and the last tick handled. The scheduler leader asks :func:`next_action` what to do
with it now and hands the answer to ``Store.fire_schedule``, which records the tick and
submits the job in one atomic, fenced step, so each tick runs at most once even across
leader failover, and exactly once while a leader is alive.

Missed ticks: when the leader finds more than one tick due (no leader was alive for a
while), it never runs the older ones; for the most recent due tick the schedule's
``missed`` policy decides:

- ``"skip"`` (default): run it only if it is at most ``grace`` seconds late;
- ``"run_once"``: run it however late, once, standing for every tick missed.

A new schedule starts with the first tick after it is first seen by a leader.
Cron expressions are read by croniter: five fields, or six with seconds last
(``"* * * * * */10"``: every ten seconds).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from croniter import CroniterBadCronError, croniter

from rota.core.errors import InvalidOption
from rota.core.model import AllocSpec, NewJob

MissedPolicy = Literal["skip", "run_once"]
MISSED_POLICIES: tuple[str, ...] = ("skip", "run_once")
_MAX_STEPS = 10_000  # ticks walked forward before jumping straight to the latest


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A periodic job: when (``cron`` in ``tz``) and what (``job``, a ``NewJob`` template
    without id)."""

    name: str
    cron: str
    job: dict[str, Any]
    tz: str = "UTC"
    missed: MissedPolicy = "skip"
    grace: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not 0 < len(self.name) <= 200:
            raise InvalidOption(f"schedule name must be 1-200 characters, got {self.name!r}")
        if self.missed not in MISSED_POLICIES:
            raise InvalidOption(f"missed must be one of {MISSED_POLICIES}, got {self.missed!r}")
        grace = self.grace
        if isinstance(grace, bool) or not isinstance(grace, int | float):
            raise InvalidOption(f"grace must be a number of seconds, got {grace!r:.40}")
        if not 0 <= grace <= 10 * 365 * 86400:
            raise InvalidOption(f"grace must be 0 to 10 years in seconds, got {grace!r:.40}")
        if not isinstance(self.tz, str):
            raise InvalidOption(f"tz must be a time zone name, got {self.tz!r}")
        zone(self.tz)
        if not isinstance(self.cron, str) or not croniter.is_valid(self.cron):
            raise InvalidOption(f"not a valid cron expression: {self.cron!r}")

    def to_json(self) -> str:
        return orjson.dumps(
            {
                "cron": self.cron,
                "tz": self.tz,
                "missed": self.missed,
                "grace": self.grace,
                "job": self.job,
            }
        ).decode()

    @classmethod
    def from_json(cls, name: str, text: str) -> ScheduleSpec:
        """Read a stored spec; ``InvalidOption`` if it is damaged."""
        try:
            data = orjson.loads(text)
            return cls(
                name=name,
                cron=str(data["cron"]),
                job=dict(data["job"]),
                tz=str(data.get("tz", "UTC")),
                missed=data.get("missed", "skip"),
                grace=float(data.get("grace", 60.0)),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InvalidOption(f"schedule {name!r} has a damaged spec: {exc}") from None

    def new_job(self, tick: float) -> NewJob:
        """The job for ``tick``: its id is derived from the schedule and the tick."""
        fields = dict(self.job)
        fields["resources"] = dict(fields.get("resources") or {})
        fields["labels"] = dict(fields.get("labels") or {})
        fields["affinity"] = dict(fields.get("affinity") or {})
        if "alloc" in fields:
            fields["alloc"] = AllocSpec.from_dict(fields["alloc"])
        return NewJob(id=tick_job_id(self.name, tick), **fields)


def tick_job_id(name: str, tick: float) -> str:
    """The deterministic id of the job of one tick of one schedule."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"rota-periodic:{name}:{tick!r}").hex


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidOption(f"unknown time zone {name!r} (e.g. 'UTC', 'Europe/Paris')") from None


def _iter(cron: str, tz: str, start: float) -> croniter:
    try:
        return croniter(cron, datetime.fromtimestamp(start, zone(tz)))
    except CroniterBadCronError as exc:
        raise InvalidOption(f"not a valid cron expression: {cron!r}: {exc}") from None


def next_tick(spec: ScheduleSpec, after: float) -> float:
    """The first tick strictly after ``after``."""
    return float(_iter(spec.cron, spec.tz, after).get_next(float))


def latest_tick(spec: ScheduleSpec, now: float) -> float:
    """The most recent tick at or before ``now``."""
    it = _iter(spec.cron, spec.tz, now)
    candidate = float(it.get_prev(float))
    following = next_tick(spec, candidate)
    return following if following <= now else candidate


@dataclass(frozen=True, slots=True)
class Action:
    """What to do with a schedule now: record ``tick`` as handled and run it or not."""

    tick: float
    run: bool
    missed: int = 0  # due ticks that will never run (older ones, or this one when skipped)
    late: float = 0.0  # how late ``tick`` is, in seconds


def next_action(spec: ScheduleSpec, last_tick: float | None, now: float) -> Action | None:
    """The action for a schedule whose last handled tick is ``last_tick``, at ``now`` (the
    store's clock); ``None`` while no tick is due."""
    if last_tick is None:  # first sight: start after the latest tick, run nothing
        return Action(latest_tick(spec, now), run=False)
    first = next_tick(spec, last_tick)
    if first > now:
        return None
    due, tick = 1, first
    while due < _MAX_STEPS:
        following = next_tick(spec, tick)
        if following > now:
            break
        tick, due = following, due + 1
    else:  # a very long outage: jump straight to the latest tick
        tick = latest_tick(spec, now)
    late = now - tick
    run = spec.missed == "run_once" or late <= spec.grace
    return Action(tick, run, missed=due - 1 + (0 if run else 1), late=late)
