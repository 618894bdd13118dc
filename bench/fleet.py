"""A simulated fleet of worker nodes against one store: ``python -m bench.fleet``.

Nodes are asyncio tasks in ``--procs`` processes (``python -m bench.fleet sim ...``), and
use the real store API: ``register_node``, ``heartbeat`` (every second), and the claim path
a worker uses (``async_claims().wait_and_start`` / ``complete_and_start`` on Redis;
``start_jobs`` / ``complete`` through threads elsewhere, woken on PostgreSQL by each
node's channel's NOTIFY through one LISTEN connection per process; ``--no-listen``: by
polling). Jobs are not run: a ``sim.noop`` job is finished as soon as it is claimed, a
``sim.hold`` job is held until the node dies or the run ends. The real scheduler (``rota.scheduler.leader.Scheduler``) places them, in a
process of its own (``python -m bench.fleet scheduler ...``) that times each of its cycles.

For each fleet size (``--sizes 10,100,1000``):

1. heartbeats alone for ``--hb-seconds``: the store's CPU (the private ``redis-server``'s
   own CPU time; for PostgreSQL the CPU of the backends of this schema's connections) and
   its commands per second;
2. ``--jobs`` noop jobs submitted while no scheduler runs, then the scheduler starts:
   placements/s (jobs / time from its lease to the last placement seen) and its cycle
   times (p50, p99);
3. one ``sim.hold`` job per two slots, then 5 % of the nodes (50 at 1,000) stop at once
   (heartbeats and claims): time until the store shows them dead, and until every job
   they held runs on another node.

The table goes to stdout and, with ``--write``, into bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.fleet_report import plot, render
from rota.core.model import NewJob, NodeSpec, NodeState
from rota.core.outcomes import Outcome, OutcomeKind
from rota.core.states import JobState
from rota.store import SCHEDULER_LEASE, Store, open_store
from rota.store import fast_paths as fast

SLOTS = 4
HEARTBEAT = 1.0
LEASE_TTL = 10.0
FAILURE_TIMEOUT = 3.0
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"  # creates and drops the run's database
# Threads per simulated process for heartbeats, and as many for claims (PostgreSQL; Redis
# claims run on the event loop): 5 processes x (4 + 4) connections fit the shared server.
THREADS = {"redis": 16, "postgres": 4}
README = Path(__file__).resolve().parent / "README.md"
BEGIN, END = "<!-- bench.fleet: begin -->", "<!-- bench.fleet: end -->"


# ---- a process of simulated nodes ------------------------------------------------------------
class SimProcess:
    def __init__(self, url: str, names: Sequence[str], threads: int) -> None:
        self.url, self.names = url, list(names)
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(threads)  # one store (connection) each
        # Heartbeats have threads of their own, as a worker's heartbeat does: claims
        # queued on the other pool never hold them back.
        self.beats = ThreadPoolExecutor(threads)
        self.claiming = 0  # claim loops whose first call returned
        self.tasks: dict[str, list[asyncio.Task[None]]] = {}
        self.ids = {n: f"{n}-{uuid.uuid4().hex[:8]}" for n in self.names}
        self.held: dict[str, dict[str, int]] = {n: {} for n in self.names}
        self.hb_calls = 0
        self.hb_errors = 0
        self.hb_seconds = 0.0
        # PostgreSQL: a node's claim loop waits on its event, set by wake_on_notify.
        self.wake: dict[str, asyncio.Event] = {}

    def store(self) -> Store:
        st = getattr(self.local, "store", None)
        if st is None:
            st = self.local.store = open_store(self.url)
        return st

    async def call(self, method: str, *args: Any) -> Any:
        """``store.<method>(*args)`` on a thread (each thread has its own store)."""
        loop = asyncio.get_running_loop()
        pool = self.beats if method == "heartbeat" else self.pool
        return await loop.run_in_executor(pool, lambda: getattr(self.store(), method)(*args))

    async def heartbeats(self, name: str) -> None:
        node = self.ids[name]
        while True:
            await asyncio.sleep(HEARTBEAT)
            t = time.perf_counter()
            held = list(self.held[name].items())
            try:
                await self.call("heartbeat", node, held, LEASE_TTL)
            except Exception as exc:  # counted; the node carries on
                self.hb_errors += 1
                if self.hb_errors <= 3:
                    print(f"{name}: heartbeat failed: {exc!r}", file=sys.stderr, flush=True)
            self.hb_calls += 1
            self.hb_seconds += time.perf_counter() - t

    def wake_on_notify(self, loop: asyncio.AbstractEventLoop) -> None:
        """PostgreSQL: one connection LISTENs on the channels of this process's nodes (the
        store's ``assign`` NOTIFYs a node's channel, which a worker LISTENs on in
        ``wait_for_assignments``), and a notification wakes that node's claim loop at once:
        no poll interval between a placement and its claim. Runs on a thread of its own."""
        import psycopg
        from psycopg import sql

        store = open_store(self.url)
        channels = {store.node_channel(self.ids[n]): n for n in self.names}  # type: ignore[attr-defined]
        conn = psycopg.connect(store.conninfo, autocommit=True)  # type: ignore[attr-defined]
        for channel in channels:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        for note in conn.notifies():
            name = channels.get(note.channel)
            if name is not None:
                loop.call_soon_threadsafe(self.wake[name].set)

    async def claim_loop(self, name: str, claims: Any) -> None:
        node, held = self.ids[name], self.held[name]
        outcomes: list[Outcome] = []
        first = True
        poll = 0.05
        while True:
            free = SLOTS - len(held)
            try:
                if outcomes:
                    if claims is not None:
                        _, jobs = await claims.complete_and_start(outcomes, node, free, LEASE_TTL)
                    else:
                        await self.call("complete", outcomes)
                        jobs = await self.call("start_jobs", node, free, LEASE_TTL)
                    outcomes = []
                elif free <= 0:
                    await asyncio.sleep(1.0)
                    continue
                elif claims is not None:
                    jobs = await claims.wait_and_start(node, free, LEASE_TTL, 2.0)
                elif name in self.wake:
                    # Woken by its channel's NOTIFY (wake_on_notify), cleared before the
                    # claim so that one sent meanwhile is not missed; 2 s as a safety net.
                    wake = self.wake[name]
                    wake.clear()
                    jobs = await self.call("start_jobs", node, free, LEASE_TTL)
                    if not jobs:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(wake.wait(), 2.0)
                else:
                    # Polling (--no-listen): 50 ms after a claim that got work, backing
                    # off to 0.5 s while there is none.
                    jobs = await self.call("start_jobs", node, free, LEASE_TTL)
                    poll = 0.05 if jobs else min(0.5, poll * 2)
                    if not jobs:
                        await asyncio.sleep(poll)
            except Exception as exc:  # a store hiccup: try again
                print(f"{name}: {exc}", file=sys.stderr, flush=True)
                await asyncio.sleep(0.5)
                continue
            if first:  # connected (and, on Redis, the scripts loaded)
                first = False
                self.claiming += 1
            for job in jobs:
                if job.task == "sim.hold":
                    held[job.id] = job.token
                else:
                    outcomes.append(Outcome(job.id, job.token, OutcomeKind.SUCCEEDED, "null"))

    async def main(self, control: Path) -> None:
        for name in self.names:
            spec = NodeSpec(self.ids[name], name, SLOTS, 0, host="sim", pid=os.getpid())
            await self.call("register_node", spec)
        for name in self.names:
            self.tasks[name] = [asyncio.ensure_future(self.heartbeats(name))]
        (control / f"ready-{os.getpid()}").write_text("")
        killed = 0
        claiming = False
        while True:
            await asyncio.sleep(0.05)
            orders = (control / "orders").read_text() if (control / "orders").exists() else ""
            if "claim" in orders and not claiming:
                claiming = True
                if self.url.startswith("postgres") and "nolisten" not in orders:
                    self.wake = {name: asyncio.Event() for name in self.names}
                    loop = asyncio.get_running_loop()
                    threading.Thread(target=self.wake_on_notify, args=(loop,), daemon=True).start()
                for name in self.names:
                    # One claim client per node, as each worker has its own connection
                    # (None: claims through the threads, as a worker's I/O thread does).
                    claims = fast.async_claims(self.store())
                    self.tasks[name].append(asyncio.ensure_future(self.claim_loop(name, claims)))
            if claiming and self.claiming == len(self.names):
                self.claiming += 1  # reported once
                (control / f"claiming-{os.getpid()}").write_text("")
            want = int(orders.split("kill=")[1].split()[0]) if "kill=" in orders else 0
            while killed < want and killed < len(self.names):
                name = self.names[killed]
                for task in self.tasks[name]:
                    task.cancel()
                # A heartbeat already sent may still land: the store's heartbeat_at tells.
                killed_ids = {"node": self.ids[name], "jobs": list(self.held[name]),
                              "at": time.time()}  # fmt: skip
                with (control / f"killed-{os.getpid()}.jsonl").open("a") as f:
                    f.write(json.dumps(killed_ids) + "\n")
                killed += 1
            if "stop" in orders:
                break
        stats = {"hb_calls": self.hb_calls, "hb_seconds": self.hb_seconds}
        (control / f"stats-{os.getpid()}.json").write_text(json.dumps(stats))


# ---- the scheduler, timed --------------------------------------------------------------------
def run_scheduler(url: str, out: Path) -> None:
    from rota.scheduler.config import SchedulerConfig
    from rota.scheduler.leader import Scheduler

    sched = Scheduler(url, SchedulerConfig(failure_timeout=FAILURE_TIMEOUT, lease_ttl=5.0))
    times: list[float] = []
    placed: list[tuple[float, int]] = []
    real_cycle = sched.cycle

    def timed(store: Store) -> None:
        t = time.perf_counter()
        real_cycle(store)
        if sched.lease is not None:
            times.append(time.perf_counter() - t)
            placed.append((time.time(), sched.placed_total))

    sched.cycle = timed  # type: ignore[method-assign]
    signal.signal(signal.SIGTERM, lambda *_: sched.stop.set())
    sched.run()
    out.write_text(json.dumps({"cycles": times, "placed": placed}))


# ---- the scheduler alone ---------------------------------------------------------------------
ALONE_PREFETCH = 16  # room for 20 jobs a node: 20,000 at 1,000 nodes


def placement_alone(url: str, nodes: int, jobs: int, max_page: int) -> float:
    """The scheduler's own placements/s: ``jobs`` (at most the room) placed onto ``nodes``
    registered nodes by the real ``Scheduler.cycle`` in this process, with nothing else
    using the store (no heartbeats, no claims): snapshot, placement and assign only."""
    from rota.scheduler.config import SchedulerConfig
    from rota.scheduler.leader import Scheduler

    store = open_store(url)
    store.migrate()
    for i in range(nodes):
        name = f"a{i:04d}"
        store.register_node(NodeSpec(name, name, SLOTS, ALONE_PREFETCH, host="alone"))
    jobs = min(jobs, nodes * (SLOTS + ALONE_PREFETCH))
    submit(store, "sim.noop", jobs)
    config = SchedulerConfig(failure_timeout=600.0, lease_ttl=60.0, max_page=max_page)
    sched = Scheduler(url, config)
    began = time.perf_counter()
    while sched.placed_total < jobs and time.perf_counter() - began < 300:
        sched.cycle(store)
    rate = sched.placed_total / (time.perf_counter() - began)
    if sched.lease is not None:
        sched.leadership.release(store, sched.lease)
    store.close()
    return rate


# ---- the driver ------------------------------------------------------------------------------
def cpu_seconds(pids: Sequence[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


class Target:
    """The store under test: its URL, its server processes and an ops counter."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.proc: subprocess.Popen[bytes] | None = None
        if kind == "redis":
            import socket

            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            self.proc = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                 "--appendonly", "no", "--maxclients", "20000", "--dir", str(tmp)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            self.url = f"redis://127.0.0.1:{port}/0?prefix=fleet"
            import redis

            self.client = redis.Redis(port=port)
            for _ in range(100):
                with contextlib.suppress(Exception):
                    self.client.ping()
                    break
                time.sleep(0.05)
        else:
            # A database of its own on the shared server: its backends' CPU and its
            # transaction counters are this run's alone.
            import psycopg

            self.db = f"rota_fleet_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.db}"')
            self.url = f"postgresql://postgres@127.0.0.1:5432/{self.db}?schema=rota_fleet"

    def url_for(self, name: str) -> str:
        """The URL of another app (key prefix or schema) on the same server."""
        return self.url.replace("prefix=fleet", f"prefix={name}").replace(
            "schema=rota_fleet", f"schema={name}"
        )

    def pids(self) -> list[int]:
        if self.proc is not None:
            return [self.proc.pid]
        import psycopg

        with psycopg.connect(PG_ADMIN) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.db,)
            ).fetchall()
        return [int(r[0]) for r in rows]

    def ops(self) -> int:
        """Commands (Redis, the scripts' inner calls counted) or transactions (PostgreSQL)."""
        if self.proc is not None:
            return int(self.client.info("stats")["total_commands_processed"])
        import psycopg

        with psycopg.connect(PG_ADMIN) as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
                (self.db,),
            ).fetchone()
        return int(row[0] or 0) if row else 0

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
        else:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')


def wait(what: str, check: Any, timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def submit(store: Store, task: str, count: int) -> list[str]:
    """``count`` jobs of ``task`` (3 attempts: a dead node's job runs again)."""
    ids: list[str] = []
    for i in range(0, count, 2000):
        batch = [
            NewJob(uuid.uuid4().hex, task, "default", '{"args":[],"kwargs":{}}', max_attempts=3)
            for _ in range(min(2000, count - i))
        ]
        ids += store.submit(batch)
    return ids


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_size(
    kind: str,
    nodes: int,
    jobs: int,
    procs: int,
    hb_seconds: float,
    hb_only: bool = False,
    listen: bool = True,
) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"rota-fleet-{kind}-{nodes}-"))
    target = Target(kind, tmp)
    children: list[subprocess.Popen[bytes]] = []
    sched: subprocess.Popen[bytes] | None = None
    row: dict[str, Any] = {"store": kind, "nodes": nodes, "jobs": jobs}
    try:
        # 0. the scheduler alone, paging as before (pages of at most 1,000) and with pages
        # as large as the room (max_page), twice each in turns; the best of each.
        alone: dict[int, list[float]] = {1000: [], 10000: []}
        for turn in range(0 if hb_only else 2):
            for max_page in alone:
                url = target.url_for(f"alone{max_page}x{turn}")
                alone[max_page].append(placement_alone(url, nodes, jobs, max_page))
        if not hb_only:
            row["alone_1000"], row["alone_s"] = max(alone[1000]), max(alone[10000])
        store = open_store(target.url)
        store.migrate()
        per = [[f"n{i:04d}" for i in range(nodes) if i % procs == p] for p in range(procs)]
        for names in per:
            argv = [sys.executable, "-m", "bench.fleet", "sim", target.url, str(tmp), *names]
            children.append(subprocess.Popen(argv, start_new_session=True))
        wait("nodes to register", lambda: len(list(tmp.glob("ready-*"))) == procs, 120, 0.2)
        # 1. heartbeats alone
        time.sleep(2.0)
        pids = target.pids()
        cpu0, ops0, t0 = cpu_seconds(pids), target.ops(), time.monotonic()
        time.sleep(hb_seconds)
        cpu1, ops1, t1 = cpu_seconds(pids), target.ops(), time.monotonic()
        row["hb_cpu_pct"] = 100 * (cpu1 - cpu0) / (t1 - t0)
        row["hb_ops_s"] = (ops1 - ops0) / (t1 - t0)
        if hb_only:
            (tmp / "orders").write_text("stop")
            for child in children:
                child.wait(30)
            store.close()
            return row
        # 2. placement. The claim loops start first and wait (as a fleet's workers do
        # before work comes), so their connections and the Redis library are loaded.
        claim = "claim" if listen else "claim nolisten"  # PostgreSQL: NOTIFY or polling
        (tmp / "orders").write_text(claim)
        wait("claim loops", lambda: len(list(tmp.glob("claiming-*"))) == procs, 120, 0.2)
        submit(store, "sim.noop", jobs)
        out = tmp / "sched.json"
        sched = subprocess.Popen([sys.executable, "-m", "bench.fleet", "scheduler", target.url,
                                  str(out)], start_new_session=True)  # fmt: skip
        lease = wait("a leader", lambda: store.get_lease(SCHEDULER_LEASE), 60)

        def done() -> bool:
            counts = store.count_jobs()
            final = (JobState.SUCCEEDED, JobState.DEAD)
            return sum(n for (_, st), n in counts.items() if st in final) >= jobs

        wait("every noop job to finish", done, max(600.0, jobs / 50), 0.2)
        finished = time.time()
        row["expired"] = sum(n for (_, st), n in store.count_jobs().items() if st is JobState.DEAD)
        row["e2e_jobs_s"] = jobs / (finished - lease.acquired_at)
        # 3. 5 % of the nodes stop at once while holding jobs
        holds = submit(store, "sim.hold", nodes * SLOTS // 2)
        wait("hold jobs running", lambda: all(
            r.state is JobState.RUNNING for r in store.get_jobs(holds[-200:])), 120, 0.2)  # fmt: skip
        time.sleep(1.5)
        dead_before = {n.id for n in store.list_nodes() if n.state is NodeState.DEAD}
        victims_per_proc = max(1, nodes // 20 // procs)
        (tmp / "orders").write_text(f"{claim} kill={victims_per_proc}")
        killed = wait("the kills", lambda: [
            json.loads(line) for f in tmp.glob("killed-*") for line in f.read_text().splitlines()
        ] if sum(len(f.read_text().splitlines()) for f in tmp.glob("killed-*"))
            >= victims_per_proc * procs else None, 30, 0.02)  # fmt: skip
        kill_at = {k["node"]: float(k["at"]) for k in killed}
        node_of = {j: k["node"] for k in killed for j in k["jobs"]}
        their_jobs = list(node_of)
        seen_dead: dict[str, float] = {}

        def all_dead() -> bool:
            states = {n.id: n.state for n in store.list_nodes()}
            now = time.time()  # when the answer was in hand (an upper bound)
            for node_id in kill_at:
                if states.get(node_id) is NodeState.DEAD:
                    seen_dead.setdefault(node_id, now)
            return len(seen_dead) == len(kill_at)

        wait("the stopped nodes to be declared dead", all_dead, 120, 0.05)

        def replaced() -> list[Any] | None:
            recs = store.get_jobs(their_jobs)
            ok = all(r.state is JobState.RUNNING and r.node_id not in kill_at for r in recs)
            return recs if ok else None

        recs = wait("their jobs to run elsewhere", replaced, 120, 0.05)
        # started_at is the store's clock (same machine as the kill times): exact.
        last_hb = {n.id: n.heartbeat_at for n in store.list_nodes() if n.id in kill_at}
        dead_now = {n.id for n in store.list_nodes() if n.state is NodeState.DEAD}
        row.update(
            killed=len(kill_at),
            killed_jobs=len(their_jobs),
            detect_s=max(seen_dead[n] - kill_at[n] for n in kill_at),
            replace_s=max(r.started_at - kill_at[node_of[r.id]] for r in recs),
            replace_hb_s=max(r.started_at - last_hb[node_of[r.id]] for r in recs),
            false_dead=len(dead_now - dead_before - set(kill_at)) + len(dead_before),
        )
        (tmp / "orders").write_text("stop")
        sched.send_signal(signal.SIGTERM)
        sched.wait(60)
        data = json.loads(out.read_text())
        cycles = data["cycles"]
        row["cycle_p50_ms"] = 1000 * pct(cycles, 0.5)
        row["cycle_p99_ms"] = 1000 * pct(cycles, 0.99)
        placed = [(t, n) for t, n in data["placed"] if t <= finished + 0.5]
        first = next((t for t, n in placed if n > 0), lease.acquired_at)
        last = next((t for t, n in placed if n >= jobs), finished)
        row["placements_s"] = jobs / max(last - lease.acquired_at, 1e-9)
        # Until every slot of the fleet is taken, placement does not wait for the nodes.
        fill = min(jobs, nodes * SLOTS)
        filled = next((t for t, n in placed if n >= fill), last)
        row["fill_s"] = fill / max(filled - lease.acquired_at, 1e-9)
        row["placing_s"] = last - first
        for child in children:
            child.wait(30)
        store.close()
        return row
    finally:
        for p in [*children, *([sched] if sched else [])]:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        target.close()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "sim":
        url, control, names = sys.argv[2], Path(sys.argv[3]), sys.argv[4:]
        threads = THREADS["redis" if url.startswith("redis") else "postgres"]
        asyncio.run(SimProcess(url, names, threads).main(control))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "scheduler":
        run_scheduler(sys.argv[2], Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="redis")
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--postgres-jobs", type=int, help="jobs per size on PostgreSQL (--jobs)")
    parser.add_argument("--procs", type=int, default=5)
    parser.add_argument("--hb-seconds", type=float, default=10.0)
    parser.add_argument("--heartbeats-only", action="store_true",
                        help="measure step 1 (heartbeats alone) only")  # fmt: skip
    parser.add_argument("--no-listen", action="store_true",
                        help="PostgreSQL: simulated nodes poll for work instead of being "
                        "woken by their channel's NOTIFY")  # fmt: skip
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--keep-rows", type=Path, metavar="JSON",
                        help="rows of earlier runs: rows of this run replace theirs (same "
                        "store and size), and the merged rows are saved there")  # fmt: skip
    args = parser.parse_args()
    if args.heartbeats_only and args.write:
        parser.error("--heartbeats-only makes no full row for bench/README.md: drop --write")
    rows: list[dict[str, Any]] = []
    began = time.monotonic()
    for kind in args.stores.split(","):
        for size in map(int, args.sizes.split(",")):
            print(f"--- {kind}, {size} nodes", flush=True)
            try:
                jobs = (
                    args.postgres_jobs if kind == "postgres" and args.postgres_jobs else args.jobs
                )
                row = run_size(kind, size, jobs, args.procs, args.hb_seconds, args.heartbeats_only)
            except Exception as exc:  # a failed size is a row too
                row = {"store": kind, "nodes": size, "error": f"{type(exc).__name__}: {exc}"}
            row["run"] = time.strftime("%Y-%m-%d %H:%M")
            print(row, flush=True)
            rows.append(row)
    head = (
        f"Generated by `python -m bench.fleet --stores {args.stores} --sizes {args.sizes} "
        f"--jobs {args.jobs}"
        + (f" --postgres-jobs {args.postgres_jobs}" if args.postgres_jobs else "")
        + f" --procs {args.procs}` ({time.monotonic() - began:.0f} s): nodes "
        f"of {SLOTS} slots heartbeating every {HEARTBEAT:.0f} s in {args.procs} processes, "
        f"failure timeout {FAILURE_TIMEOUT:.0f} s, on a 2-core machine shared with other runs."
    )
    if args.keep_rows:
        kept = json.loads(args.keep_rows.read_text()) if args.keep_rows.exists() else []
        new = {(r["store"], r["nodes"]) for r in rows}
        rows = [r for r in kept if (r["store"], r["nodes"]) not in new] + rows
        rows.sort(key=lambda r: (r["store"] != "redis", r["store"], r["nodes"]))
        args.keep_rows.write_text(json.dumps(rows, indent=1))
        head += f" Rows merged with earlier runs' ({args.keep_rows.name}); each row's own run:"
        head += " " + "; ".join(
            f"{r['store']} {r['nodes']:,}: {r.get('run', 'this run')}" for r in rows
        )
    text = render(rows, head)
    print(text)
    if args.write:
        png = README.parent / "results" / "fleet.png"
        if plot(rows, png, FAILURE_TIMEOUT):
            text += f"\n\n![growth from 10 to 1,000 nodes](results/{png.name})"
        doc = README.read_text()
        block = f"{BEGIN}\n{text}\n{END}"
        if BEGIN in doc:
            doc = doc[: doc.index(BEGIN)] + block + doc[doc.index(END) + len(END) :]
        else:
            doc = doc.rstrip("\n") + "\n\n## A fleet of simulated nodes\n\n" + block + "\n"
        README.write_text(doc)


if __name__ == "__main__":
    main()
