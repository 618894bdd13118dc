"""Placement throughput: ``python -m bench.placement [--nodes N] [--jobs M] [--repeat K]``.

Builds a cluster of a few node classes (different capacities, labels and queues, some
already partly busy) and a backlog of pending jobs of mixed shapes, then times
``rota.scheduler.placement.place`` for every policy (best of ``--repeat``) and prints the decisions
per second (a decision is one job placed, left waiting, or found unplaceable).
"""

from __future__ import annotations

import argparse
import random
import time

from rota.core.model import NodeRecord, NodeSpec, NodeState, PendingJob
from rota.scheduler.placement import POLICIES, Placement, place

GB = 1e9
ZONES = ("eu-1", "eu-2", "us-1")

# (share, slots, prefetch, resources, extra labels, queues)
NODE_CLASSES: list[tuple[float, int, int, dict[str, float], dict[str, str], tuple[str, ...]]] = [
    (0.60, 8, 2, {"cpu": 16, "mem": 64 * GB}, {}, ("default", "batch")),
    (0.20, 8, 2, {"cpu": 32, "mem": 256 * GB}, {"disk": "ssd"}, ("default", "batch", "analytics")),
    (0.10, 4, 1, {"cpu": 16, "mem": 128 * GB, "gpu": 2}, {"accel": "a100"}, ("gpu", "default")),
    (0.10, 4, 0, {"cpu": 4, "mem": 8 * GB}, {"tier": "edge"}, ("edge",)),
]

# (weight, queue, resources, required labels, affinity)
JOB_SHAPES: list[tuple[int, str, dict[str, float], dict[str, str], dict[str, str]]] = [
    (30, "default", {"cpu": 1, "mem": 1 * GB}, {}, {}),
    (10, "default", {"cpu": 2, "mem": 4 * GB}, {}, {"zone": "eu-1"}),
    (5, "default", {}, {}, {}),
    (5, "default", {"cpu": 0.5, "mem": 0.5 * GB}, {}, {"disk": "ssd"}),
    (15, "batch", {"cpu": 4, "mem": 16 * GB}, {}, {}),
    (5, "batch", {"cpu": 8, "mem": 32 * GB}, {"zone": "us-1"}, {}),
    (8, "analytics", {"cpu": 8, "mem": 64 * GB}, {"disk": "ssd"}, {"zone": "eu-2"}),
    (8, "gpu", {"cpu": 4, "mem": 32 * GB, "gpu": 1}, {}, {}),
    (2, "gpu", {"cpu": 8, "mem": 64 * GB, "gpu": 2}, {"accel": "a100"}, {"zone": "eu-1"}),
    (5, "edge", {"cpu": 1, "mem": 0.5 * GB}, {"tier": "edge"}, {"zone": "us-1"}),
    (1, "default", {"gpu": 8}, {}, {}),  # never: no node has 8 GPUs
    (1, "nightly", {"cpu": 1}, {}, {}),  # never: no node serves the queue
]


def make_nodes(count: int, rng: random.Random) -> list[NodeRecord]:
    nodes: list[NodeRecord] = []
    weights = [c[0] for c in NODE_CLASSES]
    for n in range(count):
        _, slots, prefetch, resources, labels, queues = rng.choices(NODE_CLASSES, weights)[0]
        spec = NodeSpec(
            id=f"node-{n:05d}",
            name=f"worker-{n}",
            slots=slots,
            prefetch=prefetch,
            resources=dict(resources),
            labels={"zone": ZONES[n % len(ZONES)], **labels},
            queues=queues,
        )
        busy = rng.randrange(0, slots // 2 + 1)  # some nodes already have work
        used = {name: qty * busy / (slots * 2) for name, qty in resources.items()}
        nodes.append(NodeRecord(spec, NodeState.LIVE, 0.0, 0.0, 0, busy, used))
    return nodes


def make_jobs(count: int, rng: random.Random) -> list[PendingJob]:
    weights = [s[0] for s in JOB_SHAPES]
    jobs: list[PendingJob] = []
    for seq in range(count):
        _, queue, resources, labels, affinity = rng.choices(JOB_SHAPES, weights)[0]
        jobs.append(
            PendingJob(
                id=f"job-{seq:07d}",
                queue=queue,
                priority=rng.choice((0, 0, 0, 5, 10)),
                seq=seq,
                resources=dict(resources),
                labels=dict(labels),
                affinity=dict(affinity),
            )
        )
    jobs.sort(key=lambda j: (-j.priority, j.seq))  # as the store hands them out
    return jobs


def best_of(
    repeat: int, jobs: list[PendingJob], nodes: list[NodeRecord], policy: str
) -> tuple[float, Placement]:
    best = float("inf")
    result = Placement()
    for _ in range(repeat):
        start = time.perf_counter()
        result = place(jobs, nodes, policy)
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.placement", description=__doc__)
    parser.add_argument("--nodes", type=int, default=1_000, help="live nodes (default 1000)")
    parser.add_argument("--jobs", type=int, default=10_000, help="pending jobs (default 10000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per policy; best counts")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the workload")
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    nodes = make_nodes(args.nodes, rng)
    jobs = make_jobs(args.jobs, rng)
    print(f"{len(nodes)} nodes, {len(jobs)} pending jobs, best of {args.repeat}")
    print(
        f"{'policy':<14}{'time ms':>10}{'decisions/s':>14}{'placed':>9}{'waiting':>9}{'never':>7}"
    )
    for name in POLICIES:
        seconds, result = best_of(args.repeat, jobs, nodes, name)
        rate = len(jobs) / seconds if seconds > 0 else float("inf")
        print(
            f"{name:<14}{seconds * 1e3:>10.1f}{rate:>14,.0f}"
            f"{len(result.assignments):>9}{result.waiting:>9}{len(result.never):>7}"
        )


if __name__ == "__main__":
    main()
