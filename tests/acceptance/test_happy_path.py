"""A scheduler and two workers of different capacities run a few hundred mixed jobs."""

from __future__ import annotations

import random
from collections import Counter
from statistics import mean

import orjson
import pytest

from rota import JobHandle, Rota
from rota.core.states import JobState
from tests.acceptance.conftest import Fleet
from tests.stores import STORE_KINDS

pytestmark = pytest.mark.acceptance


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", STORE_KINDS)
def test_mixed_jobs_all_succeed_on_both_nodes(fleet: Fleet, client: Rota) -> None:
    rng = random.Random(1)
    square = client.get_task("acc.square")
    double = client.get_task("acc.async_double")
    fleet.scheduler()
    # Submit before any worker exists: the first placements then go strictly by priority.
    expected: dict[str, int] = {}
    groups: dict[str, list[str]] = {}

    def add(group: str, handles: list[JobHandle], values: list[int]) -> None:
        ids = [h.id for h in handles]
        groups.setdefault(group, []).extend(ids)
        expected.update(zip(ids, values, strict=True))

    for prio in (0, 3):
        xs = list(range(prio * 100, prio * 100 + 60))
        calls = [(x, rng.randint(5, 30)) for x in xs]
        add(
            f"sync-p{prio}",
            square.options(priority=prio, resources={"cpu": 1}).submit_many(calls),
            [x * x for x in xs],
        )
    xs = list(range(1000, 1130))
    add(
        "async",
        double.options(priority=1).submit_many([(x, rng.randint(5, 30)) for x in xs]),
        [2 * x for x in xs],
    )
    xs = list(range(2000, 2030))
    add(
        "sync-p9",
        square.options(priority=9, resources={"cpu": 2}).submit_many([(x, 20) for x in xs]),
        [x * x for x in xs],
    )
    xs = list(range(3000, 3020))
    add(
        "gpu",
        square.options(priority=2, resources={"gpu": 1}).submit_many([(x, 10) for x in xs]),
        [x * x for x in xs],
    )
    never = square.options(resources={"tpu": 1}).submit(7)
    assert len(expected) == 300

    fleet.worker("big", concurrency=6, resources="cpu=6,gpu=1")
    fleet.worker("small", concurrency=3, resources="cpu=3")
    fleet.wait_nodes(2, names=["big", "small"])
    records = fleet.wait_final(list(expected), timeout=60)

    not_ok = {i: (r.state.value, r.error) for i, r in records.items() if r.state != "succeeded"}
    assert not not_ok
    names = fleet.node_names()
    per_node: Counter[str] = Counter()
    for job_id, rec in records.items():
        result = rec.result_value()
        assert result["value"] == expected[job_id], rec
        assert rec.attempts == 1, rec
        assert result["node"] == names[rec.node_id or ""]
        per_node[result["node"]] += 1
    assert per_node["big"] > 0 and per_node["small"] > 0, per_node
    # Only "big" has a GPU.
    assert {records[i].result_value()["node"] for i in groups["gpu"]} == {"big"}
    # Higher priority goes first (on average: smaller jobs backfill around big ones).
    started = {g: mean(records[i].started_at or 0 for i in ids) for g, ids in groups.items()}
    assert started["sync-p9"] < started["sync-p3"] < started["sync-p0"], started

    # The job no node can run is still pending, and `rota status` says why.
    assert never.record().state is JobState.PENDING

    def published() -> bool:  # stats are refreshed every second: wait for a fresh one
        stats = fleet.store.get_stats("scheduler") or {}
        return [u["jobs"] for u in stats.get("unplaceable", [])] == [1]

    fleet.wait_for("the scheduler to report the unplaceable job", published, timeout=10)
    out = fleet.rota("status", "--json", "--store", fleet.url, with_store=False)
    assert out.returncode == 0, out.stderr
    status = orjson.loads(out.stdout)
    unplaceable = status["scheduler"]["unplaceable"]
    assert sum(u["jobs"] for u in unplaceable) == 1, unplaceable
    assert "tpu" in unplaceable[0]["reason"], unplaceable
    assert status["jobs"]["total"] == {"succeeded": 300, "pending": 1}
    assert {n["name"]: n["state"] for n in status["nodes"]} == {"big": "live", "small": "live"}
    assert status["scheduler"]["leader"]
