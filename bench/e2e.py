"""End-to-end throughput and latency on one store:
``python -m bench.e2e --store sqlite|postgres|redis [--jobs N] [--quick]``
(``python -m bench.sqlite`` is the SQLite run).

Starts a real ``rota scheduler`` and one real ``rota worker`` process on a fresh store (a
temporary SQLite file; a new schema in the machine's PostgreSQL database ``test``; a new key
prefix in the machine's Redis; removed afterwards) for every run, and measures:

* **submit**: jobs/s stored by one ``Task.submit_many`` call of N no-op jobs (argument
  validation, encoding, the one insert transaction), from this process;
* **drain**: N no-op jobs submitted first, then the worker started; jobs/s from the first
  ``started_at`` to the last ``finished_at`` (the store's clock), once for an ``async def``
  no-op (run on the worker's event loop) and once for a sync no-op (run in the worker's
  process pool);
* **submit->start latency**: p50/p99 of ``started_at - created_at`` (store clock, 1 ms
  resolution) for a trickle of single submits to an idle worker, and p50/max for a few
  sporadic ones, far enough apart that scheduler and worker go idle in between;
* **idle CPU**: CPU used by the idle scheduler and worker processes, in % of one core;
* **placement**: decisions/s of ``rota.scheduler.placement.place`` on the ``bench.placement``
  workload (1,000 nodes, 10,000 pending jobs), no store involved.

Throughputs are medians of ``--runs`` runs (3 by default, 1 with ``--quick``); the note
column gives the spread. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rota.core.model import NodeState
from rota.core.states import JobState
from rota.store import SCHEDULER_LEASE, Store, open_store

ROOT = Path(__file__).resolve().parent.parent  # the directory holding the bench package
APP = "bench.apps:app"
ASYNC_TASK = "bench.noop"
SYNC_TASK = "bench.noop_sync"
TARGET_PLACEMENT = 50_000.0  # decisions/s with 1,000 nodes
FINAL = (JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED)
TARGETS = {  # the issues' targets for one worker process: (drain async, bulk submit)
    "sqlite": (5_000.0, 0.0),
    "postgres": (5_000.0, 30_000.0),
    "redis": (14_000.0, 50_000.0),
}


def unfinished(store: Store) -> int:
    return sum(n for (_, state), n in store.count_jobs().items() if state not in FINAL)


@dataclass(slots=True)
class Settings:
    jobs: int
    store: str  # sqlite, postgres or redis
    runs: int
    trickle: int
    trickle_gap: float
    sporadic: int
    sporadic_gap: float
    concurrency: int
    prefetch: int | None  # None: the worker's default (concurrency // 2)
    processes: int
    keep: bool
    verbose: bool

    @property
    def effective_prefetch(self) -> int:
        return self.prefetch if self.prefetch is not None else max(1, self.concurrency // 2)


@dataclass(slots=True)
class Row:
    what: str
    value: str
    unit: str
    target: str = ""
    note: str = ""


@dataclass(slots=True)
class Cluster:
    """A temporary SQLite store and the rota processes started on it."""

    directory: Path
    url: str
    settings: Settings
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["ROTA_STORE"] = self.url
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)
        return env

    def start(self, role: str, *args: str) -> subprocess.Popen[bytes]:
        log = self.directory / f"{role}.log"
        self.logs[role] = log
        cmd = [sys.executable, "-m", "rota", *args, "--log-level", "WARNING"]
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        self.procs[role] = proc
        return proc

    def start_scheduler(self, store: Store) -> None:
        self.start("scheduler", "scheduler", APP)
        self.wait_until(
            lambda: store.get_lease(SCHEDULER_LEASE) is not None, "the scheduler to lead"
        )

    def start_worker(self, store: Store, wait: bool = True) -> None:
        s = self.settings
        args = ["worker", APP, "--name", "bench", "--concurrency", str(s.concurrency)]
        args += ["--processes", str(s.processes)]
        if s.prefetch is not None:
            args += ["--prefetch", str(s.prefetch)]
        self.start("worker", *args)
        if wait:
            self.wait_until(
                lambda: bool(store.list_nodes([NodeState.LIVE])), "the worker to register"
            )

    def wait_until(self, check: Callable[[], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.02)

    def check_alive(self) -> None:
        for role, proc in self.procs.items():
            code = proc.poll()
            if code is not None:
                tail = self.logs[role].read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{role} exited with code {code}:\n{tail}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for role, proc in self.procs.items():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                print(f"  ({role} did not stop in 20 s: killed)", file=sys.stderr)
                proc.kill()
                proc.wait()
        if self.settings.verbose:
            for role, log in self.logs.items():
                text = log.read_text(errors="replace").strip()
                if text:
                    print(f"  --- {role} log ---\n{text[-2000:]}", file=sys.stderr)
        self.procs.clear()


@contextmanager
def cluster(settings: Settings, tag: str) -> Iterator[tuple[Cluster, Store]]:
    """A fresh store in a temporary directory, and this process's app pointed at it."""
    from bench.apps import app

    directory = Path(tempfile.mkdtemp(prefix=f"rota-bench-{tag}-"))
    c = Cluster(directory, store_url(settings.store, directory), settings)
    store = open_store(c.url)
    app.close()
    app.store_url = c.url
    try:
        yield c, store
    finally:
        app.close()
        c.stop()
        store.close()
        drop_store(c.url)
        if settings.keep:
            print(f"  (kept {directory})", file=sys.stderr)
        else:
            shutil.rmtree(directory, ignore_errors=True)


def submit_noops(task_name: str, count: int) -> list[str]:
    """Submit ``count`` no-op jobs with one ``submit_many`` call."""
    from bench.apps import app

    return [h.id for h in app.get_task(task_name).submit_many([()] * count)]


PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_BASE = "redis://127.0.0.1:6379/0"


def store_url(kind: str, directory: Path) -> str:
    """A fresh, empty store of ``kind`` (the machine's Redis and PostgreSQL, namespaced)."""
    tag = uuid.uuid4().hex[:10]
    if kind == "sqlite":
        return f"sqlite:///{directory / 'bench.db'}"
    if kind == "postgres":
        return f"{PG_BASE}?schema=rota_bench_{tag}"
    if kind == "redis":
        return f"{REDIS_BASE}?prefix=rota-bench-{tag}"
    raise ValueError(f"unknown store kind {kind!r} (sqlite, postgres, redis)")


def drop_store(url: str) -> None:
    """Remove what a benchmark stored in a shared server (SQLite files go with the directory)."""
    if url.startswith("postgresql"):
        import psycopg

        schema = url.rsplit("schema=", 1)[1]
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    elif url.startswith("redis"):
        import redis

        prefix = url.rsplit("prefix=", 1)[1]
        client = redis.Redis.from_url(REDIS_BASE)
        for batch in _chunks(list(client.scan_iter(match=f"{prefix}*", count=5000)), 5000):
            client.delete(*batch)
        client.close()


def _chunks(items: list[bytes], size: int) -> Iterator[list[bytes]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- the measurements --------------------------------------------------------------------
def measure_submit(s: Settings) -> list[float]:
    rates = []
    for _ in range(s.runs):
        with cluster(s, "submit"):
            start = time.perf_counter()
            submit_noops(ASYNC_TASK, s.jobs)
            rates.append(s.jobs / (time.perf_counter() - start))
    return rates


@dataclass(slots=True)
class Drain:
    rate: float  # jobs/s, first start to last finish (store clock)
    seconds: float
    first_start: float  # seconds from launching the worker to its first start


def measure_drain(s: Settings, task_name: str) -> list[Drain]:
    results = []
    for _ in range(s.runs):
        with cluster(s, "drain") as (c, store):
            c.start_scheduler(store)
            submit_noops(task_name, s.jobs)
            launched = store.now()
            c.start_worker(store, wait=False)
            deadline = time.monotonic() + 60 + s.jobs / 200
            while unfinished(store):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"drain timed out: {store.count_jobs()}")
                c.check_alive()
                time.sleep(0.1)
            done = store.list_jobs(state=JobState.SUCCEEDED, limit=s.jobs)
            first = min(r.started_at for r in done if r.started_at is not None)
            last = max(r.finished_at for r in done if r.finished_at is not None)
            counts = {state: n for (_, state), n in store.count_jobs().items()}
            if counts.get(JobState.SUCCEEDED, 0) != s.jobs:
                raise RuntimeError(f"not every job succeeded: {counts}")
            results.append(Drain(s.jobs / (last - first), last - first, first - launched))
    return results


@dataclass(slots=True)
class Idle:
    trickle: list[float]  # seconds, started_at - created_at
    sporadic: list[float]
    scheduler_cpu: float  # % of one core while idle
    worker_cpu: float


def measure_latency_and_idle(s: Settings) -> Idle:
    from bench.apps import app

    with cluster(s, "latency") as (c, store):
        c.start_scheduler(store)
        c.start_worker(store)
        task = app.get_task(ASYNC_TASK)
        store.wait_for_results([task.submit().id], 30)  # warm up (imports, caches)
        # Idle CPU, with nothing to do (after a moment to settle).
        time.sleep(1.0)
        pids = {role: p.pid for role, p in c.procs.items()}
        before = {role: cpu_seconds(pid) for role, pid in pids.items()}
        t0 = time.monotonic()
        time.sleep(3.0)
        elapsed = time.monotonic() - t0
        cpu = {r: (cpu_seconds(pid) - before[r]) / elapsed * 100 for r, pid in pids.items()}

        def latencies(count: int, gap: float) -> list[float]:
            ids = []
            for _ in range(count):
                ids.append(task.submit().id)
                time.sleep(gap)
            records = store.wait_for_results(ids, 60)
            c.check_alive()
            if len(records) != len(ids):
                raise RuntimeError(f"only {len(records)} of {len(ids)} latency jobs finished")
            return [r.started_at - r.created_at for r in records if r.started_at is not None]

        trickle = latencies(s.trickle, s.trickle_gap)
        sporadic = latencies(s.sporadic, s.sporadic_gap)
        return Idle(trickle, sporadic, cpu["scheduler"], cpu["worker"])


def measure_placement(runs: int) -> list[tuple[str, float]]:
    """Median decisions/s per policy at 1,000 nodes x 10,000 pending jobs."""
    import random

    from bench.placement import make_jobs, make_nodes
    from rota.scheduler.placement import POLICIES, place

    rng = random.Random(1)
    nodes = make_nodes(1_000, rng)
    jobs = make_jobs(10_000, rng)
    out = []
    for name in POLICIES:
        times = []
        for _ in range(max(runs, 3)):
            start = time.perf_counter()
            place(jobs, nodes, name)
            times.append(time.perf_counter() - start)
        out.append((name, len(jobs) / statistics.median(times)))
    return out


# ---- report ------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def spread(values: Sequence[float]) -> str:
    return f"runs {min(values):,.0f}..{max(values):,.0f}" if len(values) > 1 else ""


def verdict(value: float, target: float) -> str:
    return f">= {target:,.0f} {'ok' if value >= target else 'MISSED'}"


def print_table(rows: list[Row]) -> None:
    header = Row("measure", "value", "unit", "target", "note")
    names = ("what", "value", "unit", "target")
    widths = [max(len(getattr(r, f)) for r in [header, *rows]) for f in names]
    for i, r in enumerate([header, *rows]):
        print(
            f"{r.what:<{widths[0]}}  {r.value:>{widths[1]}}  {r.unit:<{widths[2]}}  "
            f"{r.target:<{widths[3]}}  {r.note}".rstrip()
        )
        if i == 0:
            print("-" * min(100, sum(widths) + 8 + max(len(r.note) for r in rows)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.e2e",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--store",
        default="sqlite",
        choices=("sqlite", "postgres", "redis"),
        help="store to measure",
    )
    parser.add_argument("--jobs", type=int, default=None, help="jobs per run (default 20000)")
    parser.add_argument("--quick", action="store_true", help="5000 jobs, 1 run, fewer probes")
    parser.add_argument("--runs", type=int, default=None, help="runs per measure (default 3)")
    parser.add_argument("--trickle", type=int, default=None, help="trickle jobs (default 300)")
    parser.add_argument("--concurrency", type=int, default=128, help="worker slots (default 128)")
    parser.add_argument(
        "--prefetch", type=int, default=None, help="worker prefetch (default: concurrency // 2)"
    )
    parser.add_argument(
        "--processes", type=int, default=None, help="worker pool processes (default: CPUs)"
    )
    parser.add_argument(
        "--only",
        default="submit,async,sync,latency,placement",
        help="comma-separated subset of: submit,async,sync,latency,placement",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument("-v", "--verbose", action="store_true", help="print process logs")
    args = parser.parse_args(argv)

    quick = args.quick
    s = Settings(
        store=args.store,
        jobs=args.jobs or (5_000 if quick else 20_000),
        runs=args.runs or (1 if quick else 3),
        trickle=args.trickle or (100 if quick else 300),
        trickle_gap=0.01,
        sporadic=10 if quick else 25,
        sporadic_gap=0.2,
        concurrency=args.concurrency,
        prefetch=args.prefetch,
        processes=args.processes or os.cpu_count() or 2,
        keep=args.keep,
        verbose=args.verbose,
    )
    only = {p.strip() for p in args.only.split(",") if p.strip()}
    print(
        f"rota end-to-end benchmark on {s.store}: {s.jobs:,} jobs per run, median of {s.runs} run(s); one worker "
        f"process: concurrency {s.concurrency}, prefetch {s.effective_prefetch}, "
        f"{s.processes} pool processes; SQLite {sqlite3.sqlite_version} (if used), "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at start",
        flush=True,
    )
    rows: list[Row] = []
    if "submit" in only:
        rates = measure_submit(s)
        median = statistics.median(rates)
        rows.append(
            Row(
                "submit (submit_many, bulk)",
                f"{median:,.0f}",
                "jobs/s",
                verdict(median, TARGETS[s.store][1]) if TARGETS[s.store][1] else "",
                spread(rates),
            )
        )
        print(f"  submit: {[round(r) for r in rates]}", file=sys.stderr, flush=True)
    drains = (
        ("async", ASYNC_TASK, "drain async no-op (event loop)"),
        ("sync", SYNC_TASK, "drain sync no-op (process pool)"),
    )
    for key, task_name, label in drains:
        if key not in only:
            continue
        results = measure_drain(s, task_name)
        rate = statistics.median(d.rate for d in results)
        first = statistics.median(d.first_start for d in results)
        note = [spread([d.rate for d in results]), f"1st start {first:.2f} s after launch"]
        rows.append(
            Row(
                label,
                f"{rate:,.0f}",
                "jobs/s",
                verdict(rate, TARGETS[s.store][0]) if key == "async" else "",
                "; ".join(n for n in note if n),
            )
        )
        print(f"  {key} drain: {[round(d.rate) for d in results]}", file=sys.stderr, flush=True)
    if "latency" in only:
        idle = measure_latency_and_idle(s)
        ms = [x * 1e3 for x in idle.trickle]
        rows.append(
            Row(
                "submit->start latency p50",
                f"{percentile(ms, 50):.1f}",
                "ms",
                note=f"{len(ms)} single submits {s.trickle_gap * 1e3:.0f} ms apart; store clock",
            )
        )
        rows.append(Row("submit->start latency p99", f"{percentile(ms, 99):.1f}", "ms"))
        sp = [x * 1e3 for x in idle.sporadic]
        rows.append(
            Row(
                "submit->start after idle p50/max",
                f"{percentile(sp, 50):.1f} / {max(sp):.1f}",
                "ms",
                note=f"{len(sp)} submits {s.sporadic_gap * 1e3:.0f} ms apart",
            )
        )
        rows.append(
            Row(
                "idle CPU scheduler / worker",
                f"{idle.scheduler_cpu:.1f} / {idle.worker_cpu:.1f}",
                "% of a core",
                note="3 s with nothing to do",
            )
        )
    if "placement" in only:
        for name, rate in measure_placement(s.runs):
            rows.append(
                Row(
                    f"placement {name}",
                    f"{rate:,.0f}",
                    "decisions/s",
                    verdict(rate, TARGET_PLACEMENT) if name == "least_loaded" else "",
                    "1,000 nodes, 10,000 pending jobs (bench.placement workload)",
                )
            )
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
