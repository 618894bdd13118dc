"""Resource quantities: parsing ``cpu=4,mem=8G,gpu=1`` and checking requests (pure)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from rota.core.errors import InvalidOption
from rota.core.text import check_text

Resources = dict[str, float]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]{0,63}")  # always fullmatch()
_UNITS = {
    "": 1.0,
    "k": 1e3,
    "m": 1e6,
    "g": 1e9,
    "t": 1e12,
    "ki": 2.0**10,
    "mi": 2.0**20,
    "gi": 2.0**30,
    "ti": 2.0**40,
}
_QUANTITY = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]{0,2})\s*")


def parse_quantity(text: str) -> float:
    """``"8G"`` -> 8e9, ``"512Mi"`` -> 536870912.0, ``"0.5"`` -> 0.5. Memory is in bytes."""
    m = _QUANTITY.fullmatch(text) if isinstance(text, str) else None
    if not m or m.group(2).lower() not in _UNITS:
        raise InvalidOption(f"cannot read resource quantity {text!r} (e.g. 4, 0.5, 8G, 512Mi)")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not math.isfinite(value):
        raise InvalidOption(f"resource quantity {text!r} is too large")
    return value


def parse_resources(text: str) -> Resources:
    """Parse ``"cpu=4,mem=8G,gpu=1"`` into ``{"cpu": 4.0, "mem": 8e9, "gpu": 1.0}``."""
    out: Resources = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, qty = part.partition("=")
        if not sep:
            raise InvalidOption(f"resource {part!r} needs the form name=quantity")
        out[name.strip()] = parse_quantity(qty)
    return validate_resources(out)


def parse_labels(text: str) -> dict[str, str]:
    """Parse ``"zone=eu,disk=ssd"`` into a dict."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise InvalidOption(f"label {part!r} needs the form name=value")
        out[name.strip()] = value.strip()
    return validate_labels(out)


def validate_resources(value: object, what: str = "resources") -> Resources:
    """A copy of ``value`` as ``{name: non-negative finite float}`` or ``InvalidOption``."""
    if not isinstance(value, Mapping):
        raise InvalidOption(f"{what} must be a mapping of name to quantity")
    out: Resources = {}
    for name, qty in value.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidOption(f"{what}: bad resource name {name!r}")
        if isinstance(qty, str):
            qty = parse_quantity(qty)
        if isinstance(qty, bool) or not isinstance(qty, int | float):
            raise InvalidOption(f"{what}: quantity of {name!r} must be a number")
        try:
            number = float(qty)
        except OverflowError:  # an int beyond float range, e.g. 10**400
            raise InvalidOption(f"{what}: quantity of {name!r} is too large") from None
        if not math.isfinite(number) or number < 0:
            raise InvalidOption(f"{what}: quantity of {name!r} must be finite and >= 0")
        if number:
            out[name] = number
    return out


def validate_labels(value: object, what: str = "labels") -> dict[str, str]:
    """A copy of ``value`` as ``{name: value}`` of short strings, or ``InvalidOption``."""
    if not isinstance(value, Mapping):
        raise InvalidOption(f"{what} must be a mapping of name to string")
    out: dict[str, str] = {}
    for name, val in value.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidOption(f"{what}: bad label name {name!r}")
        out[name] = check_text(f"{what}: value of {name!r}", val, 256, allow_empty=True)
    return out


def fits(request: Mapping[str, float], free: Mapping[str, float]) -> bool:
    """Whether every requested quantity is available in ``free``."""
    return all(free.get(name, 0.0) + 1e-9 >= qty for name, qty in request.items())
