"""Rate limit text (``"100/m"``, ``"10/s"``): parsed and normalised at submit, read by the
scheduler's GCRA (``rota.scheduler.limits``)."""

from __future__ import annotations

import re

from rota.core.errors import InvalidOption

_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([a-z]*)\s*")  # always fullmatch()
_PERIODS = {
    "": 1.0,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}


def parse_rate(text: str) -> tuple[int, float]:
    """``"100/m"`` -> ``(100, 60.0)``; also ``"10/s"``, ``"5/2h"``, ``"60/6s"``, ``"3/1.5"``
    (a bare number is seconds). Raises ``InvalidOption``."""
    if not isinstance(text, str):
        raise InvalidOption(f"rate_limit must be a string like '100/m', not {text!r}")
    m = _RATE.fullmatch(text.lower())
    unit = m.group(3) if m else ""
    if unit not in _PERIODS and unit.endswith("s") and unit[:-1] in _PERIODS:
        unit = unit[:-1]  # "mins", "hours", "seconds"
    if not m or unit not in _PERIODS:
        raise InvalidOption(f"cannot read rate_limit {text!r} (e.g. '100/m', '10/s', '5/2h')")
    count = int(m.group(1))
    scale = float(m.group(2)) if m.group(2) not in ("", ".") else 1.0
    period = scale * _PERIODS[unit]
    if not 1 <= count <= 10**9 or not 0 < period <= 7 * 86400:
        raise InvalidOption(
            f"rate_limit {text!r} needs a count of 1 to 10**9 and a period up to a week"
        )
    return count, period


def normalise_rate(text: str) -> str:
    """The stored form of a rate limit: ``"<count>/<seconds>"``."""
    count, period = parse_rate(text)
    return f"{count}/{period:g}"
