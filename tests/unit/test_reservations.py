"""Slot reservations and claim grants (rota.scheduler.reservations): what the leader hands
the store ahead of time."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rota.core.model import NewJob, NodeSpec, NodeState
from rota.core.outcomes import Outcome, OutcomeKind
from rota.scheduler.config import SchedulerConfig
from rota.scheduler.fairshare import Share
from rota.scheduler.leader import Scheduler
from rota.scheduler.placement import place
from rota.scheduler.policy import AllocationConfig
from rota.scheduler.reservations import grants, reserve
from rota.store import open_store
from tests.unit.test_placement import job, node


def test_reservations_follow_the_policy_and_the_free_room() -> None:
    nodes = [node("a", slots=4, running=3), node("b", slots=4, running=1)]
    got = reserve(nodes, "least_loaded", 4)
    # as four plain jobs would be placed: b (3 free) first, then whichever is less loaded
    assert got == {
        "default": [
            a.node_id for a in place([job(str(i), seq=i) for i in range(4)], nodes).assignments
        ]
    }
    assert Counter(got["default"]) == {"b": 3, "a": 1}
    assert reserve(nodes, "bin_pack", 1) == {"default": ["a"]}


def test_no_slot_is_promised_twice_across_queues() -> None:
    shared = node("s", slots=3, queues=("default", "mail"))
    only_mail = node("m", slots=1, queues=("mail",))
    got = reserve([shared, only_mail], "least_loaded", 8)
    assert set(got) == {"default", "mail"}
    per_node = Counter(n for nodes in got.values() for n in nodes)
    assert per_node == {"s": 3, "m": 1}  # exactly the free room, never more
    assert "m" not in got["default"]


def test_nothing_reserved_without_live_room_or_when_turned_off() -> None:
    full = node("f", slots=2, running=2)
    draining = node("d", state=NodeState.DRAINING)
    dead = node("x", state=NodeState.DEAD)
    assert reserve([full, draining, dead], "least_loaded", 4) == {}
    assert reserve([node("a")], "least_loaded", 0) == {}
    assert reserve([], "spread", 4) == {}


def test_prefetch_room_counts_like_placement() -> None:
    got = reserve([node("p", slots=1, prefetch=2)], "spread", 8)
    assert got == {"default": ["p", "p", "p"]}


def test_every_live_node_is_granted_all_its_queues_busy_or_not() -> None:
    nodes = [
        node("a", slots=1, running=1, queues=("default", "q2")),
        node("b", resources={"gpu": 1.0}),
        node("c", state=NodeState.DRAINING),
        node("d", state=NodeState.DEAD),
    ]
    assert grants(nodes) == {"a": ("default", "q2"), "b": ("default",)}
    assert grants([]) == {}


def test_the_leader_grants_nothing_under_fair_share_or_backfill(tmp_path: Path) -> None:
    """Fair share and backfill choose between plain jobs too: under them a node claims
    nothing itself (every job waits for a cycle); with neither it claims (SQLite store)."""
    url = f"sqlite:///{tmp_path / 'grants.db'}"
    store = open_store(url)
    try:
        spec = NodeSpec(id="n1", name="n1", slots=1, prefetch=0)
        store.register_node(spec)
        for alloc, claims in [
            (AllocationConfig(shares={"default": Share()}), False),
            (AllocationConfig(backfill=True), False),
            (AllocationConfig(), True),
        ]:
            lead = Scheduler(url, SchedulerConfig(allocation=alloc), holder="s1")
            # the grant as the cycle publishes it, without the cycle's placements
            lease = lead.leadership.lead(store, 30.0)
            assert lease is not None
            lead._grant(store, lease, store.list_nodes([NodeState.LIVE]))
            store.submit([NewJob(id=f"j{claims}{alloc.backfill}", task="t", queue="default",
                                 payload='{"args":[],"kwargs":{}}')])  # fmt: skip
            started = store.start_jobs(spec.id, 1, 30.0)
            assert bool(started) is claims, alloc
            for job in started:
                store.complete([Outcome(job.id, job.token, OutcomeKind.SUCCEEDED)])
    finally:
        store.close()
