"""Partition scenarios on hosts, shared by ``tests/hosts`` (short form) and
``bench.partitions`` (full form). Each drives a :class:`HostFleet` of real ``rota``
processes (workers ``w1..wN`` and schedulers ``s1``/``s2``, each on the host of the same
name), cuts links, checks its invariants with ``assert`` and returns a :class:`Result`.

Accounting, from the runs log (``fault.record`` writes ``start``/``end`` lines) and the
workers' logs (``job ID: outcome KIND refused: lease lost``):

- *lost*: jobs that did not end ``succeeded``;
- *duplicate completions accepted*: per job, runs that ended minus ``succeeded`` outcomes
  the store refused, above one (every ended run's outcome is reported: a worker keeps its
  outcomes until the store answers);
- *late writes refused*: every outcome the store refused (fencing token) on the cut hosts,
  and, for a cut leader, the cycles it found itself fenced out of.
"""

from __future__ import annotations

import json
import re
import signal
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rota import Rota
from rota.core.model import NodeState
from rota.core.periodic import tick_job_id
from rota.core.states import FINAL_STATES, JobState
from rota.store import SCHEDULER_LEASE
from tests.acceptance.apps.basic import read_lines
from tests.acceptance.conftest import FAILURE_TIMEOUT, LEADER_LEASE_TTL
from tests.faults.scenarios import Run, runs_by_key
from tests.hosts.apps import TICK
from tests.hosts.fleet import HostFleet

REFUSED = re.compile(r"job (\S+): outcome (\S+) refused")


@dataclass
class Result:
    scenario: str
    store: str
    cut: str
    jobs: int
    lost: int
    duplicates_accepted: int
    late_refused: int
    replace_s: list[float] = field(default_factory=list)
    resume_s: float | None = None
    extra: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0


def med_max(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} (max {max(values):.2f}, n={len(values)})"


# ---- set-up and accounting ---------------------------------------------------------------
def start_fleet(
    fleet: HostFleet, workers: Sequence[str], schedulers: Sequence[str], concurrency: int
) -> None:
    """Schedulers first (the first one leads), then workers; wait for all of them."""
    for i, host in enumerate(schedulers):
        fleet.scheduler_on(host, host)
        if i == 0:
            assert fleet.wait_leader()[0] == host
    for host in workers:
        fleet.worker_on(host, host, concurrency=concurrency)
    fleet.wait_nodes(len(workers), names=list(workers))


def submit(client: Rota, prefix: str, count: int, ms: int) -> dict[str, str]:
    """``count`` ``fault.record`` jobs; job id -> key."""
    record = client.tasks["fault.record"]
    keys = [f"{prefix}{i:06d}" for i in range(count)]
    key_of: dict[str, str] = {}
    for i in range(0, count, 1000):
        chunk = keys[i : i + 1000]
        handles = record.submit_many([(k, ms) for k in chunk])
        key_of.update({h.id: k for h, k in zip(handles, chunk, strict=True)})
    return key_of


def refused(fleet: HostFleet, names: Sequence[str]) -> list[tuple[str, str]]:
    """(job id, outcome kind) of every outcome the store refused, from workers' logs."""
    found = []
    for name in names:
        found += [(m.group(1), m.group(2)) for m in REFUSED.finditer(fleet.log(name))]
    return found


def result_of(raw: object) -> dict[str, Any]:
    """A job's stored result (the store hands back its JSON text)."""
    value = json.loads(raw) if isinstance(raw, str | bytes) else raw
    return value if isinstance(value, dict) else {}


@dataclass
class Ledger:
    lost: int
    duplicates_accepted: int
    refused_total: int
    runs: dict[str, list[Run]]


def account(
    fleet: HostFleet, key_of: dict[str, str], workers: Sequence[str], timeout: float
) -> Ledger:
    records = fleet.wait_final(list(key_of), timeout=timeout)
    lost = sum(1 for r in records.values() if r.state is not JobState.SUCCEEDED)
    time.sleep(1.0)  # outcomes of the last runs reach the store, and the logs
    runs = runs_by_key(fleet)
    refusals = refused(fleet, workers)
    refused_ok = Counter(job for job, kind in refusals if kind == "succeeded")
    duplicates = 0
    for job_id, key in key_of.items():
        ended = sum(1 for r in runs.get(key, []) if r.end is not None)
        duplicates += max(0, ended - refused_ok[job_id] - 1)
        result = result_of(records[job_id].result)
        if records[job_id].state is JobState.SUCCEEDED:
            assert isinstance(result, dict) and any(
                r.nonce == result["nonce"] and r.end is not None for r in runs[key]
            ), f"{job_id} ({key}): its result {result} is from no run that ended: {runs.get(key)}"
    return Ledger(lost, duplicates, len(refusals), runs)


def running_on(fleet: HostFleet, name: str) -> list[str]:
    node = fleet.live_nodes().get(name)
    if node is None:
        return []
    return [
        r.id for r in fleet.store.list_jobs(state=JobState.RUNNING, node_id=node.id, limit=5000)
    ]


def wait_running_on(fleet: HostFleet, names: Sequence[str], at_least: int) -> dict[str, list[str]]:
    def check() -> dict[str, list[str]] | None:
        found = {n: running_on(fleet, n) for n in names}
        return found if all(len(v) >= at_least for v in found.values()) else None

    return fleet.wait_for(f"{at_least} jobs running on {list(names)}", check, 60, interval=0.05)


def replace_times(
    runs: dict[str, list[Run]], key_of: dict[str, str], job_ids: Sequence[str], victim: str,
    since: float,
) -> list[float]:  # fmt: skip
    """For jobs that were running on ``victim``: from ``since`` to their first start on
    another node (jobs that finished without a re-run are left out)."""
    out = []
    for job_id in job_ids:
        later = [
            r.start for r in runs.get(key_of[job_id], []) if r.node != victim and r.start > since
        ]
        if later:
            out.append(min(later) - since)
    return out


def rejoin(
    fleet: HostFleet, client: Rota, victim: str, healed: float, ms: int, timeout: float = 60
) -> tuple[float, dict[str, str]]:
    """Wait until ``victim`` is live again and starts a job; submits small batches until it
    does. (seconds from ``healed`` to that start, the extra jobs)."""
    extra: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    batch = 0
    while True:
        starts = [
            float(at)
            for event, _k, _n, node, _p, at in read_lines(fleet.runs)
            if event == "start" and node == victim and float(at) > healed
        ]
        if starts:
            return min(starts) - healed, extra
        fleet.check_alive()
        assert time.monotonic() < deadline, f"{victim} took no new work {timeout} s after healing"
        if victim in fleet.live_nodes():
            extra.update(submit(client, f"rejoin-{victim}-{batch}-", 40, ms))
            batch += 1
        time.sleep(0.5)


def cut_with(fleet: HostFleet, host: str, how: str) -> None:
    h = fleet.host(host)
    {
        "drop": h.drop,
        "reject": h.reject,
        "link_down": h.link_down,
        "blackhole": h.blackhole,
        "mute": h.mute,
        "deafen": h.deafen,
    }[how]()


# ---- 1. a worker host partitioned ------------------------------------------------------------
def worker_partition(
    fleet: HostFleet, client: Rota, store: str, *, workers: Sequence[str], jobs: int, ms: int,
    concurrency: int, hold: float, how: str = "drop", schedulers: Sequence[str] = ("s1",),
) -> Result:  # fmt: skip
    began = time.monotonic()
    start_fleet(fleet, workers, schedulers, concurrency)
    key_of = submit(client, "p", jobs, ms)
    victim = workers[0]
    old_id = fleet.live_nodes()[victim].id
    held = wait_running_on(fleet, [victim], max(1, concurrency // 2))[victim]
    cut_at = time.time()
    cut_with(fleet, victim, how)
    fleet.wait_for(
        f"{victim} declared dead",
        lambda: any(n.id == old_id and n.state is NodeState.DEAD for n in fleet.nodes()),
        FAILURE_TIMEOUT + 30,
        interval=0.05,
    )
    left = max(0.0, cut_at + hold - time.time())
    time.sleep(left)
    fleet.host(victim).heal()
    healed = time.time()
    rejoined, extra = rejoin(fleet, client, victim, healed, ms)
    key_of.update(extra)
    ledger = account(fleet, key_of, workers, timeout=max(120.0, jobs / 20))
    replaced = replace_times(ledger.runs, key_of, held, victim, cut_at)
    for job_id in held:  # the victim's runs of its held jobs never won
        rec = fleet.store.get_job(job_id)
        assert rec is not None
        won = result_of(rec.result)
        assert rec.state is not JobState.SUCCEEDED or (
            won.get("node") != victim or won.get("nonce") not in _pre_cut_nonces(
                ledger.runs[key_of[job_id]], victim, cut_at)
        ), f"{job_id}: the partitioned node's late completion was accepted"  # fmt: skip
    victim_refused = len(refused(fleet, [victim]))
    return Result(
        "worker host partitioned", store, how, len(key_of), ledger.lost,
        ledger.duplicates_accepted, victim_refused, replaced, rejoined,
        {"held at the cut": len(held), "hold s": hold, "refused, all hosts": ledger.refused_total},
        time.monotonic() - began,
    )  # fmt: skip


def _pre_cut_nonces(runs: list[Run], victim: str, cut_at: float) -> set[str]:
    return {r.nonce for r in runs if r.node == victim and r.start <= cut_at}


# ---- 2. the leader's host partitioned --------------------------------------------------------
def tick_jobs(fleet: HostFleet, since: float, until: float) -> dict[float, JobState]:
    """Ticks of ``hosts.tick`` in [since, until] that have a job -> its state."""
    ids = {tick_job_id(TICK, float(t)): float(t) for t in range(int(since) - 2, int(until) + 3)}
    records = fleet.store.list_jobs(task=TICK, limit=100_000)
    return {ids[r.id]: r.state for r in records if r.id in ids}


def leader_partition(
    fleet: HostFleet, client: Rota, store: str, *, workers: Sequence[str], jobs: int, ms: int,
    concurrency: int, hold: float, how: str = "drop",
) -> Result:  # fmt: skip
    began = time.monotonic()
    start_fleet(fleet, workers, ("s1", "s2"), concurrency)
    first_tick = fleet.store.now()
    key_of = submit(client, "l", jobs, ms)
    wait_running_on(fleet, workers, 1)
    old = fleet.store.get_lease(SCHEDULER_LEASE)
    assert old is not None
    time.sleep(1.0)
    cut_at = time.time()
    cut_with(fleet, "s1", how)

    def new_lease() -> float | None:
        lease = fleet.store.get_lease(SCHEDULER_LEASE)
        return lease.acquired_at if lease is not None and lease.token != old.token else None

    took_over = fleet.wait_for("s2 to take the lease", new_lease, LEADER_LEASE_TTL + 30)
    assert fleet.leader() is not None and fleet.leader()[0] == "s2"  # type: ignore[index]
    time.sleep(max(0.0, cut_at + hold - time.time()))
    fleet.host("s1").heal()
    healed = time.time()
    fleet.wait_for(
        "the old leader to notice it lost the lease",
        lambda: fleet.log_lines_after("s1", healed - hold, "lost leadership"),
        60,
        interval=0.2,
    )
    key_of.update(submit(client, "after-", 200, ms))  # placed by s2 while s1 is back
    ledger = account(fleet, key_of, workers, timeout=max(120.0, jobs / 20))
    twice = sum(1 for k in key_of.values() if len(ledger.runs.get(k, [])) > 1)
    assert twice == 0, f"{twice} jobs ran more than once (no worker was cut)"
    # Ticks: stop the schedulers, let every tick job finish, then compare with the log.
    last_tick = fleet.store.now()
    for name in ("s1", "s2"):
        fleet.kill(name, signal.SIGTERM)
        fleet.wait_exit(name, 30)
    fleet.wait_for(
        "every tick job to finish",
        lambda: all(
            s in FINAL_STATES for s in tick_jobs(fleet, first_tick, last_tick + 5).values()
        ),
        60,
        interval=0.2,
    )
    ticks = tick_jobs(fleet, first_tick, last_tick + 5)
    tick_runs = len(read_lines(fleet.runs, "tick.log"))
    all_ticks = fleet.store.list_jobs(task=TICK, limit=100_000)
    assert tick_runs == len(all_ticks), f"{tick_runs} tick runs for {len(all_ticks)} tick jobs"
    led = [float(t) for t in range(int(first_tick) + 2, int(cut_at) - 1)]
    led += [float(t) for t in range(int(took_over) + 2, int(last_tick) - 1)]
    missed = sorted(set(led) - set(ticks))
    assert not missed, f"ticks missed while a leader was alive: {missed}"
    late_ticks = [
        line
        for line in fleet.log_lines_after("s1", healed - 1, r"periodic hosts\.tick: tick .* -> job")
        if (rec := fleet.store.get_job(line.rsplit("-> job ", 1)[1].split()[0])) is not None
        and rec.created_at >= took_over
    ]
    assert not late_ticks, f"the old leader fired ticks after the takeover: {late_ticks}"
    fenced = len(fleet.log_lines_after("s1", cut_at, "lost leadership"))
    return Result(
        "leader host partitioned", store, how, len(key_of), ledger.lost,
        ledger.duplicates_accepted, fenced, [took_over - cut_at], None,
        {"ticks": len(ticks), "tick runs": tick_runs, "ticks missed while led": len(missed),
         "old leader's ticks accepted after takeover": len(late_ticks), "jobs run twice": twice},
        time.monotonic() - began,
    )  # fmt: skip


# ---- 3. flapping links -----------------------------------------------------------------------
def starts_per_s(runs: dict[str, list[Run]], nodes: Sequence[str], a: float, b: float) -> float:
    n = sum(1 for lst in runs.values() for r in lst if r.node in nodes and a <= r.start < b)
    return n / max(b - a, 1e-9)


def flapping(
    fleet: HostFleet, client: Rota, store: str, *, workers: Sequence[str], ms: int,
    concurrency: int, loss: int, seconds: float, baseline: float, rate_jobs: int,
) -> Result:  # fmt: skip
    """``loss`` % packet loss for ``seconds`` on two worker hosts; the backlog
    (``rate_jobs``) keeps every worker busy throughout."""
    began = time.monotonic()
    start_fleet(fleet, workers, ("s1",), concurrency)
    key_of = submit(client, "f", rate_jobs, ms)
    wait_running_on(fleet, workers, 1)
    time.sleep(baseline)
    flaky, steady = list(workers[:2]), list(workers[2:])
    cut_at = time.time()
    for host in flaky:
        fleet.host(host).loss(loss)
    time.sleep(seconds)
    for host in flaky:
        fleet.host(host).heal()
    healed = time.time()
    ledger = account(fleet, key_of, workers, timeout=max(180.0, rate_jobs / 20))
    before = starts_per_s(ledger.runs, steady, cut_at - baseline, cut_at)
    during = starts_per_s(ledger.runs, steady, cut_at, healed)
    flaky_before = starts_per_s(ledger.runs, flaky, cut_at - baseline, cut_at)
    flaky_during = starts_per_s(ledger.runs, flaky, cut_at, healed)
    rerun = sum(1 for k in key_of.values() if len(ledger.runs.get(k, [])) > 1)
    return Result(
        f"flapping links ({loss} % loss, {seconds:.0f} s)", store, "nft numgen", len(key_of),
        ledger.lost, ledger.duplicates_accepted, len(refused(fleet, flaky)), [], None,
        {"steady hosts jobs/s before": round(before, 1), "steady hosts jobs/s during":
         round(during, 1), "flaky hosts jobs/s before": round(flaky_before, 1),
         "flaky hosts jobs/s during": round(flaky_during, 1), "jobs run more than once": rerun},
        time.monotonic() - began,
    )  # fmt: skip


# ---- 4. one-way partitions -------------------------------------------------------------------
def one_way(
    fleet: HostFleet, client: Rota, store: str, *, workers: Sequence[str], jobs: int, ms: int,
    concurrency: int, hold: float,
) -> Result:  # fmt: skip
    """``workers[0]`` hears but cannot speak, ``workers[1]`` speaks but cannot hear, at the
    same time, for ``hold`` seconds."""
    began = time.monotonic()
    start_fleet(fleet, workers, ("s1",), concurrency)
    key_of = submit(client, "o", jobs, ms)
    mute, deaf = workers[0], workers[1]
    ids = {n: fleet.live_nodes()[n].id for n in (mute, deaf)}
    held = wait_running_on(fleet, [mute, deaf], max(1, concurrency // 2))
    cut_at = time.time()
    fleet.host(mute).mute()
    fleet.host(deaf).deafen()

    def both_dead() -> bool:
        dead = {n.id for n in fleet.nodes() if n.state is NodeState.DEAD}
        return all(i in dead for i in ids.values())

    fleet.wait_for("both one-way hosts declared dead", both_dead, FAILURE_TIMEOUT + 30)
    time.sleep(max(0.0, cut_at + hold - time.time()))
    for host in (mute, deaf):
        fleet.host(host).heal()
    healed = time.time()
    back = {}
    for host in (mute, deaf):
        back[host], extra = rejoin(fleet, client, host, healed, ms)
        key_of.update(extra)
    ledger = account(fleet, key_of, workers, timeout=max(120.0, jobs / 20))
    rep_mute = replace_times(ledger.runs, key_of, held[mute], mute, cut_at)
    rep_deaf = replace_times(ledger.runs, key_of, held[deaf], deaf, cut_at)
    return Result(
        "one-way partitions", store, "nft output drop (mute) + input drop (deaf)", len(key_of),
        ledger.lost, ledger.duplicates_accepted, len(refused(fleet, [mute, deaf])),
        rep_mute + rep_deaf, max(back.values()),
        {"re-place, mute": med_max(rep_mute), "re-place, deaf": med_max(rep_deaf),
         "refused, mute": len(refused(fleet, [mute])), "refused, deaf": len(refused(fleet, [deaf]))},
        time.monotonic() - began,
    )  # fmt: skip


# ---- 5. the store unreachable from every host ------------------------------------------------
def store_outage(
    fleet: HostFleet, client: Rota, store: str, *, workers: Sequence[str], jobs: int, ms: int,
    concurrency: int, hold: float, how: str = "drop",
) -> Result:  # fmt: skip
    began = time.monotonic()
    hosts = [*workers, "s1", "s2"]
    start_fleet(fleet, workers, ("s1", "s2"), concurrency)
    key_of = submit(client, "s", jobs, ms)
    wait_running_on(fleet, workers, 1)
    cut_at = time.time()
    for host in hosts:
        cut_with(fleet, host, how)
    time.sleep(hold)
    for host in hosts:
        fleet.host(host).heal()
    healed = time.time()

    def first_start() -> float | None:
        starts = [
            float(r[5]) for r in read_lines(fleet.runs) if r[0] == "start" and float(r[5]) > healed
        ]
        return min(starts) if starts else None

    resumed = fleet.wait_for("a job to start after the outage", first_start, 120, interval=0.1)
    all_back: Callable[[], bool] = lambda: all(  # noqa: E731
        any(r[0] == "start" and r[3] == w and float(r[5]) > healed for r in read_lines(fleet.runs))
        for w in workers
    )
    fleet.wait_for("every worker to start a job after the outage", all_back, 120, interval=0.2)
    every_back = max(
        min(float(r[5]) for r in read_lines(fleet.runs) if r[0] == "start" and r[3] == w
            and float(r[5]) > healed)
        for w in workers
    ) - healed  # fmt: skip
    ledger = account(fleet, key_of, workers, timeout=max(180.0, jobs / 20))
    return Result(
        f"store unreachable from every host ({hold:.0f} s)", store, how, len(key_of),
        ledger.lost, ledger.duplicates_accepted, ledger.refused_total, [], resumed - healed,
        {"every worker working again, s": round(every_back, 2), "cut s": round(healed - cut_at, 1)},
        time.monotonic() - began,
    )  # fmt: skip
