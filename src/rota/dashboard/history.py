"""Chart history: the dashboard samples the fleet snapshot (``rota.status.collect``) every
few seconds into a ring buffer and derives rates from the deltas of job counts.

The store keeps no time series, so history starts when the dashboard process starts and
is lost when it stops; a restarted dashboard shows empty charts that fill up again.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from rota.core.states import JobState
from rota.status import redact_url
from rota.store import Store

log = logging.getLogger("rota.dashboard")

# Final states. ``upstream_failed`` (a workflow step whose parent failed) counts as finished
# and as a failure, like ``dead``; ``cancelled`` counts as finished but not as a failure.
FINISHED = (
    JobState.SUCCEEDED.value,
    JobState.DEAD.value,
    JobState.CANCELLED.value,
    JobState.UPSTREAM_FAILED.value,
)
FAILED = (JobState.DEAD.value, JobState.UPSTREAM_FAILED.value)
DEPTH_STATES = (
    JobState.WAITING.value,
    JobState.SCHEDULED.value,
    JobState.PENDING.value,
    JobState.ASSIGNED.value,
    JobState.RUNNING.value,
    JobState.RETRYING.value,
)


def sample_from(snapshot: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """One history point from a ``collect()`` snapshot and the point before it.

    Rates are count deltas over the time between the two snapshots (store clock). A count
    that went down (a dead job retried, old jobs pruned) gives a rate of 0, not negative.
    Failures are ``dead`` and ``upstream_failed`` jobs; the failure rate is failures over
    failures + successes (cancelled jobs count in neither).
    """
    now = float(snapshot["now"])
    totals: dict[str, int] = snapshot["jobs"]["total"]
    counts = {state: int(totals.get(state, 0)) for state in (*DEPTH_STATES, *FINISHED)}
    nodes = {}
    slots = running = 0
    for n in snapshot["nodes"]:
        if n["state"] not in ("live", "draining"):
            continue
        nodes[n["id"]] = {
            "name": n["name"],
            "running": n["running"],
            "assigned": n["assigned"],
            "slots": n["slots"],
            "used": n["used"],
            "resources": n["resources"],
        }
        slots += n["slots"]
        running += n["running"]
    point: dict[str, Any] = {
        "t": now,
        "counts": counts,
        "depth": {state: counts[state] for state in DEPTH_STATES},
        "nodes": nodes,
        "slots_total": slots,
        "slots_used": running,
        "load": round(running / slots, 4) if slots else 0.0,
        "placements_per_s": snapshot["scheduler"].get("decisions_per_s") or 0.0,
        "finished_per_s": None,
        "succeeded_per_s": None,
        "failed_per_s": None,
        "failure_rate": None,
    }
    if previous is not None:
        dt = now - float(previous["t"])
        if dt > 0:
            before = previous["counts"]

            def rate(state: str) -> float:
                return max(0, counts[state] - int(before.get(state, 0))) / dt

            ok = rate(JobState.SUCCEEDED.value)
            failed = sum(rate(s) for s in FAILED)
            point["succeeded_per_s"] = round(ok, 3)
            point["failed_per_s"] = round(failed, 3)
            point["finished_per_s"] = round(sum(rate(s) for s in FINISHED), 3)
            point["failure_rate"] = round(failed / (ok + failed), 4) if ok + failed > 0 else 0.0
    return point


class History:
    """A ring buffer of samples covering at least ``span`` seconds, filled by a thread
    that calls ``collect`` every ``interval`` seconds with its own store connection."""

    def __init__(
        self,
        open_store: Callable[[], Store],
        collect: Callable[[Store], dict[str, Any]],
        *,
        interval: float = 2.0,
        span: float = 900.0,
    ) -> None:
        if interval <= 0 or span <= 0:
            raise ValueError("interval and span must be positive")
        self.interval = interval
        self.span = span
        self.samples: deque[dict[str, Any]] = deque(maxlen=math.ceil(span / interval) + 1)
        self.started_at: float | None = None
        self.last_error: str | None = None
        self._open_store = open_store
        self._collect = collect
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample_once(self, store: Store) -> dict[str, Any]:
        snapshot = self._collect(store)
        with self._lock:
            previous = self.samples[-1] if self.samples else None
            point = sample_from(snapshot, previous)
            if previous is None or point["t"] > previous["t"]:
                self.samples.append(point)
            if self.started_at is None:
                self.started_at = point["t"]
        return point

    def snapshot(self, since: float | None = None) -> dict[str, Any]:
        with self._lock:
            samples = [s for s in self.samples if since is None or s["t"] > since]
        return {
            "interval": self.interval,
            "span": self.span,
            "started_at": self.started_at,
            "last_error": self.last_error,
            "samples": samples,
        }

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="rota-dashboard-history", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        store: Store | None = None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if store is None:
                    store = self._open_store()
                self.sample_once(store)
                self.last_error = None
            except Exception as exc:  # keep sampling through store outages
                self.last_error = redact_url(f"{type(exc).__name__}: {exc}")
                log.warning("history sample failed: %s", self.last_error)
                if store is not None:
                    with contextlib.suppress(Exception):
                        store.close()
                    store = None
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        if store is not None:
            with contextlib.suppress(Exception):
                store.close()
