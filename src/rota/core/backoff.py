"""Retry backoff: exponential with jitter (pure)."""

from __future__ import annotations

import random
from collections.abc import Callable

DEFAULT_BASE = 1.0
DEFAULT_MAX = 300.0


def retry_delay(
    attempt: int,
    base: float = DEFAULT_BASE,
    cap: float = DEFAULT_MAX,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before the attempt after ``attempt`` (1-based) failed.

    The ceiling grows as ``base * 2**(attempt-1)`` up to ``cap``; the delay is drawn
    uniformly from the upper half of it ("equal jitter"), so retries of many jobs that
    failed together spread out while each still waits at least half the ceiling.
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    if base <= 0:
        return 0.0
    ceiling = min(cap, base * (2.0 ** min(attempt - 1, 62)))
    half = ceiling / 2.0
    return half + half * rand()
