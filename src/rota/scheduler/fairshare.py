"""Fair share between tenants: weighted Dominant Resource Fairness (pure).

Ghodsi et al., "Dominant Resource Fairness: Fair Allocation of Multiple Resource Types",
NSDI 2011. A tenant's *dominant share* is the largest fraction of any one resource of the
fleet it holds (job slots count as a resource, so jobs that ask for nothing still have a
share); its *weighted* dominant share is that divided by its weight. Free capacity goes,
one job at a time, to the tenant with the lowest weighted dominant share among those that
still have a job that can be placed (progressive filling). A tenant that submits nothing
takes nothing, so the others get its room (work-conserving). A hard cap
(``limit={"gpu": 8}``) holds a tenant's jobs once they would take it over the cap, even on
an idle fleet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rota.core.resources import Resources
from rota.scheduler.placement import EPSILON


@dataclass(frozen=True, slots=True)
class Share:
    """A tenant's weight (> 0) and hard caps (resource -> most it may hold at once)."""

    weight: float = 1.0
    limit: Mapping[str, float] = field(default_factory=dict)


DEFAULT_SHARE = Share()
SHARES_NAME = "shares"  # the stats document ``Rota.sync_shares`` writes and the leader reads


def shares_to_doc(shares: Mapping[str, Share]) -> dict[str, Any]:
    """The JSON document of ``shares`` (``{"tenants": {name: {"weight", "limit"}}}``)."""
    return {
        "tenants": {
            name: {"weight": s.weight, "limit": dict(s.limit)} for name, s in shares.items()
        }
    }


def shares_from_doc(doc: Mapping[str, Any] | None) -> dict[str, Share]:
    """The inverse of :func:`shares_to_doc`; entries that are not well formed are left out
    (the document is read by the leader every stats cycle and must never stop it)."""
    tenants = (doc or {}).get("tenants")
    out: dict[str, Share] = {}
    if not isinstance(tenants, dict):
        return out
    for name, entry in tenants.items():
        if not isinstance(entry, dict):
            continue
        weight, limit = entry.get("weight", 1.0), entry.get("limit") or {}
        if not isinstance(weight, int | float) or weight <= 0 or not isinstance(limit, dict):
            continue
        caps = {str(r): float(q) for r, q in limit.items() if isinstance(q, int | float)}
        out[str(name)] = Share(float(weight), caps)
    return out


class FairShare:
    """What every tenant holds, and whose turn it is."""

    def __init__(
        self,
        capacity: Mapping[str, float],
        shares: Mapping[str, Share],
        usage: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        self.capacity = {r: float(c) for r, c in capacity.items() if c > 0}
        self.shares = shares
        self.usage: dict[str, Resources] = {t: dict(u) for t, u in (usage or {}).items()}

    def share_of(self, tenant: str) -> Share:
        return self.shares.get(tenant, DEFAULT_SHARE)

    def dominant(self, tenant: str) -> float:
        """The tenant's dominant share (unweighted), 0..1 when within the fleet."""
        held = self.usage.get(tenant, {})
        return max(
            (held.get(r, 0.0) / cap for r, cap in self.capacity.items()),
            default=0.0,
        )

    def weighted(self, tenant: str) -> float:
        return self.dominant(tenant) / self.share_of(tenant).weight

    def over_limit(self, tenant: str, need: Mapping[str, float]) -> str | None:
        """Why ``need`` more would take ``tenant`` over a hard cap, or None."""
        limit = self.share_of(tenant).limit
        held = self.usage.get(tenant, {})
        for r, cap in sorted(limit.items()):
            if held.get(r, 0.0) + need.get(r, 0.0) > cap + EPSILON:
                return f"tenant {tenant} at its limit {r}={cap:g}"
        return None

    def add(self, tenant: str, need: Mapping[str, float]) -> None:
        held = self.usage.setdefault(tenant, {})
        for r, qty in need.items():
            held[r] = held.get(r, 0.0) + qty

    def remove(self, tenant: str, need: Mapping[str, float]) -> None:
        held = self.usage.setdefault(tenant, {})
        for r, qty in need.items():
            held[r] = held.get(r, 0.0) - qty

    def lowest(self, tenants: Iterable[str]) -> str:
        """The tenant with the lowest weighted dominant share (ties: the first given)."""
        return min(tenants, key=self.weighted)


def jain(values: Iterable[float]) -> float:
    """Jain's fairness index (sum x)^2 / (n * sum x^2): 1 when all equal, 1/n at worst;
    1 for no values or all zero."""
    xs = list(values)
    total = sum(xs)
    squares = sum(x * x for x in xs)
    if not xs or squares == 0:
        return 1.0
    return total * total / (len(xs) * squares)
