"""Each ingest process's figures, published into the store for ``rota status``, the
dashboard and ``/metrics`` (one document, ``INGEST_STATS_NAME``, with one entry per
process; each process rewrites its own entry every few seconds)."""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from rota.store import Store

INGEST_STATS_NAME = "ingest"
STALE_AFTER = 30.0  # seconds without an update: shown as stale
FORGET_AFTER = 600.0  # seconds without an update: dropped from the document

COUNTERS = (
    "received",
    "stored",
    "duplicates",
    "invalid",
    "replies",
    "refused",
    "dead_letter_repeats",
)


@dataclass
class IngestStats:
    """Counters of one ingest process (totals since it started) and its lag."""

    source: str
    kind: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    received: int = 0
    stored: int = 0  # jobs created
    duplicates: int = 0  # redeliveries whose job existed already
    invalid: int = 0  # dead-lettered: failed validation
    refused: int = 0  # dead-lettered: refused by the store
    dead_letter_repeats: int = 0  # dead-lettered again: redelivered (a copy may exist already)
    replies: int = 0  # outcomes published (AMQP replies, Kafka result records)
    lag: int | None = None  # messages waiting at the broker (queue depth / consumer lag)
    connected: bool = False
    started_at: float = field(default_factory=time.time)
    _last: tuple[float, int, int] = (0.0, 0, 0)
    rates: tuple[float, float] = (0.0, 0.0)

    def snapshot(self, now: float) -> dict[str, Any]:
        """A JSON-ready entry; rates are per second since the previous snapshot."""
        mono = time.monotonic()
        then, received, stored = self._last
        if then and mono > then:
            span = mono - then
            self.rates = ((self.received - received) / span, (self.stored - stored) / span)
        self._last = (mono, self.received, self.stored)
        return {
            "id": self.id,
            "kind": self.kind,
            "source": self.source,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "connected": self.connected,
            "started_at": self.started_at,
            "updated_at": now,
            "received_per_s": round(self.rates[0], 1),
            "stored_per_s": round(self.rates[1], 1),
            "lag": self.lag,
            **{name: getattr(self, name) for name in COUNTERS},
        }


def publish(store: Store, stats: IngestStats, *, remove: bool = False) -> None:
    """Write this process's entry (or remove it, at a clean exit). A read-modify-write:
    an entry lost to a concurrent writer comes back at that process's next publish."""
    now = store.now()
    doc = store.get_stats(INGEST_STATS_NAME) or {}
    processes: dict[str, Any] = {
        key: entry
        for key, entry in (doc.get("processes") or {}).items()
        if now - float(entry.get("updated_at") or 0) < FORGET_AFTER
    }
    if remove:
        processes.pop(stats.id, None)
    else:
        processes[stats.id] = stats.snapshot(now)
    store.put_stats(INGEST_STATS_NAME, {"processes": processes})


def ingest_processes(store: Store, now: float) -> list[dict[str, Any]]:
    """The entries of the ingest processes seen recently, each with ``age`` and ``stale``."""
    doc = store.get_stats(INGEST_STATS_NAME) or {}
    out = []
    for entry in (doc.get("processes") or {}).values():
        age = now - float(entry.get("updated_at") or 0)
        out.append({**entry, "age": round(age, 1), "stale": age > STALE_AFTER})
    return sorted(out, key=lambda e: (e.get("source") or "", e.get("id") or ""))
