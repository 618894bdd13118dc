from __future__ import annotations

import random

import pytest

from rota.core.backoff import retry_delay


def test_grows_exponentially_within_equal_jitter_bounds() -> None:
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0)]:
        assert retry_delay(attempt, 1.0, 300.0, rand=lambda: 0.0) == ceiling / 2
        assert retry_delay(attempt, 1.0, 300.0, rand=lambda: 1.0) == ceiling


def test_capped() -> None:
    assert retry_delay(50, 1.0, 60.0, rand=lambda: 1.0) == 60.0
    assert retry_delay(10_000, 2.0, 10.0, rand=lambda: 0.5) == 7.5  # no overflow


def test_jitter_spreads_delays() -> None:
    rng = random.Random(1)
    delays = {round(retry_delay(4, 1.0, 300.0, rand=rng.random), 6) for _ in range(50)}
    assert len(delays) > 40 and all(4.0 <= d <= 8.0 for d in delays)


def test_zero_base_means_no_wait_and_attempt_is_one_based() -> None:
    assert retry_delay(3, 0.0) == 0.0
    with pytest.raises(ValueError):
        retry_delay(0)
