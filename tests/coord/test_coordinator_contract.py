"""The coordinator contract: what both coordinators (store leases, ZooKeeper) guarantee to
the scheduler and the worker, on a real store and a real ZooKeeper server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from rota.coord import CONNECTED, Coordinator, Leadership, Membership, open_coordinator
from rota.core.errors import InvalidOption, LeaseLost
from rota.core.model import Assignment, NewJob, NodeSpec, NodeState
from rota.core.payload import encode_arguments
from rota.store import SCHEDULER_LEASE, Store
from tests.zookeeper import ZooKeeperServer

T = TypeVar("T")
TTL = 30.0


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def spec(name: str) -> NodeSpec:
    return NodeSpec(id=f"{name}-{time.monotonic_ns() % 10**8}", name=name, slots=2, prefetch=0)


@pytest.fixture
def coordinator(coordinator_url: str) -> Iterator[Coordinator]:
    coord = open_coordinator(coordinator_url)
    yield coord
    coord.close()


@pytest.fixture
def closing() -> Iterator[list[Leadership | Membership]]:
    opened: list[Leadership | Membership] = []
    yield opened
    for item in opened:
        item.close()


def lead_until(store: Store, who: Leadership, timeout: float = 20.0) -> object:
    return wait_for("leadership", lambda: who.lead(store, TTL), timeout)


def test_one_leader_then_a_higher_token_after_it_steps_down(
    coordinator: Coordinator, store: Store, closing: list[Leadership | Membership]
) -> None:
    a = coordinator.leadership("a")
    b = coordinator.leadership("b")
    closing += [a, b]
    first = lead_until(store, a)
    assert first is not None
    lease_a = store.get_lease(SCHEDULER_LEASE)
    assert lease_a is not None and lease_a.holder == "a"
    assert a.holds(lease_a)
    for _ in range(10):  # never two leaders
        assert b.lead(store, TTL) is None
    a.release(store, lease_a)
    lease_b = wait_for("b to lead", lambda: b.lead(store, TTL))
    assert lease_b.holder == "b" and lease_b.token > lease_a.token
    with pytest.raises(LeaseLost):  # the old leader's writes are refused
        store.promote_due(lease_a, 10)
    assert a.lead(store, TTL) is None


def test_membership_proves_a_node_alive_and_the_leader_sees_it_go(
    coordinator: Coordinator, store: Store, closing: list[Leadership | Membership]
) -> None:
    leader = coordinator.leadership("s")
    closing.append(leader)
    lease = lead_until(store, leader)
    member = coordinator.membership()
    node = spec("w")
    member.join(node)
    store.register_node(node)
    assert member.can_take_work()
    assert member.session()["state"] == CONNECTED
    member.refresh("busy")
    sessions = coordinator.node_sessions()
    if coordinator.kind == "zookeeper":
        assert sessions is not None and sessions[node.id]["load"] == "busy"
    else:
        assert sessions is None  # the store's heartbeats decide
    assert leader.gone(store) == []
    member.close()  # the node goes away without a word to the store

    def found_dead() -> bool:
        gone = leader.gone(store)
        if gone:
            store.reap_nodes(lease, gone, 1.0)  # type: ignore[arg-type]
        else:
            store.reap(lease, 1.0)  # type: ignore[arg-type]
        return {n.id: n.state for n in store.list_nodes()}[node.id] is NodeState.DEAD

    wait_for("the node to be found dead", found_dead, timeout=15)


def test_unknown_coordinator_is_refused() -> None:
    with pytest.raises(InvalidOption):
        open_coordinator("etcd://127.0.0.1:2379")
    with pytest.raises(InvalidOption):
        open_coordinator("zookeeper://127.0.0.1:2181/r?session_timeout=-1").leadership("x")


# ---- ZooKeeper only: expiry, a paused leader, the server away ---------------------------
def expire(session_owner: Leadership | Membership, server: ZooKeeperServer) -> None:
    """Expire a client's session on the server, as a long pause would: a second client
    joins the same session and closes it (the standard ZooKeeper test technique)."""
    from kazoo.client import KazooClient

    client = session_owner.zk.client  # type: ignore[union-attr]
    other = KazooClient(hosts=server.hosts, client_id=client.client_id, timeout=2.0)
    other.start(10)
    other.stop()
    other.close()


def test_zookeeper_paused_leader_is_fenced_by_the_newer_token(
    zk_url: str, zk_server: ZooKeeperServer, store: Store, closing: list[Leadership | Membership]
) -> None:
    coord = open_coordinator(zk_url)
    a, b = coord.leadership("a"), coord.leadership("b")
    closing += [a, b]
    old = lead_until(store, a)
    spec_w = spec("w")
    store.register_node(spec_w)
    j = NewJob(id="job-1", task="t", queue="default", payload=encode_arguments([], {}))
    store.submit([j])
    expire(a, zk_server)  # a "paused" past its session timeout
    new = wait_for("b to lead", lambda: b.lead(store, TTL))
    assert new.token > old.token  # type: ignore[attr-defined]
    # The paused leader's writes are refused by the store, placements and ticks alike.
    with pytest.raises(LeaseLost):
        store.assign(old, [Assignment(j.id, spec_w.id)])  # type: ignore[arg-type]
    with pytest.raises(LeaseLost):
        store.fire_schedule(old, "any", 1.0, None)  # type: ignore[arg-type]
    wait_for("a to see it lost", lambda: not a.holds(old))  # type: ignore[arg-type]
    assert a.lead(store, TTL) is None  # a stands by in its new session
    assert store.assign(new, [Assignment(j.id, spec_w.id)]) == 1


def test_zookeeper_away_means_no_leader_and_no_new_work_then_all_resumes(
    zk_url: str, zk_server: ZooKeeperServer, store: Store, closing: list[Leadership | Membership]
) -> None:
    coord = open_coordinator(zk_url)
    leader = coord.leadership("s")
    member = coord.membership()
    closing += [leader, member]
    lease = lead_until(store, leader)
    sid_before = leader.zk.session_id  # type: ignore[attr-defined]
    node = spec("w")
    member.join(node)
    assert member.can_take_work()
    zk_server.stop()
    try:
        wait_for("the leader to stop leading", lambda: not leader.holds(lease))  # type: ignore[arg-type]
        assert leader.lead(store, TTL) is None
        wait_for("the node to stop taking work", lambda: not member.can_take_work())
        assert leader.gone(store) == []  # nobody can be proven dead meanwhile
    finally:
        zk_server.start()
    again = wait_for("leadership back", lambda: leader.lead(store, TTL))
    if leader.zk.session_id == sid_before:  # type: ignore[attr-defined]
        assert again.token == lease.token  # type: ignore[attr-defined]  # same session, same znode
    else:  # ZooKeeper came back after the session timeout (a loaded machine): a new znode
        assert again.token > lease.token  # type: ignore[attr-defined]

    def node_back() -> bool:
        member.refresh("idle")  # what the worker's heartbeat does: re-announce a new session
        return member.can_take_work()

    wait_for("the node back", node_back)


def test_zookeeper_node_with_a_new_session_announces_itself_again(
    zk_url: str, zk_server: ZooKeeperServer, closing: list[Leadership | Membership]
) -> None:
    coord = open_coordinator(zk_url)
    member = coord.membership()
    closing.append(member)
    node = spec("w")
    member.join(node)
    first = coord.node_sessions()
    assert first is not None and node.id in first
    expire(member, zk_server)
    wait_for("the znode to go", lambda: node.id not in (coord.node_sessions() or {}))
    assert not member.can_take_work()

    def back() -> bool:
        member.refresh("idle")
        return member.can_take_work()

    wait_for("a new session and znode", back)
    again = coord.node_sessions()
    assert again is not None
    assert again[node.id]["session_id"] != first[node.id]["session_id"]
    coord.close()
