"""Workload traces for ``python -m bench.sim``: arrivals, durations, resources, tenants,
priorities (seeded, so every run of a workload is the same trace)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from rota.core.model import NodeSpec
from rota.scheduler.fairshare import Share


@dataclass(slots=True)
class SimJob:
    id: str
    arrival: float
    duration: float  # actual run time
    timeout: float | None  # worst case the user declared (>= duration)
    resources: dict[str, float]
    priority: int
    tenant: str
    gang: str | None = None
    gang_size: int = 0
    placement: str = "pack"


@dataclass(slots=True)
class Workload:
    name: str
    title: str
    nodes: list[NodeSpec]
    jobs: list[SimJob]
    shares: dict[str, Share] = field(default_factory=dict)
    aging: float = 30.0  # seconds per priority level under the aging policies
    preemptible_below: int = 10  # jobs with a lower priority are preemptible (+preemption)
    notes: str = ""


def _nodes(count: int, prefix: str, resources: dict[str, float], slots: int) -> list[NodeSpec]:
    return [
        NodeSpec(
            id=f"{prefix}{k:02d}",
            name=f"{prefix}{k}",
            slots=slots,
            prefetch=0,
            resources=dict(resources),
        )
        for k in range(count)
    ]


def _poisson(rng: random.Random, rate: float, start: float, end: float) -> list[float]:
    out, t = [], start
    while True:
        t += rng.expovariate(rate)
        if t >= end:
            return out
        out.append(t)


def _timeout(rng: random.Random, duration: float) -> float:
    """Users declare a worst case 1x to 3x the real run time."""
    return round(duration * rng.uniform(1.0, 3.0), 1)


def skewed(seed: int = 1) -> Workload:
    """4 tenants; "flood" submits 10x the jobs of each other tenant. Together they ask
    ~1.3x what the fleet can run, for 20 minutes."""
    rng = random.Random(seed)
    nodes = _nodes(16, "c", {"cpu": 16.0, "mem": 64.0}, 16)
    jobs: list[SimJob] = []
    capacity = 16 * 16.0
    mean_work = 2.0 * 60.0  # cpu x seconds per job on average
    total_rate = 1.3 * capacity / mean_work
    rates = {"flood": 10.0, "alpha": 1.0, "beta": 1.0, "gamma": 1.0}
    scale = total_rate / sum(rates.values())
    for tenant, weight in rates.items():
        for t in _poisson(rng, weight * scale, 0.0, 1200.0):
            cpu = rng.choice((1.0, 1.0, 2.0, 4.0))
            duration = min(600.0, rng.lognormvariate(math.log(60.0 * 2 / cpu), 0.6))
            jobs.append(
                SimJob(
                    "",
                    t,
                    round(duration, 1),
                    _timeout(rng, duration),
                    {"cpu": cpu, "mem": cpu * 2},
                    rng.choice((0, 0, 5)),
                    tenant,
                )
            )
    return Workload(
        "skewed",
        "Skewed multi-tenant (one tenant 10x demand)",
        nodes,
        _ids(jobs),
        shares={t: Share() for t in rates},
    )


def mixed(seed: int = 2) -> Workload:
    """1-CPU jobs keep the fleet full; 1-GPU jobs fragment the GPU nodes; every 4 minutes
    an 8-GPU gang (8 members x 1 GPU, strict_pack) arrives."""
    rng = random.Random(seed)
    nodes = _nodes(8, "g", {"cpu": 16.0, "gpu": 8.0}, 16) + _nodes(8, "c", {"cpu": 16.0}, 16)
    jobs: list[SimJob] = []
    for t in _poisson(rng, 2.6, 0.0, 1800.0):  # ~ 1.2 x the 256 CPUs at ~120 s each
        duration = rng.uniform(30.0, 210.0)
        jobs.append(
            SimJob("", t, round(duration, 1), _timeout(rng, duration), {"cpu": 1.0}, 0, "cpu-team")
        )
    for t in _poisson(rng, 0.3, 0.0, 1800.0):
        duration = rng.uniform(60.0, 300.0)
        jobs.append(
            SimJob(
                "",
                t,
                round(duration, 1),
                _timeout(rng, duration),
                {"cpu": 1.0, "gpu": 1.0},
                0,
                "gpu-small",
            )
        )
    for k, t in enumerate(range(60, 1800, 240)):
        duration = rng.uniform(200.0, 400.0)
        for _m in range(8):
            jobs.append(
                SimJob(
                    "",
                    float(t),
                    round(duration, 1),
                    round(duration * 1.5, 1),
                    {"cpu": 1.0, "gpu": 1.0},
                    0,
                    "train",
                    gang=f"gang{k}",
                    gang_size=8,
                    placement="strict_pack",
                )
            )
    return Workload(
        "mixed",
        "Mixed: 1-CPU jobs + 8-GPU gangs",
        nodes,
        _ids(jobs),
        shares={"cpu-team": Share(), "gpu-small": Share(), "train": Share()},
    )


def bursty(seed: int = 3) -> Workload:
    """Long low-priority batch work keeps the fleet full; bursts of urgent priority-100
    jobs arrive every ~3 minutes."""
    rng = random.Random(seed)
    nodes = _nodes(16, "c", {"cpu": 8.0}, 8)
    jobs: list[SimJob] = []
    for t in _poisson(rng, 0.24, 0.0, 1800.0):  # ~ 1.0 x the 128 CPUs
        duration = rng.uniform(120.0, 600.0)
        jobs.append(
            SimJob(
                "",
                t,
                round(duration, 1),
                _timeout(rng, duration),
                {"cpu": rng.choice((1.0, 2.0))},
                0,
                "batch",
            )
        )
    for t in _poisson(rng, 0.05, 20.0, 1800.0):
        duration = rng.uniform(60.0, 240.0)
        jobs.append(
            SimJob("", t, round(duration, 1), _timeout(rng, duration), {"cpu": 1.0}, 5, "batch")
        )
    burst = 0.0
    while True:
        burst += rng.uniform(120.0, 240.0)
        if burst >= 1800.0:
            break
        for _ in range(rng.randrange(4, 12)):
            duration = rng.uniform(5.0, 30.0)
            jobs.append(
                SimJob(
                    "",
                    burst + rng.uniform(0, 5.0),
                    round(duration, 1),
                    _timeout(rng, duration),
                    {"cpu": rng.choice((1.0, 2.0))},
                    100,
                    "urgent",
                )
            )
    return Workload(
        "bursty",
        "Bursty with urgent high-priority arrivals",
        nodes,
        _ids(jobs),
        shares={"batch": Share(), "urgent": Share()},
    )


def traces(seed: int = 4) -> Workload:
    """Shaped like the published Google 2019 and Alibaba 2018 distributions (see
    bench/README.md): Pareto job sizes (tasks per job, Zipf-like as in Alibaba 2018),
    lognormal durations with a p99 near 1,000 s (Alibaba 2018 batch), so that a small
    share of jobs carries most of the work (Google 2019: top 1 % > 99 %)."""
    rng = random.Random(seed)
    nodes = _nodes(32, "c", {"cpu": 16.0, "mem": 64.0}, 16)
    jobs: list[SimJob] = []
    tenants = ("prod", "batch", "dev")
    for t in _poisson(rng, 1.2, 0.0, 1800.0):
        tasks = min(64, int(rng.paretovariate(1.1)))  # Zipf-like tasks per job
        cpu = min(16.0, round(rng.paretovariate(1.5) * 0.5 * 2) / 2) or 0.5
        duration = min(7200.0, rng.lognormvariate(math.log(30.0), 1.5))  # p99 ~ 1000 s
        tenant = rng.choices(tenants, (1, 3, 1))[0]
        priority = {"prod": 20, "batch": 0, "dev": 5}[tenant]
        for _ in range(tasks):
            jobs.append(
                SimJob(
                    "",
                    t,
                    round(duration, 1),
                    _timeout(rng, duration),
                    {"cpu": cpu, "mem": cpu * 4},
                    priority,
                    tenant,
                )
            )
    return Workload(
        "traces",
        "Google 2019 / Alibaba 2018 shaped (heavy-tailed)",
        nodes,
        _ids(jobs),
        shares={t: Share() for t in tenants},
    )


def _ids(jobs: list[SimJob]) -> list[SimJob]:
    jobs.sort(key=lambda j: j.arrival)
    for k, job in enumerate(jobs):
        job.id = f"{job.tenant}-{k:05d}"
    return jobs


WORKLOADS: dict[str, Callable[[], Workload]] = {
    "skewed": skewed,
    "mixed": mixed,
    "bursty": bursty,
    "traces": traces,
}
