"""Allocation simulator: ``python -m bench.sim [--workload NAME ...] [--policy NAME ...]``.

Runs the real placement and allocation code (``rota.scheduler.policy.allocate``, which is
``rota.scheduler.placement.place`` under the strict policy) on a virtual clock over a
workload trace (``bench/sim_workloads.py``), and reports per policy: utilisation against
the trace's upper bound, p50/p99 wait per priority class and per tenant, Jain's index on
weighted dominant shares over time, the largest job's wait, preemptions and the work they
lost; then checks the targets of issue 17.

Model: the leader decides once per ``--cycle`` (1 s) when something arrived or finished,
and at once when preempted jobs stop (the finish wakes it); a preempted job stops
``--stop`` (0.5 s) after the leader asks and goes back to pending, keeping its place
(first arrival) for aging. The store's view of pending work is a page per tenant (the
strict policy: one page in priority order, as today).
"""

from __future__ import annotations

import argparse
import heapq
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.sim_workloads import WORKLOADS, SimJob, Workload
from rota.core.model import AllocSpec, NodeRecord, NodeState, PendingJob, RunningJob
from rota.scheduler.backfill import Timeline
from rota.scheduler.fairshare import jain
from rota.scheduler.fit import SLOTS, Room
from rota.scheduler.placement import get_policy
from rota.scheduler.policy import AllocationConfig, AllocationState, allocate

PAGE = 128  # pending jobs per page (per tenant under the sharing policies)


@dataclass(frozen=True, slots=True)
class SimPolicy:
    name: str
    aging: bool = False
    drf: bool = False
    backfill: bool = False
    preemption: bool = False

    @property
    def gangs(self) -> bool:
        return self.name != "strict"  # today's rota has no gangs: members go one by one


POLICIES = [
    SimPolicy("strict"),
    SimPolicy("+aging", aging=True),
    SimPolicy("+drf", aging=True, drf=True),
    SimPolicy("+backfill", aging=True, drf=True, backfill=True),
    SimPolicy("+preemption", aging=True, drf=True, backfill=True, preemption=True),
]


@dataclass(slots=True)
class _Run:
    job: SimJob
    node: str
    start: float
    end: float
    token: int
    stopping: bool = False


@dataclass(slots=True)
class Result:
    workload: str
    policy: str
    makespan: float = 0.0
    util: float = 0.0  # bottleneck resource busy while jobs arrive / capacity
    bound: float = 0.0  # the most any scheduler could reach on this trace
    cpu_busy: float = 0.0  # mean share of CPUs busy while jobs were waiting
    waits: dict[str, float] = field(default_factory=dict)  # job id -> first-start wait
    jain: float = 1.0
    largest_wait: float = 0.0
    preemptions: int = 0
    lost: float = 0.0  # cpu-seconds (or slot-seconds) of work thrown away
    aging_violations: int = 0
    gang_ratio: float = 0.0  # worst gang wait / its wait on a reservation made at arrival
    seconds: float = 0.0  # wall time of the simulation


def simulate(w: Workload, pol: SimPolicy, cycle: float = 1.0, stop: float = 0.5) -> Result:
    started = time.perf_counter()
    out = Result(w.name, pol.name)
    config = AllocationConfig(
        shares=w.shares if pol.drf else {},
        fair_share=pol.drf,
        backfill=pol.backfill,
        preemption=pol.preemption,
    )
    state = AllocationState()
    placement = get_policy("least_loaded")
    specs = {n.id: n for n in w.nodes}
    jobs = {j.id: j for j in w.jobs}
    seq = {j.id: k for k, j in enumerate(w.jobs)}
    pending: dict[str, SimJob] = {}
    running: dict[str, _Run] = {}
    preempted_at: dict[str, float] = {}
    first_start: dict[str, float] = {}
    busy = Counter[str]()  # resource x seconds run
    arrivals = sorted(w.jobs, key=lambda j: (j.arrival, seq[j.id]))
    nxt = 0
    ends: list[tuple[float, int, str]] = []  # (time, token, job id)
    tokens = 0
    fair_area = fair_time = 0.0
    cpu_area = cpu_time = 0.0
    gang_ref: dict[str, float] = {}
    last = 0.0
    total_cpu = sum(s.resources.get("cpu", 0.0) for s in w.nodes)
    horizon = max(j.arrival for j in w.jobs)  # utilisation is measured while jobs arrive
    top = max(j.priority for j in w.jobs)

    def alloc_of(job: SimJob) -> AllocSpec:
        gang = pol.gangs and job.gang is not None
        return AllocSpec(
            tenant=job.tenant if pol.drf else None,
            preemptible=pol.preemption and job.priority < w.preemptible_below,
            aging=w.aging if pol.aging else None,
            gang=job.gang if gang else None,
            gang_size=job.gang_size if gang else 0,
            placement=job.placement,
        )

    def node_records() -> list[NodeRecord]:
        load: dict[str, tuple[int, Counter[str]]] = {n: (0, Counter()) for n in specs}
        for r in running.values():
            count, used = load[r.node]
            used.update(r.job.resources)
            load[r.node] = (count + 1, used)
        return [
            NodeRecord(specs[n], NodeState.LIVE, 0.0, 0.0, 0, c, dict(u))
            for n, (c, u) in load.items()
        ]

    def running_jobs() -> list[RunningJob]:
        return [
            RunningJob(
                r.job.id,
                r.node,
                r.job.priority,
                r.job.resources,
                r.start,
                r.job.timeout,
                allocs[r.job.id],
                preempted_at.get(r.job.id),
                r.stopping,
            )
            for r in running.values()
        ]

    as_pending = {
        j.id: PendingJob(
            j.id,
            "default",
            j.priority,
            seq[j.id],
            j.resources,
            {},
            {},
            alloc=alloc_of(j),
            timeout=j.timeout,
            enqueued_at=j.arrival,
        )
        for j in w.jobs
    }
    allocs = {j.id: as_pending[j.id].alloc for j in w.jobs}
    key = _store_key(pol, w)

    def page() -> list[PendingJob]:
        if pol.drf:  # the store hands a page per tenant (phase 2 of issue 17)
            by_tenant: dict[str, list[SimJob]] = {}
            for j in pending.values():
                by_tenant.setdefault(j.tenant, []).append(j)
            chosen = []
            for group in by_tenant.values():
                chosen += heapq.nsmallest(PAGE, group, key=key)
        else:
            chosen = heapq.nsmallest(PAGE * 4, pending.values(), key=key)
        chosen.sort(key=lambda j: (-j.priority, seq[j.id]))
        return [as_pending[j.id] for j in chosen]

    waiting: Counter[str] = Counter()  # pending jobs per tenant
    queued: dict[str, Counter[str]] = {}  # resources pending per tenant

    def enqueue(job: SimJob) -> None:
        pending[job.id] = job
        waiting[job.tenant] += 1
        queued.setdefault(job.tenant, Counter()).update(job.resources)
        queued[job.tenant][SLOTS] += 1

    def dequeue(job_id: str) -> SimJob:
        job = pending.pop(job_id)
        waiting[job.tenant] -= 1
        queued[job.tenant].subtract(job.resources)
        queued[job.tenant][SLOTS] -= 1
        return job

    def account(now: float) -> None:
        nonlocal fair_area, fair_time, cpu_area, cpu_time, last
        span = now - last
        if span > 0:
            if pending:
                used_cpu = sum(r.job.resources.get("cpu", 0.0) for r in running.values())
                cpu_area += span * used_cpu / total_cpu
                cpu_time += span
            wanting = {t for t, n in waiting.items() if n > 0}
            if len(wanting) >= 2:
                fair_area += span * _jain_now(w, running.values(), wanting, queued)
                fair_time += span
        last = now

    t = 0.0
    while nxt < len(arrivals) or pending or running:
        candidates = []
        if nxt < len(arrivals):
            candidates.append(arrivals[nxt].arrival)
        while ends and (ends[0][2] not in running or running[ends[0][2]].token != ends[0][1]):
            heapq.heappop(ends)  # a stale end (preempted job)
        if ends:
            candidates.append(ends[0][0])
        if not candidates:
            break  # pending work no node can ever run
        tick = max(t, math.ceil(min(candidates) / cycle - 1e-9) * cycle)
        # a preempted job stopping wakes the leader at once (its finish is an event)
        stops = [r.end for r in running.values() if r.stopping]
        t = min(tick, min(stops, default=math.inf))
        account(t)
        while nxt < len(arrivals) and arrivals[nxt].arrival <= t:
            job = arrivals[nxt]
            enqueue(job)
            nxt += 1
            if job.gang and job.gang not in gang_ref and pol.gangs:
                gang_ref[job.gang] = _idle_reservation_wait(w, job, jobs, running, specs, t)
        while ends and ends[0][0] <= t:
            _, token, job_id = heapq.heappop(ends)
            r = running.get(job_id)
            if r is None or r.token != token:
                continue
            del running[job_id]
            ran = r.end - r.start
            in_window = max(0.0, min(r.end, horizon) - r.start)
            for name, qty in r.job.resources.items():
                busy[name] += qty * in_window
            if r.stopping:  # preempted: back to pending, the work so far is lost
                out.lost += ran * r.job.resources.get("cpu", 1.0)
                enqueue(r.job)
        decision = allocate(
            page(),
            node_records(),
            placement,
            running=running_jobs(),
            now=t,
            config=config,
            state=state,
        )
        for a in decision.placement.assignments:
            job = dequeue(a.job_id)
            tokens += 1
            end = t + job.duration
            running[job.id] = _Run(job, a.node_id, t, end, tokens)
            heapq.heappush(ends, (end, tokens, job.id))
            first_start.setdefault(job.id, t)
        for p in decision.preemptions:
            for victim in p.victims:
                r = running[victim]
                r.stopping = True
                r.end = t + stop
                tokens += 1
                r.token = tokens
                heapq.heappush(ends, (r.end, tokens, victim))
                preempted_at[victim] = t
                out.preemptions += 1

    out.makespan = t
    out.seconds = time.perf_counter() - started
    out.waits = {j: first_start[j] - jobs[j].arrival for j in first_start}
    _summarise(
        out, w, busy, fair_area, fair_time, cpu_area, cpu_time, top, gang_ref, cycle, horizon
    )
    return out


def _store_key(pol: SimPolicy, w: Workload):  # type: ignore[no-untyped-def]
    if pol.aging:  # the store orders aging jobs by virtual deadline (rota.scheduler.aging)
        return lambda j: (j.arrival - j.priority * w.aging, j.arrival)
    return lambda j: (-j.priority, j.arrival)


def _dominant(w: Workload, held: Counter[str]) -> float:
    capacity: Counter[str] = Counter()
    for n in w.nodes:
        capacity.update(n.resources)
        capacity[SLOTS] += n.slots
    return max((held[r] / c for r, c in capacity.items() if c > 0), default=0.0)


def _jain_now(w: Workload, runs, wanting: set[str], queued) -> float:  # type: ignore[no-untyped-def]
    """Jain's index of each tenant's dominant share over its weighted max-min fair share
    given its demand (held + pending, at most the fleet): a tenant that asks for less
    than an even split and gets all it asks for is treated fairly."""
    held: dict[str, Counter[str]] = {t: Counter() for t in wanting}
    for r in runs:
        if r.job.tenant in held:
            held[r.job.tenant].update(r.job.resources)
            held[r.job.tenant][SLOTS] += 1
    weight = {t: (w.shares[t].weight if t in w.shares else 1.0) for t in wanting}
    share = {t: _dominant(w, h) for t, h in held.items()}
    want = {t: min(1.0, _dominant(w, held[t] + queued[t])) for t in wanting}
    total = sum(share.values())
    low, high = 0.0, max(want[t] / weight[t] for t in wanting)
    for _ in range(50):  # the water level L: sum of min(want, weight x L) = what is held
        level = (low + high) / 2
        if sum(min(want[t], weight[t] * level) for t in wanting) < total:
            low = level
        else:
            high = level
    fair = {t: min(want[t], weight[t] * high) for t in wanting}
    return jain(share[t] / fair[t] for t in wanting if fair[t] > 0)


def _idle_reservation_wait(w, job, jobs, running, specs, now):  # type: ignore[no-untyped-def]
    """The gang's wait if a reservation were made at its arrival and every running job
    ended at its real end (the reference of the gang target)."""
    members = [
        PendingJob(
            f"m{k}",
            "default",
            job.priority,
            k,
            job.resources,
            {},
            {},
            alloc=AllocSpec(gang=job.gang, gang_size=job.gang_size, placement=job.placement),
            timeout=job.timeout,
        )
        for k in range(job.gang_size)
    ]
    nodes = []
    for n, spec in specs.items():
        mine = [r for r in running.values() if r.node == n]
        used: Counter[str] = Counter()
        for r in mine:
            used.update(r.job.resources)
        nodes.append(NodeRecord(spec, NodeState.LIVE, 0.0, 0.0, 0, len(mine), dict(used)))
    room = Room(nodes, get_policy("least_loaded"))
    actual = [
        RunningJob(r.job.id, r.node, 0, r.job.resources, r.start, r.end - r.start)
        for r in running.values()
    ]
    found = Timeline(room, actual, now).reserve(members, job.placement, now)
    return math.inf if found is None else found.start - now


def _summarise(
    out,
    w,
    busy,
    fair_area,
    fair_time,
    cpu_area,
    cpu_time,
    top,
    gang_ref,
    cycle,  # type: ignore[no-untyped-def]
    horizon,
):
    capacity: Counter[str] = Counter()
    for n in w.nodes:
        capacity.update(n.resources)
    # Upper bound: no job runs before it arrives, so within [0, horizon] a job is busy
    # at most min(duration, horizon - arrival); and the fleet is busy at most 100 %.
    work: Counter[str] = Counter()
    for j in w.jobs:
        for name, qty in j.resources.items():
            work[name] += qty * min(j.duration, horizon - j.arrival)
    bottleneck = max(capacity, key=lambda r: work[r] / capacity[r])
    out.util = busy[bottleneck] / (capacity[bottleneck] * horizon)
    out.bound = min(1.0, work[bottleneck] / (capacity[bottleneck] * horizon))
    out.cpu_busy = cpu_area / cpu_time if cpu_time else 1.0
    out.jain = fair_area / fair_time if fair_time else 1.0
    size = {j.id: _dominant(w, Counter(j.resources)) * max(1, j.gang_size) for j in w.jobs}
    largest = max(size.values())
    out.largest_wait = max(
        (out.waits.get(j, math.inf) for j, s in size.items() if s >= largest - 1e-9), default=0.0
    )
    if out.policy != "strict":  # every other policy ages
        out.aging_violations = _overtaken(w, out.waits)
    gangs: dict[str, float] = {}
    for j in w.jobs:
        if j.gang:
            gangs[j.gang] = max(gangs.get(j.gang, 0.0), out.waits.get(j.id, math.inf))
    if gang_ref:  # wait over the reference wait plus one cycle (deciding takes one)
        out.gang_ratio = max(gangs[g] / (ref + cycle) for g, ref in gang_ref.items())


def _overtaken(w: Workload, waits: dict[str, float]) -> int:
    """Jobs started after a job of their tenant and shape (resources) with a later virtual
    deadline (``arrival - priority x aging``) that started while they waited: what the
    aging bound rules out (rota.scheduler.aging: the bound follows from it)."""
    groups: dict[tuple[object, ...], list[tuple[float, float, float]]] = {}
    for j in w.jobs:
        if j.id in waits:
            key = (j.tenant, tuple(sorted(j.resources.items())))
            start = j.arrival + waits[j.id]
            groups.setdefault(key, []).append((start, j.arrival, j.arrival - j.priority * w.aging))
    bad = 0
    for jobs in groups.values():
        jobs.sort()
        for k, (start, arrival, deadline) in enumerate(jobs):
            if any(
                s < start - 1e-9 and a_ok and d > deadline + 1e-9
                for s, d, a_ok in ((o[0], o[2], arrival <= o[0]) for o in jobs[:k])
            ):
                bad += 1
    return bad


def trace_shape(w: Workload) -> str:
    """Duration p50/p99 and the share of all work (cpu x seconds) in the top 1 % of jobs
    (a job: the tasks that arrived together with one tenant)."""
    work: Counter[tuple[str, float]] = Counter()
    for j in w.jobs:
        work[(j.tenant, j.arrival)] += j.resources.get("cpu", 1.0) * j.duration
    sizes = sorted(work.values(), reverse=True)
    top = sum(sizes[: max(1, len(sizes) // 100)]) / sum(sizes)
    durations = [j.duration for j in w.jobs]
    return (
        f"{len(sizes)} jobs, task duration p50 {_s(percentile(durations, 0.5))}, "
        f"p99 {_s(percentile(durations, 0.99))}; the top 1 % of jobs carry {top:.0%} of the work"
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(w: Workload, results: list[Result], cycle: float, stop: float) -> list[str]:
    lines = [f"### {w.name}: {w.title}", ""]
    n_jobs = len(w.jobs)
    tenants = sorted({j.tenant for j in w.jobs})
    classes = sorted({j.priority for j in w.jobs}, reverse=True)
    lines.append(
        f"{n_jobs} jobs, {len(w.nodes)} nodes, tenants {', '.join(tenants)}, "
        f"priorities {', '.join(map(str, classes))}, aging {w.aging:g} s/level"
    )
    lines.append("")
    lines.append(f"Trace shape: {trace_shape(w)}.")
    lines.append("")
    head = [
        "policy",
        "util",
        "bound",
        "util/strict",
        "Jain",
        "largest wait",
        "preempt",
        "lost cpu-s",
    ]
    head += [f"p50/p99 wait prio {c}" for c in classes]
    head += [f"p50/p99 {t}" for t in tenants]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    strict = results[0].util
    by_id = {j.id: j for j in w.jobs}
    for r in results:
        row = [
            r.policy,
            f"{r.util:.1%}",
            f"{r.bound:.1%}",
            f"{r.util / strict:.1%}",
            f"{r.jain:.3f}",
            _s(r.largest_wait),
            str(r.preemptions),
            f"{r.lost:,.0f}",
        ]
        for c in classes:
            ws = [v for j, v in r.waits.items() if by_id[j].priority == c]
            ws += [math.inf] * sum(1 for j in w.jobs if j.priority == c and j.id not in r.waits)
            row.append(f"{_s(percentile(ws, 0.5))} / {_s(percentile(ws, 0.99))}")
        for t in tenants:
            ws = [v for j, v in r.waits.items() if by_id[j].tenant == t]
            ws += [math.inf] * sum(1 for j in w.jobs if j.tenant == t and j.id not in r.waits)
            row.append(f"{_s(percentile(ws, 0.5))} / {_s(percentile(ws, 0.99))}")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines += targets(w, results, cycle, stop)
    lines.append("")
    return lines


def targets(w: Workload, results: list[Result], cycle: float, stop: float) -> list[str]:
    by = {r.policy: r for r in results}
    strict = by["strict"]
    out = []

    def check(ok: bool, text: str) -> None:
        out.append(f"- {'PASS' if ok else 'FAIL'}: {text}")

    for name in ("+drf", "+backfill", "+preemption"):
        r = by.get(name)
        if r is not None and len({j.tenant for j in w.jobs}) > 1:
            ok = r.jain >= 0.95 and r.util >= 0.95 * strict.util
            check(
                ok,
                f"{name}: Jain {r.jain:.3f} >= 0.95 with utilisation "
                f"{r.util / strict.util:.1%} of strict's (>= 95 %)",
            )
    top = max(j.priority for j in w.jobs)
    r = by.get("+preemption")
    if r is not None and top - min(j.priority for j in w.jobs) >= 10:  # preempt_gap
        prio = {j.id: j.priority for j in w.jobs}
        ws = [v for j, v in r.waits.items() if prio[j] == top]
        p99 = percentile(ws, 0.99)
        check(
            p99 <= cycle + stop + 1e-9,
            f"+preemption: p99 wait of priority {top} = {_s(p99)} <= 1 cycle + stop "
            f"({cycle:g} + {stop:g} s)",
        )
    for name in ("+aging", "+drf", "+backfill", "+preemption"):
        r = by.get(name)
        if r is not None:
            check(
                r.aging_violations == 0,
                f"{name}: {r.aging_violations} job(s) overtaken by a job of their tenant and "
                "shape with a later virtual deadline (what the aging bound rules out)",
            )
    r = by.get("+backfill")
    if r is not None and any(j.gang for j in w.jobs):
        check(
            r.gang_ratio <= 2.0 and r.cpu_busy >= 0.90,
            f"+backfill: worst 8-GPU gang wait {r.gang_ratio:.2f}x its wait on a "
            f"reservation made at arrival (+1 cycle; <= 2x), CPUs busy "
            f"{r.cpu_busy:.1%} while jobs waited (>= 90 %)",
        )
    return out


def _s(seconds: float) -> str:
    if math.isinf(seconds):
        return "never"
    if math.isnan(seconds):
        return "-"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sim", description=__doc__)
    parser.add_argument("--workload", action="append", choices=sorted(WORKLOADS))
    parser.add_argument("--policy", action="append", choices=[p.name for p in POLICIES])
    parser.add_argument("--cycle", type=float, default=1.0, help="scheduler cycle, s")
    parser.add_argument("--stop", type=float, default=0.5, help="time a victim takes to stop")
    parser.add_argument("--plot", type=Path, help="write a PNG of the results (matplotlib)")
    args = parser.parse_args(argv)
    chosen = [p for p in POLICIES if not args.policy or p.name in args.policy or p.name == "strict"]
    lines: list[str] = []
    all_results: dict[str, list[Result]] = {}
    for name in args.workload or list(WORKLOADS):
        w = WORKLOADS[name]()
        results = []
        for pol in chosen:
            results.append(simulate(w, pol, args.cycle, args.stop))
            print(f"  {name} {pol.name}: {results[-1].seconds:.1f} s", file=sys.stderr)
        all_results[name] = results
        block = report(w, results, args.cycle, args.stop)
        print("\n".join(block), flush=True)
        lines += block
    if args.plot:
        from bench.sim_plot import plot

        plot(all_results, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
