"""Rate limits, concurrency keys and fair order (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rota.core.errors import InvalidOption
from rota.core.model import PendingJob
from rota.core.rates import normalise_rate, parse_rate
from rota.scheduler.limits import RateGate, admit, fair_order, record_placed


def pj(
    n: int, key: str | None = None, limit: int = 0, rate: str | None = None, prio: int = 0
) -> PendingJob:
    return PendingJob(
        id=f"j{n}",
        queue="default",
        priority=prio,
        seq=n,
        resources={},
        labels={},
        affinity={},
        task="t",
        concurrency_key=key,
        concurrency_limit=limit,
        rate_limit=rate,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100/m", (100, 60.0)),
        ("10/s", (10, 1.0)),
        ("5/2h", (5, 7200.0)),
        ("60/6s", (60, 6.0)),
        ("3/1.5", (3, 1.5)),
        ("7/mins", (7, 60.0)),
        ("1/day", (1, 86400.0)),
    ],
)
def test_parse_rate(text: str, expected: tuple[int, float]) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize("bad", ["", "x", "0/s", "5/0", "5/w", "-1/s", "1/8d", "1.5/s"])
def test_parse_rate_refuses(bad: str) -> None:
    with pytest.raises(InvalidOption):
        parse_rate(bad)


def test_normalise_rate() -> None:
    assert normalise_rate("100/m") == "100/60"
    assert normalise_rate("3/1.5") == "3/1.5"


def placements(rate: str, times: list[float]) -> list[float]:
    """Offer one job at each time (a scheduler cycle); return the times jobs went through."""
    gate = RateGate()
    out = []
    for now in times:
        while gate.allows("t", rate, now):
            gate.take("t", rate, now)
            out.append(now)
    return out


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(1, 500),
    period=st.sampled_from([1.0, 6.0, 60.0]),
    step=st.sampled_from([0.005, 0.02, 0.1]),
)
def test_rate_limit_holds_within_ten_percent_in_every_window(
    count: int, period: float, step: float
) -> None:
    rate = f"{count}/{period:g}"
    horizon = period * 3
    times = [i * step for i in range(int(horizon / step))]
    placed = placements(rate, times)
    interval = period / count
    tau = max(interval, min(0.25, period / 20))
    bound = count + tau / interval + 1
    assert bound <= count * 1.05 + 2
    j = 0
    for i, start in enumerate(placed):  # every window of one period starting at a placement
        while j < len(placed) and placed[j] < start + period:
            j += 1
        assert j - i <= bound
    if step <= tau:  # with cycles at least as often as tau, the rate is (nearly) reached
        assert len(placed) >= count * (horizon / period) * 0.9 - 1


def test_rate_gate_export_restore_is_clock_free() -> None:
    gate = RateGate()
    for _ in range(5):
        gate.take("t", "1/1", 100.0)
    offsets = gate.export(100.0)
    assert offsets == {"t": 5.0}
    later = RateGate.restore(offsets, 5000.0)
    assert not later.allows("t", "1/1", 5000.0)
    assert later.allows("t", "1/1", 5004.0)
    assert RateGate.restore({"t": "x", 3: 1.0, "u": -1.0}, 0.0).tat == {}  # type: ignore[dict-item]


def test_fair_order_takes_turns_across_keys_within_a_priority() -> None:
    page = [pj(i, "a") for i in range(4)] + [pj(10, "b"), pj(11, "b"), pj(20), pj(30, "c", prio=5)]
    order = [j.id for j in fair_order(page)]
    assert order == ["j30", "j0", "j10", "j20", "j1", "j11", "j2", "j3"]
    plain = [pj(i) for i in range(5)]
    assert fair_order(plain) is plain


def test_admit_holds_jobs_over_their_key_limit_but_not_other_keys() -> None:
    page = fair_order([pj(i, "user:1", 2) for i in range(5)] + [pj(9, "user:2", 2)])
    got = admit(page, {"user:1": 1}, RateGate(), 0.0)
    assert [j.id for j in got.jobs] == ["j0", "j9"]
    assert got.held == {"concurrency limit 2 on key user:1": 4}


def test_admit_checks_rates_without_consuming_until_placed() -> None:
    gate = RateGate()
    page = [pj(i, rate="2/10") for i in range(5)]
    got = admit(page, {}, gate, 0.0)
    assert len(got.jobs) == 2 and sum(got.held.values()) == 3  # tau = 1 s, T = 5 s: 2 now
    assert gate.tat == {}  # nothing consumed yet
    usage: dict[str, int] = {}
    record_placed(got.jobs[:1], usage, gate, 0.0)
    assert len(admit(page, {}, gate, 0.0).jobs) == 1
    record_placed([pj(1, "k", 3)], usage, gate, 0.0)
    assert usage == {"k": 1}
