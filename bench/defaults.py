"""Defaults only, one run: ``python -m bench.defaults``.

rota as a new user starts it (``rota worker APP`` and ``rota scheduler APP``, no flags, a
plain ``def`` task) beside each peer's worker as its own docs start it (no flags), every
task calling the same probe (bench-peers' ``common.probe``: one ``INCR`` on the benchmark's
Redis, or one ``RPUSH`` of submit->start latency):

* **Redis** (a private ``redis-server``): rota sync task, rota ``async def`` task, rota
  ``--concurrency 1``; Dramatiq's default worker (``dramatiq sys_dramatiq``: a process per
  CPU x 8 threads) and ``--processes 1 --threads 1``;
* **PostgreSQL** (a private database on the machine's server): rota; procrastinate 3.10's
  default worker; pgqueuer's ``pgq run`` (when it installs);
* **SQLite**: rota on a temporary file; Huey's ``SqliteHuey`` with its default consumer;
* **latency**: submit -> start on an idle fleet, rota (sync task, default flags) against
  Huey's default consumer on the same Redis (500 tasks at 100/s, after 20 warm-up tasks);
* **CPU per job** of every process of a run (worker with its pool children, scheduler) and
  of the store's server (Redis' own CPU; the PostgreSQL backends serving the database),
  from the first probe to the last, divided by jobs.

Drain is bench-peers' measure: N tasks submitted first, then the worker(s) started; tasks/s
from the first probe to the N-th, cut at ``--cap`` seconds (``*``: done / elapsed). The peers
run in the virtualenv of a copy of ``shared/bench-peers`` (``$TMPDIR/rota-bench-peers``) with
procrastinate and pgqueuer added, never in rota's. Prints one markdown table (also written to
``bench/results/defaults-<date>.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.default_peers import EXTRA_REQUIREMENTS, write_modules
from bench.peers import (
    DEFAULT_PEERS_SRC,
    K_CNT,
    K_DONE,
    K_LAT,
    K_T0,
    K_T1,
    ROOT,
    Proc,
    RedisServer,
    fmt,
    group_cpu,
    log,
    pct,
    prepare_peers,
    spawn,
)

RESULTS = ROOT / "bench" / "results"
APP = "bench.peer_apps:app"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGETS = {  # same-run ratios the fast-by-default issue asks for
    "redis sync": ("Dramatiq, default", 5.0),
    "redis async": ("Dramatiq, default", 5.0),
    "redis -c 1": ("Dramatiq, 1 process x 1 thread", 3.0),
    "postgres": ("procrastinate, default", 5.0),
    "sqlite": ("Huey SqliteHuey, default", 5.0),
}


@dataclass
class Drain:
    """One drain: its rate and the CPU each part spent per job (µs)."""

    label: str
    store: str
    rate: float | None = None
    partial: bool = False
    cpu_us: dict[str, float] = field(default_factory=dict)
    note: str = ""


def backend_pids(dsn: str, database: str) -> list[int]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return [int(r[0]) for r in rows]


def pids_cpu(pids: list[int]) -> dict[int, float]:
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / ticks
        except OSError:
            continue
    return out


class Bench:
    def __init__(self, a: argparse.Namespace, work: Path, peers_dir: Path) -> None:
        self.a = a
        self.work = work
        self.peers_dir = peers_dir
        self.redis = RedisServer(work)
        self.redis.start()
        self.port = self.redis.port
        self.r = redis.Redis(port=self.port, socket_timeout=None, decode_responses=True)
        self.database = f"rota_bench_{uuid.uuid4().hex[:8]}"
        self.pg_dsn = f"postgresql://postgres@127.0.0.1:5432/{self.database}"
        self.procs: list[Proc] = []
        self.src: str | None = None  # another checkout's src/ for the rota processes (A/B)
        os.environ["BENCH_REDIS_PORT"] = str(self.port)
        os.environ["BENCH_PEERS_DIR"] = str(peers_dir)
        from bench import peer_apps  # after the env above: it loads the probe

        self.app = peer_apps.app

    # ---- plumbing -------------------------------------------------------------------
    def env(self, store: str = "") -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            BENCH_REDIS_PORT=str(self.port),
            BENCH_PEERS_DIR=str(self.peers_dir),
            BENCH_PG_DSN=self.pg_dsn,
            BENCH_SQLITE_PATH=str(self.work / "huey.db"),
        )
        if store:
            env["ROTA_STORE"] = store
            path = env.get("PYTHONPATH")
            env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)
        else:  # a peer: its own virtualenv and the bench-peers copy on the path
            env["PYTHONPATH"] = str(self.peers_dir)
        return env

    def stop_all(self) -> None:
        for p in self.procs:
            p.stop(grace=3)
        self.procs = []

    def start(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path = ROOT) -> Proc:
        p = spawn(name, cmd, env, self.work, cwd=cwd)
        self.procs.append(p)
        return p

    def rota(self, store: str, *args: str) -> None:
        env = self.env(store)
        if self.src:  # an A/B row (--before): that checkout's rota first on the path
            env["PYTHONPATH"] = f"{self.src}{os.pathsep}{env['PYTHONPATH']}"
        self.start("rota-scheduler", [sys.executable, "-m", "rota", "scheduler", APP], env)
        self.start("rota-worker", [sys.executable, "-m", "rota", "worker", APP, *args], env)

    def peer_python(self) -> str:
        return str(self.peers_dir / ".venv" / "bin" / "python")

    def peer_bin(self, name: str) -> str:
        return str(self.peers_dir / ".venv" / "bin" / name)

    def peer_call(self, module: str, call: str) -> None:
        subprocess.run(
            [self.peer_python(), "-c", f"import {module} as m; m.{call}"],
            cwd=self.peers_dir,
            env=self.env(),
            check=True,
            capture_output=True,
        )

    def wait(self, check: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return True
            if any(not p.alive() for p in self.procs):
                dead = next(p for p in self.procs if not p.alive())
                raise RuntimeError(f"{dead.name} exited:\n{dead.tail()}")
            time.sleep(0.005)
        return False

    # ---- store CPU -----------------------------------------------------------------
    def store_cpu(self, store: str) -> dict[int, float]:
        if store == "redis":
            return {self.redis.pid: group_cpu(self.redis.pid)}
        if store == "postgres":
            return pids_cpu(backend_pids(PG_ADMIN, self.database))
        return {}

    # ---- one drain -----------------------------------------------------------------
    def drain(
        self, label: str, store: str, fill: Callable[[], None], start: Callable[[], None]
    ) -> Drain:
        n, out = self.a.tasks, Drain(label, store)
        self.stop_all()
        self.r.flushdb()
        try:
            fill()
            start()
            if not self.wait(lambda: bool(self.r.exists(K_T0)), 120):
                raise RuntimeError("no task started within 120 s")
            t0_cpu = {p.name: group_cpu(p.pid) for p in self.procs}
            s0 = self.store_cpu(store)
            t0 = float(self.r.get(K_T0) or 0)
            left = max(1.0, self.a.cap - (time.time() - t0))
            if self.r.blpop([K_DONE], timeout=left):
                done, elapsed = n, float(self.r.get(K_T1) or 0) - t0
            else:
                done, elapsed, out.partial = int(self.r.get(K_CNT) or 0), time.time() - t0, True
            s1 = self.store_cpu(store)
            for p in self.procs:
                part = "scheduler" if p.name.endswith("scheduler") else "worker"
                used = group_cpu(p.pid) - t0_cpu.get(p.name, 0.0)
                out.cpu_us[part] = out.cpu_us.get(part, 0.0) + 1e6 * used / max(done, 1)
            if s1:
                used = sum(v - s0.get(pid, 0.0) for pid, v in s1.items())
                out.cpu_us["store"] = 1e6 * used / max(done, 1)
            out.rate = done / elapsed if elapsed > 0 else None
        except Exception as exc:  # a peer that does not run is reported, not fatal
            out.note = f"not measured: {str(exc).strip().splitlines()[-1][:120]}"
            log(f"!! {label}: {exc}")
        finally:
            self.stop_all()
        log(f"  {label} [{store}]: {fmt(out.rate)}/s {'*' if out.partial else ''} {out.cpu_us}")
        return out

    def fill_rota(self, url: str, task: str) -> Callable[[], None]:
        def fill() -> None:
            self.app.close()
            self.app.store_url = url
            t, n = self.app.get_task(task), self.a.tasks
            for s in range(0, n, 1000):
                t.submit_many([(n, 0)] * min(1000, n - s))
            self.app.close()

        return fill

    def rota_drain(self, label: str, store: str, task: str, *args: str) -> Drain:
        url = self.rota_url(store)
        return self.drain(label, store, self.fill_rota(url, task), lambda: self.rota(url, *args))

    def peer_drain(self, label: str, store: str, module: str, cmd: list[str]) -> Drain:
        return self.drain(
            label,
            store,
            lambda: self.peer_call(module, f"enqueue_bulk({self.a.tasks})"),
            lambda: self.start(label, cmd, self.env(), cwd=self.peers_dir) and None,
        )

    def rota_url(self, store: str) -> str:
        tag = uuid.uuid4().hex[:8]
        if store == "redis":
            return f"redis://127.0.0.1:{self.port}/0?prefix=rd{tag}"
        if store == "postgres":
            return f"{self.pg_dsn}?schema=rota_{tag}"
        return f"sqlite:///{self.work / f'rota-{tag}.db'}"

    # ---- latency -------------------------------------------------------------------
    def latency(
        self, label: str, start: Callable[[], None], trickle: Callable[[int, float], None]
    ) -> tuple[float, float] | None:
        self.stop_all()
        self.r.flushdb()
        try:
            start()
            trickle(20, 200)
            if not self.wait(lambda: int(self.r.llen(K_LAT)) >= 20, 120):
                raise RuntimeError("warm-up tasks did not run")
            self.r.delete(K_LAT)
            time.sleep(1.0)
            count = self.a.lat_count
            trickle(count, self.a.lat_rate)
            self.wait(lambda: int(self.r.llen(K_LAT)) >= count, 60)
            lat = [1000 * float(x) for x in self.r.lrange(K_LAT, 0, -1)]
            log(f"  latency {label}: p50 {pct(lat, 50):.2f} p99 {pct(lat, 99):.2f} ms ({len(lat)})")
            return pct(lat, 50), pct(lat, 99)
        except Exception as exc:
            log(f"!! latency {label}: {exc}")
            return None
        finally:
            self.stop_all()

    def rota_trickle(self, url: str) -> Callable[[int, float], None]:
        def trickle(count: int, rate: float) -> None:
            self.app.close()
            self.app.store_url = url
            task = self.app.get_task("peer.probe_sync")
            t0 = time.perf_counter()
            for i in range(count):
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                task.submit(0, time.time())

        return trickle

    def close(self) -> None:
        self.stop_all()
        self.app.close()
        self.redis.stop()
        with contextlib.suppress(Exception):
            self.drop_database()

    # ---- PostgreSQL database -------------------------------------------------------
    def create_database(self) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')

    def drop_database(self) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


def ensure_peers_venv(peers_dir: Path) -> None:
    venv = peers_dir / ".venv"
    marker = venv / ".rota-defaults"
    if marker.exists():
        return
    log(f"== making the peers' virtualenv in {venv} (once)")
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q"]
    subprocess.run([*pip, "-r", str(peers_dir / "requirements.txt")], check=True)
    for req in EXTRA_REQUIREMENTS:  # each on its own: one that does not install is skipped
        if subprocess.run([*pip, req]).returncode != 0:
            log(f"!! {req} did not install; its row is skipped")
    marker.write_text("ok\n")


@contextlib.contextmanager
def bench_session(a: argparse.Namespace) -> Iterator[Bench]:
    peers_dir = Path(tempfile.gettempdir()) / "rota-bench-peers"
    prepare_peers(Path(a.peers_src), peers_dir)
    write_modules(peers_dir)
    ensure_peers_venv(peers_dir)
    with tempfile.TemporaryDirectory(prefix="rota-defaults-") as tmp:
        b = Bench(a, Path(tmp), peers_dir)
        try:
            b.create_database()
            yield b
        finally:
            b.close()


def measure(b: Bench, reps: int) -> dict[str, Any]:
    """Every row ``reps`` times, interleaved; returns the samples. ``--only`` keeps the
    rows whose name contains one of its words (and the latency rows only if one is
    "latency"); each ``--variant "label=flags"`` adds a rota sync row on Redis."""
    dram = b.peer_bin("dramatiq")
    rows: dict[str, Callable[[], Drain]] = {
        "rota sync (redis)": lambda: b.rota_drain("rota sync", "redis", "peer.probe_sync"),
        "rota async (redis)": lambda: b.rota_drain("rota async", "redis", "peer.probe"),
        "rota -c 1 (redis)": lambda: b.rota_drain(
            "rota -c 1", "redis", "peer.probe_sync", "--concurrency", "1"
        ),
        "Dramatiq, default": lambda: b.peer_drain(
            "Dramatiq, default", "redis", "sys_dramatiq", [dram, "sys_dramatiq"]
        ),
        "Dramatiq, 1 process x 1 thread": lambda: b.peer_drain(
            "Dramatiq, 1x1",
            "redis",
            "sys_dramatiq",
            [dram, "sys_dramatiq", "--processes", "1", "--threads", "1"],
        ),
        "rota (postgres)": lambda: b.rota_drain("rota", "postgres", "peer.probe_sync"),
        "procrastinate, default": lambda: b.peer_drain(
            "procrastinate",
            "postgres",
            "sys_procrastinate",
            [b.peer_bin("procrastinate"), "--app=sys_procrastinate.app", "worker"],
        ),
        "pgqueuer, default": lambda: b.peer_drain(
            "pgqueuer",
            "postgres",
            "sys_pgqueuer",
            [b.peer_python(), "-c", "import asyncio, sys_pgqueuer as m; asyncio.run(m.serve())"],
        ),
        "rota -c 1 (postgres)": lambda: b.rota_drain(
            "rota -c 1", "postgres", "peer.probe_sync", "--concurrency", "1"
        ),
        "rota (sqlite)": lambda: b.rota_drain("rota", "sqlite", "peer.probe_sync"),
        "rota -c 1 (sqlite)": lambda: b.rota_drain(
            "rota -c 1", "sqlite", "peer.probe_sync", "--concurrency", "1"
        ),
        "Huey SqliteHuey, default": lambda: b.peer_drain(
            "SqliteHuey",
            "sqlite",
            "sys_sqlitehuey",
            [b.peer_bin("huey_consumer"), "sys_sqlitehuey.huey", "--quiet"],
        ),
    }
    for variant in b.a.variant:
        label, _, flags = variant.partition("=")
        rows[f"rota sync {label} (redis)"] = lambda label=label, flags=flags: b.rota_drain(
            f"rota sync {label}", "redis", "peer.probe_sync", *flags.split()
        )
    only = b.a.only
    if only:
        rows = {k: v for k, v in rows.items() if any(w in k for w in only)}
    if b.a.before:  # each rota row again, right after it, with the other checkout's rota
        src = str(Path(b.a.before).resolve() / "src")
        rows = {
            key: fn
            for name, run in rows.items()
            for key, fn in [(name, run)]
            + ([(f"{name} before", lambda run=run: before(b, src, run))] if "rota" in name else [])
        }
    for module in ("sys_procrastinate", "sys_pgqueuer"):
        if any(module.split("_")[1] in k for k in rows):
            with contextlib.suppress(Exception):
                b.peer_call(module, "install()")
    samples: dict[str, list[Drain]] = {k: [] for k in rows}
    latency: dict[str, list[tuple[float, float]]] = {"rota": [], "Huey": []}
    huey = [b.peer_bin("huey_consumer"), "sys_huey.huey", "-k", "thread", "-w", "1", "--quiet"]
    for rep in range(reps):
        log(f"== pass {rep + 1}/{reps}")
        for name, run in rows.items():
            samples[name].append(run())
        if only and "latency" not in only:
            continue
        url = b.rota_url("redis")
        got = b.latency("rota", lambda url=url: b.rota(url), b.rota_trickle(url))
        if got:
            latency["rota"].append(got)
        got = b.latency(
            "Huey",
            lambda: b.start("huey", huey, b.env(), cwd=b.peers_dir) and None,
            lambda c, r: b.peer_call("sys_huey", f"trickle({c}, {r})"),
        )
        if got:
            latency["Huey"].append(got)
    return {"drains": samples, "latency": latency}


def before(b: Bench, src: str, run: Callable[[], Drain]) -> Drain:
    """``run`` with the rota processes importing rota from ``src`` (an A/B row)."""
    b.src = src
    try:
        return run()
    finally:
        b.src = None


def med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def render(res: dict[str, Any], a: argparse.Namespace, ceiling: dict[str, float]) -> str:
    drains: dict[str, list[Drain]] = res["drains"]
    rate = {k: med([d.rate for d in v if d.rate]) for k, v in drains.items()}
    lines = [
        f"Defaults only; one run, {time.strftime('%Y-%m-%d %H:%M')}; N = {a.tasks}, {a.reps} "
        f"pass(es), medians; drain cut at {a.cap:.0f} s (`*`); {os.cpu_count()} CPUs.",
        "",
        "| system (no flags unless shown) | store | drain /s | CPU µs/job: worker | scheduler | store server | total |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, ds in drains.items():
        cpu = {
            part: med([d.cpu_us[part] for d in ds if part in d.cpu_us])
            for part in ("worker", "scheduler", "store")
        }
        total = sum(v for v in cpu.values() if v is not None) or None
        star = "*" if any(d.partial for d in ds) else ""
        note = next((d.note for d in ds if d.note), "")
        store = ds[0].store if ds else ""
        lines.append(
            f"| {name}{' (' + note + ')' if note and rate[name] is None else ''} | {store} | "
            f"{fmt(rate[name])}{star} | {fmt(cpu['worker'])} | {fmt(cpu['scheduler'])} | "
            f"{fmt(cpu['store'])} | {fmt(total)} |"
        )
    lat = res["latency"]
    lines += ["", "| submit -> start, idle fleet | p50 ms | p99 ms |", "|---|---:|---:|"]
    for who, vals in lat.items():
        lines.append(
            f"| {who} | {fmt(med([v[0] for v in vals]), 2)} | {fmt(med([v[1] for v in vals]), 2)} |"
        )
    lines += ["", "Targets (same-run ratios):", ""]
    mine = {
        "redis sync": "rota sync (redis)",
        "redis async": "rota async (redis)",
        "redis -c 1": "rota -c 1 (redis)",
        "postgres": "rota (postgres)",
        "sqlite": "rota (sqlite)",
    }
    for key, (peer, want) in TARGETS.items():
        ours, theirs = rate.get(mine[key]), rate.get(peer)
        got = ours / theirs if ours and theirs else None
        verdict = "-" if got is None else ("met" if got >= want else "NOT met")
        lines.append(
            f"- {key}: {fmt(ours)}/s vs {peer} {fmt(theirs)}/s = {fmt(got, 2)}x (target {want:g}x): {verdict}"
        )

    def total_cpu(name: str) -> float | None:
        ds = drains.get(name, [])
        vals = [sum(d.cpu_us.values()) for d in ds if d.cpu_us and d.rate]
        return med(vals)

    ours_cpu, dram_cpu = total_cpu("rota sync (redis)"), total_cpu("Dramatiq, default")
    if ours_cpu and dram_cpu:
        lines.append(
            f"- redis CPU per job (all processes + Redis): rota {ours_cpu:,.0f} µs vs Dramatiq "
            f"{dram_cpu:,.0f} µs = {ours_cpu / dram_cpu:.2f} (target ≤ 0.20): "
            f"{'met' if ours_cpu / dram_cpu <= 0.2 else 'NOT met'}"
        )
    p_r, p_h = lat.get("rota"), lat.get("Huey")
    if p_r and p_h:
        r50, r99 = med([v[0] for v in p_r]), med([v[1] for v in p_r])
        h50, h99 = med([v[0] for v in p_h]), med([v[1] for v in p_h])
        ok = (
            r50 is not None
            and h50 is not None
            and r99 is not None
            and h99 is not None
            and r50 < h50
            and r99 < h99
        )
        lines.append(
            f"- latency below Huey's at p50 and p99: {fmt(r50, 2)}/{fmt(r99, 2)} ms vs {fmt(h50, 2)}/{fmt(h99, 2)} ms: {'met' if ok else 'NOT met'}"
        )
    ab = [(n[: -len(" before")], n) for n in drains if n.endswith(" before")]
    if ab:
        lines += ["", "A/B (this checkout vs `--before`, same run; after/before):", ""]
    for after, prior in ab:
        r_a, r_b, c_a, c_b = rate.get(after), rate.get(prior), total_cpu(after), total_cpu(prior)
        lines.append(
            f"- {after}: drain {fmt(r_b)} -> {fmt(r_a)}/s "
            f"({fmt(r_a / r_b if r_a and r_b else None, 2)}x); CPU µs/job {fmt(c_b)} -> "
            f"{fmt(c_a)} ({fmt(c_a / c_b if c_a and c_b else None, 2)}x)"
        )
    if ceiling:
        lines.append(
            f"- the probe's own ceiling (one process calling it, nothing else): sync "
            f"{ceiling.get('sync', 0):,.0f}/s, asyncio {ceiling.get('async', 0):,.0f}/s"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.defaults", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--tasks", type=int, default=10000, help="tasks per drain (10000)")
    ap.add_argument("--reps", type=int, default=2, help="passes, interleaved (2)")
    ap.add_argument("--cap", type=float, default=5.0, help="drain cut, seconds (5)")
    ap.add_argument("--lat-count", type=int, default=500)
    ap.add_argument("--lat-rate", type=float, default=100.0)
    ap.add_argument("--peers-src", default=str(DEFAULT_PEERS_SRC))
    ap.add_argument("--only", action="append", default=[], help="rows whose name has this")
    ap.add_argument(
        "--variant", action="append", default=[], help='extra rota sync row: "label=flags"'
    )
    ap.add_argument("--no-ceiling", action="store_true", help="skip the probe ceiling")
    ap.add_argument(
        "--before",
        metavar="CHECKOUT",
        help="A/B: also run each rota row with the rota of CHECKOUT (e.g. ../main), same run",
    )
    a = ap.parse_args(argv)
    with bench_session(a) as b:
        res = measure(b, a.reps)
        from bench.probe_ceiling import measure as probe_measure

        ceiling = {} if a.no_ceiling else probe_measure(b.port, 20000)
        table = render(res, a, ceiling)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%d-%H%M")
    (RESULTS / f"defaults-{stamp}.md").write_text(table + "\n")
    raw = {k: [d.__dict__ for d in v] for k, v in res["drains"].items()}
    (RESULTS / f"defaults-{stamp}.json").write_text(
        json.dumps({"drains": raw, "latency": res["latency"]}, indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
