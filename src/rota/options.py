"""Job options: their names, defaults and validation (pure)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from rota.core.errors import InvalidOption
from rota.core.model import GANG_PLACEMENTS
from rota.core.rates import normalise_rate
from rota.core.resources import Resources, validate_labels, validate_resources
from rota.core.text import check_text

_QUEUE = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")  # always fullmatch(): "$" lets "a\n" through
PRIORITY_RANGE = (-(2**31), 2**31 - 1)
# The longest a job may wait or run: timeouts, delays, backoff, unique_for, and an eta at
# most this far from now. A larger value is a mistake (1e308 would never run).
MAX_SECONDS = 10 * 365 * 86400.0


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Everything a producer can set on a job besides its arguments."""

    queue: str = "default"
    priority: int = 0
    retries: int = 0
    timeout: float | None = None
    delay: float = 0.0
    eta: float | None = None
    resources: Resources = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    affinity: dict[str, str] = field(default_factory=dict)
    backoff: float = 1.0
    backoff_max: float = 300.0
    # Workflows: parent jobs (ids or handles) that must succeed first.
    depends_on: tuple[str, ...] = ()
    pass_results: bool = False  # give the parents' results as the first argument
    # At most one unfinished job per key (for ``unique_for`` seconds, when set).
    unique_key: str | None = None
    unique_for: float | None = None
    # At most ``concurrency_limit`` jobs per key assigned or running, fleet-wide. The key
    # may be a function of the job's arguments: ``lambda user_id, **_: f"user:{user_id}"``.
    concurrency_key: str | Callable[..., str] | None = None
    concurrency_limit: int = 0
    rate_limit: str | None = None  # per task, fleet-wide: "100/m", "10/s", "5/2h"
    # Sharing a fleet (rota.scheduler.policy): the fair-share tenant (None: the queue),
    # whether a job >= preempt_gap levels higher may stop this one, and aging (seconds of
    # wait that add one priority level; None: off).
    tenant: str | None = None
    preemptible: bool = False
    aging: float | None = None

    def merged(self, overrides: dict[str, Any]) -> JobOptions:
        """A copy with ``overrides`` validated and applied; unknown names are refused."""
        return replace(self, **validate_options(overrides))


OPTION_NAMES = frozenset(JobOptions.__dataclass_fields__)


def _number(
    name: str,
    value: Any,
    *,
    minimum: float,
    maximum: float = MAX_SECONDS,
    allow_none: bool = False,
) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOption(f"{name} must be a number, not {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range, e.g. 10**400
        number = math.inf
    if not math.isfinite(number) or not minimum <= number <= maximum:
        raise InvalidOption(
            f"{name} must be between {minimum:g} and {maximum:g} seconds, got {value!r:.40}"
        )
    return number


def _eta(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        value = aware.timestamp()
    # An absolute time: at most MAX_SECONDS from now (by this machine's clock; the bound is
    # loose enough that clock skew does not matter).
    result = _number("eta", value, minimum=0, maximum=time.time() + MAX_SECONDS)
    assert result is not None
    return result


def validate_options(opts: dict[str, Any]) -> dict[str, Any]:
    """Check option names and values; return them normalised. Raises ``InvalidOption``."""
    unknown = set(opts) - OPTION_NAMES
    if unknown:
        raise InvalidOption(
            f"unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(OPTION_NAMES))}"
        )
    out: dict[str, Any] = {}
    for name, value in opts.items():
        if name == "queue":
            if not isinstance(value, str) or not _QUEUE.fullmatch(value):
                raise InvalidOption(f"queue must match {_QUEUE.pattern}, got {value!r}")
            out[name] = value
        elif name in ("priority", "retries"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidOption(f"{name} must be an integer, got {value!r}")
            low = PRIORITY_RANGE[0] if name == "priority" else 0
            high = PRIORITY_RANGE[1] if name == "priority" else 1000
            if not low <= value <= high:
                raise InvalidOption(f"{name} must be between {low} and {high}, got {value}")
            out[name] = value
        elif name == "timeout":
            timeout = _number(name, value, minimum=0, allow_none=True)
            if timeout == 0:
                raise InvalidOption("timeout must be > 0 (or None for no timeout)")
            out[name] = timeout
        elif name in ("delay", "backoff", "backoff_max"):
            out[name] = _number(name, value, minimum=0)
        elif name == "eta":
            out[name] = _eta(value)
        elif name == "resources":
            out[name] = validate_resources(value)
        elif name == "depends_on":
            out[name] = _parents(value)
        elif name == "pass_results":
            if not isinstance(value, bool):
                raise InvalidOption(f"pass_results must be True or False, got {value!r}")
            out[name] = value
        elif name == "unique_key":
            out[name] = _key(name, value)
        elif name == "unique_for":
            limit = _number(name, value, minimum=0, allow_none=True)
            if limit == 0:
                raise InvalidOption("unique_for must be > 0 seconds (or None: while unfinished)")
            out[name] = limit
        elif name == "concurrency_key":
            out[name] = value if callable(value) else _key(name, value)
        elif name == "concurrency_limit":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**6:
                raise InvalidOption(f"concurrency_limit must be an integer >= 0, got {value!r}")
            out[name] = value
        elif name == "rate_limit":
            out[name] = None if value is None else normalise_rate(value)
        elif name == "tenant":
            out[name] = None if value is None else tenant_name(value)
        elif name == "preemptible":
            if not isinstance(value, bool):
                raise InvalidOption(f"preemptible must be True or False, got {value!r}")
            out[name] = value
        elif name == "aging":
            aging = _number(name, value, minimum=0, allow_none=True)
            if aging == 0:
                raise InvalidOption(
                    "aging must be > 0 seconds per priority level (or None: no aging)"
                )
            out[name] = aging
        else:  # labels, affinity
            out[name] = validate_labels(value, name)
    return out


def tenant_name(value: Any) -> str:
    """A valid tenant name (the same rule as queue names) or ``InvalidOption``."""
    if not isinstance(value, str) or not _QUEUE.fullmatch(value):
        raise InvalidOption(f"tenant must match {_QUEUE.pattern}, got {value!r}")
    return value


def validate_share(weight: Any, limit: Any) -> tuple[float, dict[str, float]]:
    """A tenant's weight (> 0) and hard caps (resource -> quantity; ``slots`` caps jobs)."""
    checked = _number("weight", weight, minimum=0)
    if not checked:
        raise InvalidOption(f"weight must be > 0, got {weight!r}")
    caps = validate_resources({} if limit is None else limit, "limit")
    for name in limit or {}:
        caps.setdefault(name, 0.0)  # a cap of 0 holds every job that asks for any
    return checked, caps


@dataclass(frozen=True, slots=True)
class GangOptions:
    """``group(...).options(gang=True, placement=..., gang_restart=...)``."""

    placement: str = "pack"  # Ray's strategies: pack, spread, strict_pack, strict_spread
    restart: bool = False  # a member's node dies: stop and re-place the whole gang


def validate_gang(opts: dict[str, Any]) -> GangOptions | None:
    """Group options: ``gang`` (bool), ``placement``, ``gang_restart``; None: no gang."""
    unknown = set(opts) - {"gang", "placement", "gang_restart"}
    if unknown:
        raise InvalidOption(
            f"unknown group option(s) {', '.join(sorted(unknown))}; "
            "known: gang, gang_restart, placement"
        )
    gang = opts.get("gang", False)
    restart = opts.get("gang_restart", False)
    placement = opts.get("placement", "pack")
    for name, value in (("gang", gang), ("gang_restart", restart)):
        if not isinstance(value, bool):
            raise InvalidOption(f"{name} must be True or False, got {value!r}")
    if placement not in GANG_PLACEMENTS:
        raise InvalidOption(
            f"placement must be one of {', '.join(GANG_PLACEMENTS)}, got {placement!r}"
        )
    if not gang:
        if "placement" in opts or restart:
            raise InvalidOption("placement and gang_restart need gang=True")
        return None
    return GangOptions(placement, restart)


def _key(name: str, value: Any) -> str | None:
    if value is None:
        return None
    return check_text(name, value, 512)


def _parents(value: Any) -> tuple[str, ...]:
    """Job ids from ids or handles (anything with a string ``id``)."""
    items = [value] if isinstance(value, str) or hasattr(value, "id") else value
    try:
        ids = [item if isinstance(item, str) else item.id for item in items]
    except (TypeError, AttributeError):
        raise InvalidOption(
            f"depends_on takes job handles or ids, got {type(value).__name__}"
        ) from None
    if not all(isinstance(i, str) for i in ids):
        raise InvalidOption(f"depends_on takes job handles or ids, got {value!r:.200}")
    for i in ids:
        check_text("depends_on id", i, 128)
    if len(ids) > 10_000:
        raise InvalidOption("depends_on takes at most 10,000 parents")
    return tuple(dict.fromkeys(ids))
