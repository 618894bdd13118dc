"""Slot reservations and claim grants (rota.scheduler.reservations): what the leader hands
the store ahead of time."""

from __future__ import annotations

from collections import Counter

from rota.core.model import NodeState
from rota.scheduler.placement import place
from rota.scheduler.reservations import grants, reserve
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
