"""Chart history: rates from count deltas, and the ring buffer."""

from __future__ import annotations

from typing import Any

from rota.dashboard.history import History, sample_from
from rota.store import Store


def snap(now: float, **totals: int) -> dict[str, Any]:
    return {
        "now": now,
        "nodes": [
            {
                "id": "a",
                "name": "a",
                "state": "live",
                "running": 2,
                "assigned": 1,
                "slots": 4,
                "used": {},
                "resources": {},
            },
            {
                "id": "b",
                "name": "b",
                "state": "dead",
                "running": 0,
                "assigned": 0,
                "slots": 4,
                "used": {},
                "resources": {},
            },
        ],
        "jobs": {"total": totals, "by_queue": {}},
        "scheduler": {"decisions_per_s": 3.0},
    }


def test_rates_from_count_deltas() -> None:
    first = sample_from(snap(100.0, pending=10, succeeded=5), None)
    assert first["finished_per_s"] is None and first["load"] == 0.5
    assert first["nodes"].keys() == {"a"} and first["slots_total"] == 4
    second = sample_from(snap(102.0, pending=4, succeeded=9, dead=2, cancelled=0), first)
    assert second["finished_per_s"] == 3.0 and second["succeeded_per_s"] == 2.0
    assert second["failed_per_s"] == 1.0 and second["failure_rate"] == round(2 / 6, 4)
    assert second["depth"]["pending"] == 4 and second["placements_per_s"] == 3.0
    # a retried dead job or pruned jobs lower the counts: no negative rates
    third = sample_from(snap(104.0, pending=5, succeeded=1, dead=0), second)
    assert third["finished_per_s"] == 0.0 and third["failure_rate"] == 0.0


def test_upstream_failed_is_finished_and_a_failure() -> None:
    first = sample_from(snap(100.0, waiting=6, succeeded=10), None)
    assert first["depth"]["waiting"] == 6 and first["counts"]["upstream_failed"] == 0
    # 2 s: 4 succeeded, 2 dead, 2 upstream_failed (never ran), 2 cancelled
    second = sample_from(
        snap(102.0, waiting=0, succeeded=14, dead=2, upstream_failed=2, cancelled=2), first
    )
    assert second["finished_per_s"] == 5.0 and second["succeeded_per_s"] == 2.0
    assert second["failed_per_s"] == 2.0  # dead + upstream_failed
    assert second["failure_rate"] == 0.5  # failed / (succeeded + failed); cancelled in neither
    assert second["depth"]["waiting"] == 0
    only_upstream = sample_from(snap(104.0, succeeded=14, dead=2, upstream_failed=5), second)
    assert only_upstream["failure_rate"] == 1.0 and only_upstream["failed_per_s"] == 1.5


class _FakeStore:
    pass


def test_ring_buffer_keeps_the_span() -> None:
    t = [0.0]

    def collect(_store: Store) -> dict[str, Any]:
        t[0] += 2.0
        return snap(t[0], succeeded=int(t[0]))

    h = History(lambda: _FakeStore(), collect, interval=2.0, span=900.0)  # type: ignore[arg-type,return-value]
    for _ in range(1000):
        h.sample_once(_FakeStore())  # type: ignore[arg-type]
    samples = h.snapshot()["samples"]
    assert len(samples) == 451  # 900 s / 2 s, plus one
    assert samples[-1]["t"] - samples[0]["t"] == 900.0
    assert samples[-1]["finished_per_s"] == 1.0
    assert h.snapshot(since=samples[-3]["t"])["samples"] == samples[-2:]
    assert h.started_at == 2.0
