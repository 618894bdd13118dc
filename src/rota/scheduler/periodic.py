"""The scheduler leader's periodic-job loop: reads the schedules from the store now and
then, and hands every due tick to ``Store.fire_schedule`` (which records the tick and
submits its job in one fenced, atomic step). See ``rota.core.periodic`` for the rules."""

from __future__ import annotations

import logging
import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rota.core.errors import InvalidOption
from rota.core.model import Lease
from rota.core.periodic import ScheduleSpec, next_action, next_tick
from rota.store import Store

if TYPE_CHECKING:
    from rota.scheduler.config import SchedulerConfig

log = logging.getLogger("rota.scheduler")


class PeriodicRunner:
    """Fires due ticks; one per leadership (a new leader starts from the store)."""

    def __init__(self) -> None:
        self.specs: dict[str, tuple[ScheduleSpec, float | None]] = {}
        self.next_due: dict[str, float] = {}  # store-clock time of each schedule's next tick
        self.broken: dict[str, str] = {}  # schedules whose spec cannot be used, and why
        self.fired = 0
        self.skipped = 0
        self._offset = 0.0  # store clock minus ours
        self._read = -math.inf
        self._checked = -math.inf

    def run_due(self, store: Store, lease: Lease, cfg: SchedulerConfig) -> int:
        """Fire the ticks that are due; returns how many jobs were submitted. Cheap when
        nothing is due: no store round trip between schedule reads."""
        mono = time.monotonic()
        if mono - self._checked < cfg.periodic_every:
            return 0
        self._checked = mono
        if mono - self._read >= cfg.schedules_every:
            self._refresh(store)
        estimate = time.time() + self._offset
        due = [name for name, at in self.next_due.items() if at <= estimate]
        if not due:
            return 0
        now = store.now()
        self._offset = now - time.time()
        submitted = 0
        for name in due:
            submitted += self._fire(store, lease, name, now)
        return submitted

    def _fire(self, store: Store, lease: Lease, name: str, now: float) -> int:
        spec, last = self.specs[name]
        action = next_action(spec, last, now)
        if action is None:
            self.next_due[name] = next_tick(spec, last if last is not None else now)
            return 0
        try:
            job = spec.new_job(action.tick) if action.run else None
        except (InvalidOption, TypeError, ValueError) as exc:
            self._broken(name, f"cannot build its job: {exc}")
            return 0
        if store.fire_schedule(lease, name, action.tick, job):
            if job is not None:
                self.fired += 1
                log.info(
                    "periodic %s: tick %s -> job %s%s",
                    name,
                    _iso(action.tick),
                    job.id,
                    f" ({action.late:.1f} s late)" if action.late > 1 else "",
                )
            elif last is not None:
                log.warning(
                    "periodic %s: tick %s skipped, %.1f s late (missed=%s, grace %.0f s)",
                    name,
                    _iso(action.tick),
                    action.late,
                    spec.missed,
                    spec.grace,
                )
            if action.missed and last is not None:
                self.skipped += action.missed
                if job is not None:
                    log.warning(
                        "periodic %s: %d earlier tick(s) missed while no leader ran them",
                        name,
                        action.missed,
                    )
        else:  # another leader handled it first: re-read the schedules soon
            self._read = -math.inf
        self.specs[name] = (spec, action.tick)
        self.next_due[name] = next_tick(spec, action.tick)
        return 1 if job is not None else 0

    def _refresh(self, store: Store) -> None:
        records = store.list_schedules()
        now = store.now()
        self._offset = now - time.time()
        self._read = time.monotonic()
        specs: dict[str, tuple[ScheduleSpec, float | None]] = {}
        next_due: dict[str, float] = {}
        for rec in records:
            try:
                spec = ScheduleSpec.from_json(rec.name, rec.spec)
                next_due[rec.name] = (
                    now if rec.last_tick is None else next_tick(spec, rec.last_tick)
                )
            except InvalidOption as exc:
                self._broken(rec.name, str(exc))
                continue
            specs[rec.name] = (spec, rec.last_tick)
            self.broken.pop(rec.name, None)
        self.specs, self.next_due = specs, next_due

    def _broken(self, name: str, reason: str) -> None:
        if self.broken.get(name) != reason:
            log.error("periodic %s: ignored, %s", name, reason)
        self.broken[name] = reason
        self.next_due.pop(name, None)

    def summary(self) -> list[dict[str, Any]]:
        """Schedules for the published statistics (first 100 by name)."""
        out: list[dict[str, Any]] = []
        for name in sorted(self.specs)[:100]:
            spec, last = self.specs[name]
            out.append(
                {
                    "name": name,
                    "cron": spec.cron,
                    "tz": spec.tz,
                    "task": spec.job.get("task"),
                    "missed": spec.missed,
                    "last_tick": last,
                    "next_tick": self.next_due.get(name),
                }
            )
        out += [{"name": n, "error": why} for n, why in sorted(self.broken.items())[:20]]
        return out


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
