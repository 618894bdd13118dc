"""Partition scenarios on hosts (network namespaces), full form: ``python -m bench.partitions``.

Each scenario of ``tests/hosts/scenarios.py`` runs on a fresh network of six hosts (workers
``w1..w4``, schedulers ``s1``/``s2``), a fresh store reached over the bridge (a private
Redis bound to the bridge address; the machine's PostgreSQL through socat) and real
``rota`` processes started with ``ip netns exec``. The tables replace the section between
the markers in docs/reliability.md (``--no-write`` to only print them). Needs root.

    python -m bench.partitions [--profile full|quick] [--stores redis,postgres]
        [--scenarios 1,2,3,4,5] [--no-write]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.acceptance.conftest import FAILURE_TIMEOUT, HEARTBEAT, LEADER_LEASE_TTL
from tests.hosts import apps, scenarios
from tests.hosts.fleet import HostFleet
from tests.hosts.netns import Network
from tests.hosts.services import postgres_via_socat, private_redis

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
BEGIN = "<!-- bench.partitions: begin -->"
END = "<!-- bench.partitions: end -->"
HOSTS = ["w1", "w2", "w3", "w4", "s1", "s2"]
WORKERS = ["w1", "w2", "w3", "w4"]

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        "1": {"jobs": 6000, "ms": 300, "concurrency": 25, "hold": 8.0},
        "2": {"jobs": 6000, "ms": 300, "concurrency": 25, "hold": 8.0},
        "3": {"rate_jobs": 20000, "ms": 300, "concurrency": 25, "loss": 40, "seconds": 60.0,
              "baseline": 10.0},
        "4": {"jobs": 6000, "ms": 300, "concurrency": 25, "hold": 8.0},
        "5": {"jobs": 6000, "ms": 300, "concurrency": 25, "hold": 20.0},
    },
    "quick": {
        "1": {"jobs": 600, "ms": 300, "concurrency": 10, "hold": 5.0},
        "2": {"jobs": 600, "ms": 300, "concurrency": 10, "hold": 5.0},
        "3": {"rate_jobs": 3000, "ms": 300, "concurrency": 10, "loss": 40, "seconds": 15.0,
              "baseline": 5.0},
        "4": {"jobs": 600, "ms": 300, "concurrency": 10, "hold": 5.0},
        "5": {"jobs": 600, "ms": 300, "concurrency": 10, "hold": 10.0},
    },
}  # fmt: skip

SCENARIOS: dict[str, Callable[..., scenarios.Result]] = {
    "1": scenarios.worker_partition,
    "2": scenarios.leader_partition,
    "3": scenarios.flapping,
    "4": scenarios.one_way,
    "5": scenarios.store_outage,
}


@contextlib.contextmanager
def environment(kind: str, root: Path) -> Iterator[tuple[HostFleet, Any]]:
    net = Network.create(HOSTS)
    try:
        if kind == "redis":
            ctx: contextlib.AbstractContextManager[str] = private_redis(net, root)
        else:
            ctx = postgres_via_socat(net, root)
        with ctx as base:
            url = f"{base}?prefix=rota-bench-{uuid.uuid4().hex[:8]}" if kind == "redis" else base
            fleet = HostFleet(url, root, net=net)
            client = apps.build(url)
            try:
                yield fleet, client
            finally:
                client.close()
                fleet.close()
    finally:
        net.destroy()


def run_one(kind: str, number: str, params: dict[str, Any]) -> scenarios.Result | str:
    with tempfile.TemporaryDirectory(prefix=f"rota-partitions-{kind}-{number}-") as tmp:
        try:
            with environment(kind, Path(tmp)) as (fleet, client):
                return SCENARIOS[number](fleet, client, kind, workers=WORKERS, **params)
        except Exception as exc:  # a failed invariant is a result too
            traceback.print_exc()
            return f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render(results: dict[str, list[tuple[str, scenarios.Result | str]]], head: str) -> str:
    titles = {
        "1": "1. A worker host partitioned silently while running jobs (nft drop)",
        "2": "2. The scheduler leader's host partitioned (nft drop)",
        "3": "3. Flapping links on two worker hosts",
        "4": "4. One-way partitions: w1 hears but cannot speak, w2 speaks but cannot hear",
        "5": "5. The store unreachable from every host",
    }
    time_col = {
        "1": "cut -> re-placed elsewhere, s: median (max, n)",
        "2": "cut -> standby holds the lease, s (store clock)",
        "3": "-",
        "4": "cut -> re-placed elsewhere, s: median (max, n)",
        "5": "-",
    }
    resume_col = {
        "1": "heal -> the node runs new work, s",
        "2": "-",
        "3": "-",
        "4": "heal -> both nodes run new work, s",
        "5": "heal -> first job started, s",
    }
    out = [head]
    for number, rows in results.items():
        out += ["", f"### {titles[number]}", ""]
        cols = ["store", "jobs", "jobs lost", "duplicate completions accepted",
                "late writes refused", time_col[number], resume_col[number], "details", "run, s"]  # fmt: skip
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "---|" * len(cols))
        for kind, res in rows:
            if isinstance(res, str):
                out.append(f"| {kind} | {res} |" + " |" * (len(cols) - 2))
                continue
            details = "; ".join(f"{k}: {v}" for k, v in res.extra.items())
            out.append(
                f"| {kind} | {res.jobs:,} | **{res.lost}** | **{res.duplicates_accepted}** | "
                f"{res.late_refused} | {scenarios.med_max(res.replace_s)} | "
                f"{fmt_s(res.resume_s)} | {details} | {res.seconds:.0f} |"
            )
    return "\n".join(out)


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc:
        start, end = doc.index(BEGIN), doc.index(END) + len(END)
        doc = doc[:start] + block + doc[end:]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--stores", default="redis,postgres")
    parser.add_argument("--scenarios", default="1,2,3,4,5")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    began = time.monotonic()
    results: dict[str, list[tuple[str, scenarios.Result | str]]] = {}
    for number in args.scenarios.split(","):
        for kind in args.stores.split(","):
            print(f"--- scenario {number} on {kind}", flush=True)
            res = run_one(kind, number, PROFILES[args.profile][number])
            print(res, flush=True)
            results.setdefault(number, []).append((kind, res))
    head = (
        f"## Partitions between hosts (network namespaces)\n\n"
        f"Generated by `python -m bench.partitions --profile {args.profile}` on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC: Python {platform.python_version()}, "
        f"{len(HOSTS)} hosts (workers {', '.join(WORKERS)}; schedulers s1, s2), "
        f"{time.monotonic() - began:.0f} s in all. Do not edit by hand; run it again.\n\n"
        f"Each host is a network namespace with its own address on a private /24, joined to "
        f"the others by a bridge; the store is reached over each host's own cable (a private "
        f"`redis-server` bound to the bridge address; PostgreSQL through `socat` on it). Every "
        f"rota process is a real `python -m rota worker|scheduler` started with "
        f"`ip netns exec` (code: `tests/hosts/`). Timings: worker heartbeat {HEARTBEAT} s, job "
        f"lease 2 s, failure timeout {FAILURE_TIMEOUT} s, leader lease {LEADER_LEASE_TTL} s; "
        f"targets: re-placed within failure timeout + 1 s = {FAILURE_TIMEOUT + 1:.0f} s, "
        f"takeover within lease TTL + 1 s = {LEADER_LEASE_TTL + 1:.0f} s. *Late writes refused*: "
        f"outcomes the store refused by fencing token on the cut hosts (for the leader: the "
        f"times the old leader found itself fenced out). Jobs are `fault.record` (async, "
        f"logs each run's start and end), all submitted at the start, so all are in flight."
    )
    text = render(results, head)
    print(text)
    if not args.no_write:
        write_doc(text)


if __name__ == "__main__":
    main()
