"""Issue 15 end to end with real processes, on store leases and on a private ZooKeeper:
a killed worker's jobs start elsewhere, a paused leader is fenced and each periodic tick
still runs once, and a ZooKeeper restart mid-drain loses nothing and runs nothing twice."""

from __future__ import annotations

import functools
import signal
import time
from collections import Counter, defaultdict

import pytest

from rota import Rota
from rota.core.model import NodeState
from rota.core.states import JobState
from tests.acceptance.apps import flow
from tests.acceptance.apps.basic import read_lines
from tests.acceptance.conftest import LEADER_LEASE_TTL, Fleet
from tests.acceptance.test_flow import tick_runs
from tests.zookeeper import TEST_SESSION_TIMEOUT

pytestmark = pytest.mark.acceptance
BOTH = pytest.mark.parametrize("coordinator", ["store", "zookeeper"])
SLOW_BACKSTOP = 30.0  # store timeouts so long that only ZooKeeper can be what noticed


def runs_by_key(fleet: Fleet) -> dict[str, list[tuple[str, str, float]]]:
    """key -> [(nonce, node, start time)] from the record task's own log."""
    out: dict[str, list[tuple[str, str, float]]] = defaultdict(list)
    for event, key, nonce, node, _pid, at in read_lines(fleet.runs):
        if event == "start":
            out[key].append((nonce, node, float(at)))
    return out


def ticks_succeeded(fleet: Fleet, name: str, window: tuple[float, float]) -> bool:
    return all(s is JobState.SUCCEEDED for s in tick_runs(fleet, name, window).values())


@BOTH
@pytest.mark.timeout(120)
def test_killed_workers_jobs_start_elsewhere(fleet: Fleet, client: Rota, coordinator: str) -> None:
    zk = coordinator == "zookeeper"
    # With ZooKeeper, the store's own timeouts are far too long to be what notices.
    fleet.scheduler(failure_timeout=SLOW_BACKSTOP if zk else 2.0)
    for name in ("w1", "w2"):
        fleet.worker(name, concurrency=4, lease_ttl=SLOW_BACKSTOP if zk else 2.0)
    fleet.wait_nodes(2, names=["w1", "w2"])
    victim = fleet.live_nodes()["w2"].id
    record = client.get_task("acc.record")
    keys = [f"k{i:03d}" for i in range(60)]
    ids = [h.id for h in record.submit_many([(k, 0.8) for k in keys])]
    key_of = dict(zip(ids, keys, strict=True))

    def victim_mid_run() -> bool:
        """The victim's task bodies have begun (its own log says so) and are still running:
        the store saying "running" is not enough on a loaded machine, where the pool's
        children may not have started a single body yet when the kill lands."""
        begun = {k for k, rs in runs_by_key(fleet).items() if any(n == "w2" for _, n, _ in rs)}
        running = {
            key_of[j.id]
            for j in fleet.store.list_jobs(state=JobState.RUNNING, node_id=victim)
            if j.id in key_of
        }
        return len(begun & running) >= 2

    fleet.wait_for("the victim to run jobs", victim_mid_run, timeout=30, interval=0.02)
    killed = time.time()
    fleet.kill("w2", signal.SIGKILL)
    records = fleet.wait_final(ids, timeout=60)
    assert all(r.state is JobState.SUCCEEDED for r in records.values())
    assert {n.id: n.state for n in fleet.nodes()}[victim] is NodeState.DEAD
    runs = runs_by_key(fleet)
    elsewhere = [
        min((at for _, node, at in rs if node != "w2" and at > killed), default=None)
        for rs in runs.values()
        if any(node == "w2" for _, node, _ in rs) and len(rs) > 1
    ]
    restarts = [at - killed for at in elsewhere if at is not None]
    assert restarts, f"no job was cut short on the victim: {dict(runs)}"
    print(f"\n{coordinator}: kill -9 -> jobs started elsewhere: {max(restarts):.2f} s")
    log = fleet.log("scheduler")
    if zk:
        assert "coordinator session ended" in log and victim in log
        # Well under the 30 s store backstop: the session timeout (2 s) did it.
        assert max(restarts) < SLOW_BACKSTOP / 2
    else:
        assert "missed heartbeats" in log and victim in log


@BOTH
@pytest.mark.parametrize("kind", ["redis"])  # a stopped process holds no SQLite write lock
@pytest.mark.timeout(120)
def test_paused_leader_is_fenced_and_ticks_run_once(
    fleet: Fleet, url: str, coordinator: str
) -> None:
    app = flow.build(url)
    try:
        fleet.scheduler("sched-a")
        assert fleet.wait_leader()[0] == "sched-a"
        fleet.scheduler("sched-b")
        fleet.worker("w0", concurrency=4, app=flow.APP)  # writes the app's schedules
        fleet.wait_nodes(1)
        began = fleet.store.now()
        fleet.wait_for(
            "two ticks",
            lambda: len(read_lines(fleet.runs, "tick_once.log")) >= 2,
            timeout=30,
        )
        _, old_token = fleet.wait_leader()
        fleet.kill("sched-a", signal.SIGSTOP)
        paused = time.monotonic()

        def new_leader() -> tuple[str, int] | None:
            found = fleet.leader()
            return found if found is not None and found[0] == "sched-b" else None

        _, new_token = fleet.wait_for("sched-b to lead", new_leader, LEADER_LEASE_TTL + 20)
        assert new_token > old_token
        held = time.monotonic() - paused
        time.sleep(max(0.0, 1.0 + max(TEST_SESSION_TIMEOUT, LEADER_LEASE_TTL) - held))
        fleet.kill("sched-a", signal.SIGCONT)
        fleet.wait_for(
            "the paused leader to learn it lost",
            lambda: "lost leadership" in fleet.log("sched-a"),
            timeout=20,
        )
        time.sleep(3.0)  # ticks keep coming under the new leader
        lease = fleet.store.get_lease("scheduler")
        assert lease is not None and lease.token == new_token  # a never took it back
        ended = fleet.store.now()
        for name, log in (("flow.tick_once", "tick_once.log"), ("flow.tick_skip", "tick_skip.log")):
            fleet.wait_for(
                f"{name}'s jobs to finish",
                functools.partial(ticks_succeeded, fleet, name, (began, ended)),
                timeout=20,
            )
            ticks = tick_runs(fleet, name, (began, fleet.store.now()))
            runs = read_lines(fleet.runs, log)
            assert len(runs) == len(ticks), f"{name}: {len(runs)} runs for {len(ticks)} ticks"
        # The paused leader made no write after it resumed: every attempt was refused.
        after = fleet.log("sched-a").split("lost leadership", 1)[1]
        assert "became leader" not in after
    finally:
        app.close()


@pytest.mark.parametrize("coordinator", ["zookeeper"])
@pytest.mark.timeout(120)
def test_zookeeper_restart_mid_drain(fleet: Fleet, client: Rota, coordinator: str) -> None:
    assert fleet.zookeeper is not None
    fleet.scheduler(failure_timeout=SLOW_BACKSTOP)
    for name in ("w1", "w2"):
        fleet.worker(name, concurrency=4, lease_ttl=SLOW_BACKSTOP)
    fleet.wait_nodes(2)
    record = client.get_task("acc.record")
    keys = [f"k{i:03d}" for i in range(240)]
    ids = [h.id for h in record.submit_many([(k, 0.1) for k in keys])]
    fleet.wait_for(
        "a fifth of the jobs to finish",
        lambda: sum(r.state is JobState.SUCCEEDED for r in fleet.jobs(ids)) >= 48,
        timeout=30,
    )
    fleet.zookeeper.restart(downtime=1.0)
    records = fleet.wait_final(ids, timeout=90)
    assert all(r.state is JobState.SUCCEEDED for r in records.values())
    runs = runs_by_key(fleet)
    dead = [n for n in fleet.nodes() if n.state is NodeState.DEAD]
    for job_id, key in zip(ids, keys, strict=True):
        result = records[job_id].result_value()
        assert [nonce for nonce, _, _ in runs[key]].count(result["nonce"]) == 1
        if not dead:  # no session expired: nothing may have run twice
            assert len(runs[key]) == 1, (key, runs[key])
    # Every process saw the outage and the return, each logged once.
    for name in ("scheduler", "w1", "w2"):
        text = fleet.log(name)
        lost = Counter(line for line in text.splitlines() if "ZooKeeper connection lost" in line)
        back = [line for line in text.splitlines() if "ZooKeeper" in line and "back" in line]
        assert sum(lost.values()) == 1, (name, lost)
        assert len(back) == 1, (name, back)
