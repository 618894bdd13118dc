"""Fair share between tenants with real processes, on every store: a tenant that floods
the queue first does not keep a light tenant waiting; with equal weights the light one
gets half the slots while it has work (weighted DRF, rota.scheduler.fairshare)."""

from __future__ import annotations

from typing import Any

import pytest

from rota import Rota
from rota.core.states import FINAL_STATES, JobState
from rota.scheduler.config import STATS_NAME
from tests.acceptance.conftest import Fleet
from tests.stores import STORE_KINDS

pytestmark = pytest.mark.acceptance

FLOOD, LIGHT = 300, 30
SLOTS = 4


def scheduler_stats(fleet: Fleet) -> dict[str, Any]:
    return fleet.store.get_stats(STATS_NAME) or {}


@pytest.mark.timeout(150)
@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_flooding_tenant_does_not_starve_a_light_one(fleet: Fleet, client: Rota) -> None:
    client.share("heavy", weight=1)
    client.share("light", weight=1)
    assert client.sync_shares() == 2
    fleet.scheduler()
    fleet.wait_leader()
    fleet.wait_for(
        "the leader to read the shares",
        lambda: (scheduler_stats(fleet).get("allocation") or {}).get("fair_share"),
        30.0,
    )
    square = client.get_task("acc.square")
    # The flood is submitted first: in FIFO order every one of its jobs comes first.
    heavy = square.options(tenant="heavy").submit_many([(x, 150) for x in range(FLOOD)])
    light = square.options(tenant="light").submit_many([(x, 150) for x in range(LIGHT)])
    fleet.worker("w1", concurrency=SLOTS, prefetch=0)
    seen: dict[str, dict[str, Any]] = {}

    def light_done() -> bool:
        for row in scheduler_stats(fleet).get("tenants") or []:
            if row["running"]:
                seen.setdefault(row["tenant"], row)
        return all(r.state in FINAL_STATES for r in fleet.jobs([h.id for h in light]))

    fleet.wait_for("the light tenant's jobs to finish", light_done, 90.0, interval=0.2)
    records = fleet.jobs([h.id for h in light])
    assert all(r.state is JobState.SUCCEEDED for r in records), [r.state for r in records]
    last_light = max(r.started_at or 0.0 for r in records)
    started_heavy = [r.started_at for r in fleet.jobs([h.id for h in heavy]) if r.started_at]
    before = sum(1 for at in started_heavy if at <= last_light)
    # Equal weights: the tenants take turns, so about as many heavy jobs as light ones
    # start meanwhile (FIFO would start all FLOOD heavy jobs first). Slack for the slots
    # held when the light tenant runs out and for jobs finishing out of order.
    assert before <= 2 * LIGHT + 2 * SLOTS, (before, LIGHT)
    assert before >= LIGHT // 2, before  # and the flood was not held back either
    # the leader published both tenants with their weight
    assert {"heavy", "light"} <= set(seen), seen
    assert seen["light"]["weight"] == 1.0
