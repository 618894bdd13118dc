"""rota beside Celery, RQ, Dramatiq and Huey on one Redis: ``python -m bench.peers``.

One command, one run, one Redis: starts its own ``redis-server`` on a free port (no
persistence), runs the peers through a copy of ``shared/bench-peers`` (each peer in that
copy's own virtualenv, never in rota's), then measures rota against the same server the
same way, stops the server by its pid, and prints one markdown table with rota's ratios
to the best peer. The table is also written to ``bench/results/peers-<date>.md``.

Metrics, as bench-peers defines them (N tasks, medians of ``--reps``):

* **enqueue single / bulk**: tasks/s from one producer, ``task.submit(...)`` per task /
  ``task.submit_many(...)`` in chunks of 1,000 (the peers' bulk calls use 1,000 too);
* **drain**: the queue pre-filled with N tasks, then the worker process(es) started;
  tasks/s from the first task's start to the N-th task's start (the probe), cut at
  ``DRAIN_CAP`` s. rota's placement goes through its scheduler, so every rota run also has
  one ``rota scheduler`` process, started after the fill (as the peers fill with no consumer
  running), just before the worker(s);
* **latency p50/p99**: submit -> task start for a trickle of 500 tasks at 100/s to an idle,
  waiting worker (through the scheduler's placement);
* every task runs the peers' probe (one ``INCR``; one ``RPUSH`` for latency): rota's
  ``async def`` task its asyncio twin ``aprobe``, as bench-peers runs taskiq and arq, the
  sync task in the pool ``probe`` with redis-py (opt-in row ``async1-blocking``: the sync
  probe on the event loop); rota is also
  run without it (``peer.noop``): drain from the store's ``started_at``/``finished_at``,
  latency from ``started_at - created_at`` (Redis' clock);
* **failover**: a worker holding running jobs is SIGKILLed; the time until every one of
  them has started on the other node, against the scheduler's failure timeout.

For rota's drain runs it also records where the time goes: Redis commands and Redis CPU
per job, and CPU per job of the worker and scheduler processes; ``--profile`` adds
py-spy profiles of the worker and scheduler and per-script Redis time (SLOWLOG).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_PEERS_SRC = ROOT.parent / "shared" / "bench-peers"
APP = "bench.peer_apps:app"
PEER_ORDER = ["celery", "rq", "dramatiq", "huey", "arq", "taskiq"]
DEFAULT_SYSTEMS = "celery,rq,dramatiq,huey"
# the probe's keys (bench-peers' common.py)
K_CNT, K_T0, K_T1, K_DONE, K_LAT = "bench:cnt", "bench:t0", "bench:t1", "bench:done", "bench:lat"
HOLD_KEY = "bench:hold"
# targets from the issue
TARGET_DRAIN_1 = 10.0  # x the fastest peer, one worker process
TARGET_DRAIN_2 = 20_000.0  # tasks/s, two worker processes
TARGET_BULK = 50_000.0
TARGET_P50 = 0.9  # ms
TARGET_P99 = 2.0  # ms
TARGET_FAILOVER_SLACK = 1.0  # s over the failure timeout


def log(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


def median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


def pct(xs: Sequence[float], p: float) -> float:
    """The percentile exactly as bench-peers computes it."""
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def fmt(x: float | None, nd: int = 0) -> str:
    return "-" if x is None else f"{x:,.{nd}f}"


# ---- processes ---------------------------------------------------------------------------
@dataclass
class Proc:
    """A process we started in its own session: stopped as a group, by its pid."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)

    def stop(self, grace: float = 5.0) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        self.kill()  # the group: pool children and stragglers too


def spawn(name: str, cmd: list[str], env: dict[str, str], log_dir: Path, cwd: Path = ROOT) -> Proc:
    path = log_dir / f"{name}.log"
    with open(path, "ab") as out:
        popen = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Proc(name, popen, path)


def group_cpu(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group ``pgid``."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields[2] is pgrp (the 5th field of stat)
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """Our own redis-server on a free port, without persistence; stopped by its pid."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.work = work
        self.proc: Proc | None = None

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("redis-server not found (apt-get install -y redis-server)")
        cmd = [
            exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--dir", str(self.work),
            "--logfile", str(self.work / "redis.log"),
        ]  # fmt: skip
        self.proc = spawn("redis-server", cmd, dict(os.environ), self.work, cwd=self.work)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or not self.proc.alive():
                    raise SystemExit(f"redis-server did not start:\n{self.proc.tail()}") from None
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(grace=5)
            self.proc = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


# ---- the peers ---------------------------------------------------------------------------
def prepare_peers(src: Path, dst: Path) -> None:
    """Copy bench-peers' scripts to ``dst`` (its .venv there, if any, is kept and reused)."""
    if not (src / "bench.py").exists():
        raise SystemExit(f"no bench-peers at {src} (use --peers-src)")
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_file():
            target = dst / item.name
            with contextlib.suppress(FileNotFoundError):
                target.chmod(0o644)
            shutil.copyfile(item, target)
            target.chmod(0o755 if os.access(item, os.X_OK) else 0o644)
    results = dst / "results"
    if results.exists():
        for old in results.glob("*.json"):
            old.unlink()


def run_peers(a: argparse.Namespace, port: int, dst: Path) -> list[dict[str, Any]]:
    systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    env = dict(os.environ)
    env.update(
        BENCH_REDIS_PORT=str(port),
        SYSTEMS=" ".join(systems),
        REPS=str(a.reps),
        N=str(a.tasks),
        TUNED="1" if a.tuned else "0",
    )
    env.pop("PYTHONPATH", None)
    log(f"== peers {systems} (N={a.tasks}, reps={a.reps}) in {dst}; redis :{port}")
    start = time.monotonic()
    proc = subprocess.Popen(
        ["bash", str(dst / "run.sh"), str(a.tasks)],
        cwd=dst,
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        proc.wait(a.peer_timeout)
    except subprocess.TimeoutExpired:
        log(f"!! peers still running after {a.peer_timeout:.0f} s: stopped; partial results")
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(3)
    log(f"== peers done in {time.monotonic() - start:.0f} s")
    out = []
    for path in sorted((dst / "results").glob("*.json")):
        with open(path) as f:
            out.append(json.load(f))
    out.sort(key=lambda r: PEER_ORDER.index(r["system"]) if r["system"] in PEER_ORDER else 99)
    return out


# ---- rota ------------------------------------------------------------------------------------
@dataclass
class Settings:
    tasks: int
    reps: int
    drain_cap: float
    lat_count: int
    lat_rate: float
    concurrency: int
    prefetch: int
    processes: int
    bulk_chunk: int
    failure_timeout: float
    profile: bool


@dataclass
class DrainStats:
    rate: float
    partial: bool
    scripts: float = 0.0  # rota's Lua scripts (FCALL of its function library) per job
    lua_us: float = 0.0  # Redis time in those scripts per job, µs (INFO commandstats)
    redis_cpu_us: float = 0.0  # redis-server process CPU per job (/proc)
    worker_us: float = 0.0  # worker process group(s) CPU per job
    sched_us: float = 0.0  # scheduler process CPU per job
    by_command: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass
class Config:
    """One rota row: a task and a number of worker processes."""

    key: str  # for --only
    label: str
    task: str
    workers: int
    probe: bool
    latency: bool  # also measure latency with this config
    enqueue: bool  # its fills are timed enqueue samples


CONFIGS = [
    Config("async1", "rota async, 1 worker proc + scheduler", "peer.probe", 1, True, True, True),
    Config(
        "sync1",
        "rota sync (pool), 1 worker proc + scheduler",
        "peer.probe_sync",
        1,
        True,
        True,
        True,
    ),
    Config("async2", "rota async, 2 worker procs + scheduler", "peer.probe", 2, True, False, True),
    Config(
        "sync2",
        "rota sync (pool), 2 worker procs + scheduler",
        "peer.probe_sync",
        2,
        True,
        False,
        True,
    ),
    Config("async1-np", "rota async, no probe, 1 worker proc", "peer.noop", 1, False, True, False),
    Config(
        "sync1-np",
        "rota sync (pool), no probe, 1 worker proc",
        "peer.noop_sync",
        1,
        False,
        False,
        False,
    ),
    Config(
        "async2-np", "rota async, no probe, 2 worker procs", "peer.noop", 2, False, False, False
    ),
    Config(  # opt-in (--only): the sync redis-py probe, blocking the event loop
        "async1-blocking",
        "rota async, blocking probe, 1 worker proc",
        "peer.probe_blocking",
        1,
        True,
        False,
        False,
    ),
]
DEFAULT_CONFIGS = {c.key for c in CONFIGS if c.key != "async1-blocking"}


class RotaBench:
    def __init__(self, s: Settings, port: int, peers_dir: Path, work: Path, redis_pid: int):
        self.s = s
        self.port = port
        self.peers_dir = peers_dir
        self.work = work
        self.redis_pid = redis_pid
        self.r = redis.Redis(port=port, socket_timeout=None, decode_responses=True)
        self.procs: list[Proc] = []
        self.profile_report = ""
        self.url = ""
        self.prefix = ""
        os.environ["BENCH_REDIS_PORT"] = str(port)
        os.environ["BENCH_PEERS_DIR"] = str(peers_dir)
        from bench import peer_apps  # after the env above: it loads the probe

        self.app = peer_apps.app

    # ---- plumbing -------------------------------------------------------------------
    def fresh(self) -> None:
        """A clean database and a new rota prefix (stops what the last run started)."""
        self.stop_all()
        self.r.flushdb()
        self.prefix = f"rb{uuid.uuid4().hex[:8]}"
        self.url = f"redis://127.0.0.1:{self.port}/0?prefix={self.prefix}"
        self.app.close()
        self.app.store_url = self.url

    def key(self, *parts: str) -> str:
        return f"{self.prefix}:{{{self.prefix}}}:" + ":".join(parts)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["ROTA_STORE"] = self.url
        env["BENCH_REDIS_PORT"] = str(self.port)
        env["BENCH_PEERS_DIR"] = str(self.peers_dir)
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)
        return env

    def rota(self, name: str, *args: str) -> Proc:
        cmd = [sys.executable, "-m", "rota", *args, "--log-level", "WARNING"]
        p = spawn(name, cmd, self.env, self.work)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in self.procs:
            p.stop(grace=3)
        self.procs = []

    def check_alive(self) -> None:
        for p in self.procs:
            if not p.alive():
                raise RuntimeError(f"{p.name} exited ({p.popen.returncode}):\n{p.tail()}")

    def wait_until(self, check: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.01)

    def start_scheduler(self, *extra: str) -> Proc:
        p = self.rota("scheduler", "scheduler", "--store", self.url, *extra)
        lease = self.key("lease", "scheduler")
        self.wait_until(lambda: bool(self.r.hget(lease, "holder")), "the scheduler to lead")
        return p

    def start_worker(self, name: str, *extra: str, concurrency: int | None = None) -> Proc:
        s = self.s
        c = concurrency or s.concurrency
        return self.rota(
            f"worker-{name}",
            "worker",
            APP,
            "--name",
            name,
            "--concurrency",
            str(c),
            "--prefetch",
            str(s.prefetch if concurrency is None else 0),
            "--processes",
            str(s.processes),
            "--grace",
            "1",
            *extra,
        )

    def live_nodes(self) -> int:
        return int(self.r.zcard(self.key("nodes:alive")))

    # ---- enqueue -------------------------------------------------------------------
    def fill(self, task_name: str, n: int, mode: str, probe: bool) -> tuple[float, list[str]]:
        """Submit ``n`` jobs (``single`` or ``bulk``); tasks/s and the job ids."""
        task = self.app.get_task(task_name)
        args: tuple[Any, ...] = (n, 0) if probe else ()
        ids: list[str] = []
        t = time.perf_counter()
        if mode == "single":
            for _ in range(n):
                ids.append(task.submit(*args).id)
        else:
            chunk = self.s.bulk_chunk
            for start in range(0, n, chunk):
                ids.extend(h.id for h in task.submit_many([args] * min(chunk, n - start)))
        return n / (time.perf_counter() - t), ids

    # ---- drain ---------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        stats = self.r.info("commandstats")
        return {
            "cmd": {k.removeprefix("cmdstat_"): (v["calls"], v["usec"]) for k, v in stats.items()},
            "redis": group_cpu(self.redis_pid),
            "workers": sum(group_cpu(p.pid) for p in self.procs if p.name.startswith("worker")),
            "sched": sum(group_cpu(p.pid) for p in self.procs if p.name == "scheduler"),
            "t": time.monotonic(),
        }

    def costs(self, a: dict[str, Any], b: dict[str, Any], jobs: int) -> DrainStats:
        jobs = max(jobs, 1)
        by = {}
        for cmd, (calls, usec) in b["cmd"].items():
            c0, u0 = a["cmd"].get(cmd, (0, 0))
            if calls - c0 > 0:
                by[cmd] = ((calls - c0) / jobs, (usec - u0) / jobs)
        return DrainStats(
            rate=0.0,
            partial=False,
            scripts=by.get("fcall", (0.0, 0.0))[0],
            lua_us=by.get("fcall", (0.0, 0.0))[1],
            redis_cpu_us=(b["redis"] - a["redis"]) / jobs * 1e6,
            worker_us=(b["workers"] - a["workers"]) / jobs * 1e6,
            sched_us=(b["sched"] - a["sched"]) / jobs * 1e6,
            by_command=by,
        )

    def drain(
        self, cfg: Config, mode: str, n: int | None = None, profile: bool = False
    ) -> tuple[float | None, DrainStats]:
        """Fill (timed, in ``mode``), start the worker(s), time the drain."""
        n = n or self.s.tasks
        self.fresh()
        # Like the peers' fills: one producer and Redis, no consumer yet (a running
        # scheduler would wake for every submit).
        rate, ids = self.fill(cfg.task, n, mode, cfg.probe)
        self.app.close()
        self.start_scheduler()
        slow = self.profile_start() if profile else None
        for i in range(cfg.workers):
            self.start_worker(f"w{i}")
        if slow is not None:
            self.wait_until(lambda: bool(self.r.exists(K_T0)), "the first task to start", 120)
            self.spy(slow)
        if cfg.probe:
            stats = self.drain_probe(n, 60.0 if profile else self.s.drain_cap)
        else:
            stats = self.drain_store(n, ids)
        if slow is not None:
            self.profile_stop(slow, cfg)
        self.stop_all()
        return (rate if cfg.enqueue else None), stats

    def drain_probe(self, n: int, cap: float) -> DrainStats:
        """As bench-peers' drain(): first probe -> N-th probe, or over the first ``cap`` s."""
        self.wait_until(lambda: bool(self.r.exists(K_T0)), "the first task to start", 120)
        before = self.snapshot()
        done0 = int(self.r.get(K_CNT) or 0)
        t0 = float(self.r.get(K_T0) or 0)
        left = max(1, int(cap - (time.time() - t0)))
        got = self.r.blpop([K_DONE], timeout=left)
        after = self.snapshot()
        if got:
            rate, partial, done = n / (float(self.r.get(K_T1) or 0) - t0), False, n
        else:
            done = int(self.r.get(K_CNT) or 0)
            rate, partial = done / (time.time() - t0), True
        st = self.costs(before, after, done - done0)
        st.rate, st.partial = rate, partial
        return st

    def drain_store(self, n: int, ids: list[str]) -> DrainStats:
        """Without the probe: completions counted from the store; first started_at to the
        last finished_at (Redis' clock)."""
        counts = self.key("counts")

        def succeeded() -> int:
            return int(self.r.hget(counts, "succeeded:default") or 0)

        self.wait_until(lambda: succeeded() > 0 or self.started_any(), "the first job", 120)
        before = self.snapshot()
        done0 = succeeded()
        self.wait_until(lambda: succeeded() >= n, f"{n} jobs to succeed", 60 + n / 200)
        after = self.snapshot()
        first, last = float("inf"), 0.0
        for i in range(0, len(ids), 2000):
            pipe = self.r.pipeline(transaction=False)
            for job_id in ids[i : i + 2000]:
                pipe.hmget(self.key("job", job_id), "started_at", "finished_at")
            for started, finished in pipe.execute():
                first = min(first, float(started))
                last = max(last, float(finished))
        st = self.costs(before, after, n - done0)
        st.rate = n / (last - first)
        return st

    def started_any(self) -> bool:
        return int(self.r.zcard(self.key("running"))) > 0

    # ---- latency -------------------------------------------------------------------
    def latency(self, cfg: Config) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
        """Probe latencies (as bench-peers) and store-clock latencies (started_at -
        created_at) of the same jobs; a no-probe task has only the latter."""
        s = self.s
        self.fresh()
        self.start_scheduler()
        self.start_worker("lat")
        self.wait_until(lambda: self.live_nodes() >= 1, "the worker to register")
        task = self.app.get_task(cfg.task)
        counts = self.key("counts")

        def trickle(count: int, rate: float) -> list[str]:
            ids = []
            t0 = time.perf_counter()
            for i in range(count):
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                ids.append((task.submit(0, time.time()) if cfg.probe else task.submit()).id)
            return ids

        def finished() -> int:
            return int(self.r.hget(counts, "succeeded:default") or 0)

        trickle(20, 200)  # warm-up: worker up, imports done, connections open
        self.wait_until(lambda: finished() >= 20, "the warm-up tasks", 120)
        probe_runs, store_runs = [], []
        for _ in range(s.reps):
            self.r.delete(K_LAT)
            time.sleep(1.0)  # let the worker go idle
            before = finished()
            ids = trickle(s.lat_count, s.lat_rate)
            deadline = time.monotonic() + 60
            while finished() - before < s.lat_count and time.monotonic() < deadline:
                time.sleep(0.01)
            if finished() - before < s.lat_count:
                log(f"  latency: only {finished() - before}/{s.lat_count} finished within 60 s")
            lat = [float(x) * 1000 for x in self.r.lrange(K_LAT, 0, -1)]
            if lat:
                probe_runs.append({"p50": pct(lat, 50), "p99": pct(lat, 99), "max": max(lat)})
            pipe = self.r.pipeline(transaction=False)
            for job_id in ids:
                pipe.hmget(self.key("job", job_id), "created_at", "started_at")
            st = [(float(b) - float(a)) * 1000 for a, b in pipe.execute() if a and b]
            if st:
                store_runs.append({"p50": pct(st, 50), "p99": pct(st, 99), "max": max(st)})
        self.app.close()
        self.stop_all()
        return probe_runs, store_runs

    # ---- failover ------------------------------------------------------------------
    def failover(self, jobs: int = 4) -> dict[str, float]:
        """SIGKILL a node running ``jobs`` jobs; seconds until each started on the other."""
        f = self.s.failure_timeout
        self.fresh()
        self.start_scheduler("--failure-timeout", str(f))
        victim = self.start_worker("victim", "--lease-ttl", str(f), concurrency=jobs)
        self.wait_until(lambda: self.live_nodes() >= 1, "the victim to register")
        hold = self.app.get_task("peer.hold").options(retries=3)
        hold.submit_many([(60.0,)] * jobs)
        self.app.close()
        self.wait_until(lambda: self.r.llen(HOLD_KEY) >= jobs, "the held jobs to start", 30)
        self.start_worker("survivor", "--lease-ttl", str(f), concurrency=jobs)
        self.wait_until(lambda: self.live_nodes() >= 2, "the survivor to register")
        time.sleep(1.5)  # both nodes heartbeating normally
        killed_at = time.time()
        victim.kill()
        self.procs.remove(victim)
        self.wait_until(
            lambda: self.r.llen(HOLD_KEY) >= 2 * jobs, "the jobs to start elsewhere", f + 30
        )
        restarts = [
            float(x.split()[1]) - killed_at
            for x in self.r.lrange(HOLD_KEY, jobs, -1)
            if int(x.split()[0]) != victim.pid
        ]
        self.stop_all()
        return {"timeout": f, "first": min(restarts), "last": max(restarts), "jobs": len(restarts)}

    # ---- profiling -----------------------------------------------------------------
    def profile_start(self) -> dict[str, Any]:
        """SLOWLOG every command (per-script Redis time); py-spy follows once workers start."""
        old = {k: self.r.config_get(k)[k] for k in ("slowlog-log-slower-than", "slowlog-max-len")}
        self.r.config_set("slowlog-max-len", 1_000_000)
        self.r.config_set("slowlog-log-slower-than", 0)
        self.r.slowlog_reset()
        return {"old": old, "spies": [], "spied": False}

    def spy(self, ctx: dict[str, Any]) -> None:
        exe = shutil.which("py-spy")
        if exe is None or ctx["spied"]:
            return
        ctx["spied"] = True
        for p in self.procs:
            out = self.work / f"pyspy-{p.name}.txt"
            cmd = [exe, "record", "--pid", str(p.pid), "--rate", "250", "--format", "raw"]
            cmd += ["--idle", "--threads"]
            cmd += ["--nonblocking", "-o", str(out), "--duration", "30"]
            if p.name.startswith("worker"):
                cmd.append("--subprocesses")
            ctx["spies"].append((p.name, out, spawn(f"pyspy-{p.name}", cmd, self.env, self.work)))

    def profile_stop(self, ctx: dict[str, Any], cfg: Config) -> None:
        entries = self.r.slowlog_get(1_000_000)
        for k, v in ctx["old"].items():
            self.r.config_set(k, v)
        from rota.store.redis.library import LIBRARY

        per: Counter[str] = Counter()
        calls: Counter[str] = Counter()
        for e in entries:
            cmd = e["command"]
            if isinstance(cmd, bytes):
                cmd = cmd.decode(errors="replace")
            words = cmd.split()
            what = words[0].upper() if words else "?"
            if what == "FCALL" and len(words) > 1:
                what = "lua:" + words[1].removeprefix(f"{LIBRARY}_")
            per[what] += e["duration"]
            calls[what] += 1
        n = int(self.r.get(K_CNT) or 0) if cfg.probe else self.s.tasks
        n = max(n, 1)
        lines = [f"Redis time per command ({cfg.label}, SLOWLOG of every command, {n} jobs):"]
        lines.append("| command | calls/job | µs per call | µs per job |")
        lines.append("|---|---|---|---|")
        for what, us in per.most_common(15):
            lines.append(
                f"| {what} | {calls[what] / n:.3f} | {us / calls[what]:.1f} | {us / n:.1f} |"
            )
        for _name, _out, p in ctx["spies"]:
            with contextlib.suppress(Exception):
                p.popen.send_signal(signal.SIGINT)
        for _name, _out, p in ctx["spies"]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(20)
            p.kill()
        for name, out, _p in ctx["spies"]:
            if out.exists():
                lines.append("")
                lines.append(summarize_pyspy(out, name))
        text = "\n".join(lines)
        self.profile_report = f"{self.profile_report}\n\n{text}".strip()
        log(text)


MARKERS = [
    # worker: event loop
    "WorkerNode._claim_loop",
    "WorkerNode._launch",
    "WorkerNode._execute",
    "run_async",
    "aprobe",
    "WorkerNode._record",
    "WorkerNode._flush",
    "ProcessPool.run",
    "ProcessPool._dispatch",
    "ProcessPool._on_readable",
    "BaseEventLoop.run_in_executor",
    "EpollSelector.select",
    # store calls (worker's I/O and wait threads, scheduler)
    "RedisStore.start_jobs",
    "RedisAsyncClaims.complete_and_start",
    "RedisAsyncClaims.wait_and_start",
    "RedisAsyncClaims._request",
    "job_from_hash",
    "RedisStore.complete",
    "RedisStore.heartbeat",
    "RedisStore.wait_for_assignments",
    "RedisStore.acquire_lease",
    "RedisStore.promote_due",
    "RedisStore.reap",
    "RedisStore.list_nodes",
    "RedisStore.pending_jobs",
    "place",
    "RedisStore.assign",
    "RedisStore.wait_for_pending",
    "RedisStore.wait_for_pending_snapshot",
    "RedisStore.placement_snapshot",
    "RedisStore.put_stats",
    # pool children
    "_execute",
    "probe_sync",
    "_HiredisParser.read_from_socket",
    "_socket_can_read",
]


def summarize_pyspy(path: Path, name: str) -> str:
    """Per thread (wall time: py-spy --idle --threads), the share of samples inside each
    marker function, and how much of that was spent waiting for a Redis reply."""
    threads: dict[str, Counter[str]] = {}
    waits: dict[str, Counter[str]] = {}
    totals: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        k = int(count)
        frames = stack.split(";")
        tname = next((f.split(": ", 1)[-1] for f in frames if f.startswith("thread (")), "?")
        proc = next((f for f in frames if f.startswith("process ")), "")
        if "child_main" in stack:
            tname = "pool children"
        elif proc and "rota" not in proc.split(":", 1)[-1][:200]:
            tname = f"{tname} (other)"
        funcs = {f.split(" (")[0] for f in frames}
        waiting = frames[-1].split(" (")[0] in (
            "_HiredisParser.read_from_socket",
            "_socket_can_read",
            "EpollSelector.select",
            "Condition.wait",
            "_worker",
            "Event.wait",
        )
        totals[tname] += k
        c = threads.setdefault(tname, Counter())
        w = waits.setdefault(tname, Counter())
        for m in MARKERS:
            if m in funcs:
                c[m] += k
                if waiting:
                    w[m] += k
        c["(all)"] += k
        if waiting:
            w["(all)"] += k
    out = [f"py-spy {name} ({path.name}): share of each thread's samples (wall time)"]
    for tname, total in totals.most_common():
        if total < 0.02 * sum(totals.values()):
            continue
        c, w = threads[tname], waits[tname]
        out.append(f"  thread {tname}: {total} samples, {w['(all)'] / total:.0%} blocked/idle")
        for m, n in c.most_common():
            if m == "(all)" or n < 0.01 * total:
                continue
            out.append(f"    {n / total:6.1%}  {m}  (blocked {w[m] / max(n, 1):.0%})")
    return "\n".join(out)


# ---- the rota measurements, as bench-peers' bench.py does them -------------------------------
def run_rota(b: RotaBench, only: set[str] | None) -> dict[str, Any]:
    s = b.s
    configs = [c for c in CONFIGS if (c.key in DEFAULT_CONFIGS if only is None else c.key in only)]
    enq: dict[str, list[float]] = {"single": [], "bulk": []}
    res: dict[str, Any] = {"enqueue": enq, "configs": {}}
    for c in configs:
        res["configs"][c.label] = {"drain": [], "partial": [], "costs": []}
    modes = ["single", "bulk"]
    for rep in range(s.reps):
        for i, c in enumerate(configs):
            mode = modes[(rep + i) % 2] if c.enqueue else "bulk"
            try:
                rate, st = b.drain(c, mode)
            except Exception as exc:  # keep what the other runs measured
                log(f"!! rota rep{rep} {c.label} failed: {exc}")
                b.stop_all()
                continue
            if rate is not None:
                enq[mode].append(rate)
            d = res["configs"][c.label]
            d["drain"].append(st.rate)
            d["partial"].append(st.partial)
            d["costs"].append(st.__dict__)
            log(
                f"  rota rep{rep} {c.label}: "
                + (f"enqueue[{mode}]={rate:,.0f}/s  " if rate is not None else "")
                + f"drain={st.rate:,.0f}/s{'  (cap hit)' if st.partial else ''}  "
                f"{st.scripts:.2f} scripts {st.lua_us:.0f} µs/job in Lua, "
                f"redis-server {st.redis_cpu_us:.0f} µs/job, "
                f"worker {st.worker_us:.0f} µs/job, scheduler {st.sched_us:.0f} µs/job"
            )
    if s.profile:  # extra runs, not counted: py-spy and SLOWLOG slow everything down
        for c in configs:
            if c.workers == 1 and c.probe:
                log(f"  rota profile run: {c.label}, N={3 * s.tasks}")
                b.drain(c, "bulk", n=3 * s.tasks, profile=True)
    for m in modes:  # top up so each enqueue mode has >= reps samples
        while len(enq[m]) < s.reps:
            b.fresh()
            rate, _ = b.fill("peer.probe", s.tasks, m, True)
            b.app.close()
            enq[m].append(rate)
            log(f"  rota enqueue[{m}]={rate:,.0f}/s")
    res["enqueue_median"] = {m: median(v) for m, v in enq.items()}
    for c in configs:
        d = res["configs"][c.label]
        d["drain_median"] = median(d["drain"])
        if c.latency:
            try:
                probe_runs, store_runs = b.latency(c)
            except Exception as exc:
                log(f"!! rota latency {c.label} failed: {exc}")
                b.stop_all()
                continue
            runs = probe_runs if c.probe else store_runs
            d["latency"] = runs
            d["latency_store"] = store_runs
            d["lat_p50_median"] = median([r["p50"] for r in runs])
            d["lat_p99_median"] = median([r["p99"] for r in runs])
            log(
                f"  rota latency[{c.label}] p50={[round(r['p50'], 2) for r in runs]} "
                f"p99={[round(r['p99'], 2) for r in runs]} ms"
                + ("" if c.probe else " (store clock)")
            )
    if only is None or "failover" in only:
        try:
            fo = b.failover()
        except Exception as exc:
            log(f"!! rota failover failed: {exc}")
            b.stop_all()
            return res
        res["failover"] = fo
        log(
            f"  rota failover: {fo['jobs']:.0f} jobs restarted {fo['first']:.2f}..{fo['last']:.2f} s "
            f"after SIGKILL (failure timeout {fo['timeout']:.1f} s)"
        )
    return res


def probe_ceiling(b: RotaBench, n: int) -> dict[str, float]:
    """The peers' probe alone in one process, no task queue (``bench.probe_ceiling``)."""
    cmd = [sys.executable, "-m", "bench.probe_ceiling", "--port", str(b.port), "--tasks", str(n)]
    out = subprocess.run(cmd, env=b.env, cwd=ROOT, capture_output=True, text=True, check=True)
    res: dict[str, float] = json.loads(out.stdout)
    log(
        f"  probe alone (no task queue), one process: {res['async']:,.0f}/s asyncio "
        f"({res['async_cpu_us']:.0f} µs CPU each), {res['sync']:,.0f}/s sync"
    )
    return res


# ---- report -----------------------------------------------------------------------------------
def peer_rows(peers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in peers:
        e = r["enqueue_median"]
        for w, d in r["workers"].items():
            rows.append(
                {
                    "system": f"{r['system']} {r['version'].split()[0]}",
                    "config": w,
                    "single": e.get("single"),
                    "bulk": e.get("bulk"),
                    "drain": d.get("drain_median"),
                    "partial": any(d.get("partial", [])),
                    "p50": d.get("lat_p50_median"),
                    "p99": d.get("lat_p99_median"),
                }
            )
    return rows


def best_of(rows: list[dict[str, Any]]) -> dict[str, tuple[float, str] | None]:
    best: dict[str, tuple[float, str] | None] = {}
    for col, better in (("single", max), ("bulk", max), ("drain", max), ("p50", min), ("p99", min)):
        vals = [(r[col], r["system"].split()[0]) for r in rows if r[col] is not None]
        best[col] = better(vals, key=lambda v: v[0]) if vals else None
    return best


def ratio(value: float | None, best: tuple[float, str] | None, lower_better: bool) -> str:
    if value is None or best is None or not value or not best[0]:
        return ""
    x = best[0] / value if lower_better else value / best[0]
    return f" ({x:.1f}x)" if x < 100 else f" ({x:,.0f}x)"


def render(
    peers: list[dict[str, Any]], rota_res: dict[str, Any] | None, a: argparse.Namespace, meta: str
) -> str:
    prows = peer_rows(peers)
    best = best_of(prows)
    hdr = ["system", "worker config", "enq/s single", "enq/s bulk", "drain/s", "p50 ms", "p99 ms"]
    lines = ["| " + " | ".join(hdr) + " |", "|" + "|".join("---" for _ in hdr) + "|"]
    for r in prows:
        lines.append(
            f"| {r['system']} | {r['config']} | {fmt(r['single'])} | {fmt(r['bulk'])} | "
            f"{fmt(r['drain'])}{'*' if r['partial'] else ''} | {fmt(r['p50'], 2)} | "
            f"{fmt(r['p99'], 2)} |"
        )
    if prows:

        def cell(col: str, nd: int) -> str:
            b = best[col]
            return "-" if b is None else f"{b[0]:,.{nd}f} ({b[1]})"

        lines.append(
            f"| **best peer** | | {cell('single', 0)} | {cell('bulk', 0)} | {cell('drain', 0)} | "
            f"{cell('p50', 2)} | {cell('p99', 2)} |"
        )
    if rota_res:
        e = rota_res["enqueue_median"]
        first = True
        for label, d in rota_res["configs"].items():
            cfg = next(c for c in CONFIGS if c.label == label)
            name, _, config = label.partition(", ")
            if first:
                single = fmt(e["single"]) + ratio(e["single"], best.get("single"), False)
                bulk = fmt(e["bulk"]) + ratio(e["bulk"], best.get("bulk"), False)
            else:
                single = bulk = "″"
            first = False
            drain = d.get("drain_median")
            partial = "*" if any(d["partial"]) else ""
            p50, p99 = d.get("lat_p50_median"), d.get("lat_p99_median")
            clock = "" if cfg.probe else " (store)"
            lines.append(
                f"| **{name}** | {config} | {single} | {bulk} | "
                f"{fmt(drain)}{partial}{ratio(drain, best.get('drain'), False)} | "
                + ("-" if p50 is None else f"{p50:.2f}{clock}{ratio(p50, best.get('p50'), True)}")
                + " | "
                + ("-" if p99 is None else f"{p99:.2f}{clock}{ratio(p99, best.get('p99'), True)}")
                + " |"
            )
    out = [meta, "", *lines, ""]
    out.append(
        f"N={a.tasks:,} tasks per enqueue run and per pre-filled drain run; {a.reps} reps, "
        "medians. (x) = rota ÷ best peer for throughput, best peer ÷ rota for latency: above 1 "
        "is rota ahead. '*' = drain cut at the cap (rate = tasks done / time). Every peer runs "
        "one worker process; every rota row also runs one `rota scheduler` process (placement "
        "goes through it), started after the fill, with the worker(s). Probe rows count "
        "completion with the peers' probe (one INCR per task; rota's async task awaits its "
        "asyncio twin, as taskiq and arq do); 'no probe' rows count it from the store (drain: "
        "first started_at to last finished_at; latency: started_at - created_at, Redis' clock, "
        "of the probe trickle's jobs). '″' = enqueue as in the row above. rota worker: "
        f"--concurrency {a.concurrency} --prefetch {a.prefetch} --processes {a.processes}."
    )
    if rota_res:
        out += ["", *targets(rota_res, best, a), "", *cost_table(rota_res)]
    return "\n".join(out)


NO_PROBE = {c.key: c.label for c in CONFIGS if c.key in ("async1-np", "async2-np")}


def targets(res: dict[str, Any], best: dict[str, tuple[float, str] | None], a: Any) -> list[str]:
    cfgs = res["configs"]

    def med(label: str, key: str) -> float | None:
        d = cfgs.get(label)
        return None if d is None else d.get(key)

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("**met**" if ok else "**missed**")

    out = ["Targets (from the issue):", ""]
    bd = best.get("drain")
    d1 = med(CONFIGS[0].label, "drain_median")
    need1 = 10 * bd[0] if bd else None
    out.append(
        "- drain, one worker process ≥ 10x the fastest peer"
        + (f" ({need1:,.0f}/s)" if need1 else "")
        + f": async {fmt(d1)}/s, sync {fmt(med(CONFIGS[1].label, 'drain_median'))}/s → "
        + verdict(None if d1 is None or need1 is None else d1 >= need1)
    )
    pc = res.get("probe_ceiling")
    if pc:
        out.append(
            f"  - the probe alone, in one process doing nothing else: {pc['async']:,.0f}/s "
            f"asyncio (64 at once, {pc['async_cpu_us']:.0f} µs CPU a call), "
            f"{pc['sync']:,.0f}/s sync: no system drains faster than that with the probe"
            + (
                f", so {need1:,.0f}/s with it is out of reach here"
                if need1 and need1 > max(pc["async"], pc["sync"])
                else ""
            )
        )
    n1 = med(NO_PROBE["async1-np"], "drain_median")
    if n1 is not None:
        out.append(
            f"  - without the probe (completions counted from the store): async {fmt(n1)}/s → "
            + verdict(None if need1 is None else n1 >= need1)
        )
    d2 = med(CONFIGS[2].label, "drain_median")
    out.append(
        f"- drain, two worker processes ≥ {TARGET_DRAIN_2:,.0f}/s: async {fmt(d2)}/s, sync "
        f"{fmt(med(CONFIGS[3].label, 'drain_median'))}/s → "
        + verdict(None if d2 is None else d2 >= TARGET_DRAIN_2)
    )
    n2 = med(NO_PROBE["async2-np"], "drain_median")
    if n2 is not None:
        out.append(f"  - without the probe: async {fmt(n2)}/s → " + verdict(n2 >= TARGET_DRAIN_2))
    bulk = res["enqueue_median"].get("bulk")
    out.append(
        f"- bulk submit ≥ {TARGET_BULK:,.0f}/s: {fmt(bulk)}/s (submit_many, chunks of "
        f"{a.bulk_chunk}) → " + verdict(None if bulk is None else bulk >= TARGET_BULK)
    )
    p50, p99 = med(CONFIGS[0].label, "lat_p50_median"), med(CONFIGS[0].label, "lat_p99_median")
    out.append(
        f"- latency through the scheduler p50 < {TARGET_P50} ms, p99 < {TARGET_P99} ms: "
        f"p50 {fmt(p50, 2)} ms, p99 {fmt(p99, 2)} ms (async, probe) → "
        + verdict(None if p50 is None or p99 is None else p50 < TARGET_P50 and p99 < TARGET_P99)
    )
    fo = res.get("failover")
    if fo:
        out.append(
            f"- dead node's jobs re-placed within failure timeout + {TARGET_FAILOVER_SLACK:.0f} s "
            f"({fo['timeout'] + TARGET_FAILOVER_SLACK:.1f} s): {fo['jobs']:.0f} running jobs of a "
            f"SIGKILLed worker started on the other node {fo['first']:.2f}..{fo['last']:.2f} s "
            "after the kill → " + verdict(fo["last"] <= fo["timeout"] + TARGET_FAILOVER_SLACK)
        )
    return out


def cost_table(res: dict[str, Any]) -> list[str]:
    out = [
        "Where rota's drain time goes (per job, median over reps; 'Lua' = Redis time inside "
        "rota's scripts (INFO commandstats of FCALL, their inner commands included); CPU from "
        "/proc, the probe's share included; inner commands = Redis commands per job and µs per "
        "job, mostly run by the scripts):",
        "",
        "| config | drain/s | scripts/job | Lua µs/job | redis-server CPU µs/job | "
        "worker CPU µs/job | scheduler CPU µs/job | top inner commands (calls/job, µs/job) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, d in res["configs"].items():
        cs = d["costs"]
        if not cs:
            continue

        def median_cost(key: str, cs: list[dict[str, Any]] = cs) -> float:
            return float(statistics.median(c[key] for c in cs))

        by = cs[len(cs) // 2]["by_command"]
        top = sorted(((k, v) for k, v in by.items() if k != "fcall"), key=lambda kv: -kv[1][1])[:4]
        tops = ", ".join(f"{k} {c:.2f}/{u:.1f}" for k, (c, u) in top)
        out.append(
            f"| {label} | {fmt(d.get('drain_median'))} | {median_cost('scripts'):.2f} | "
            f"{median_cost('lua_us'):.1f} | {median_cost('redis_cpu_us'):.1f} | {median_cost('worker_us'):.1f} | "
            f"{median_cost('sched_us'):.1f} | {tops} |"
        )
    return out


def meta_line(peers: list[dict[str, Any]], a: argparse.Namespace, redis_version: str) -> str:
    try:
        import rota

        rota_version = getattr(rota, "__version__", "?")
    except Exception:
        rota_version = "?"
    peer_versions = ", ".join(f"{p['system']} {p['version']}" for p in peers) or "no peers"
    return (
        f"rota {rota_version} vs {peer_versions} on one Redis {redis_version} "
        f"(own server, no persistence), {time.strftime('%Y-%m-%d %H:%M')}, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs"
    )


# ---- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=20000, help="N tasks per run (default 20000)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions, median (default 3)")
    ap.add_argument(
        "--systems", default=DEFAULT_SYSTEMS, help=f"peers, comma-separated ({DEFAULT_SYSTEMS})"
    )
    ap.add_argument("--skip-peers", action="store_true", help="rota only")
    ap.add_argument("--skip-rota", action="store_true", help="peers only")
    ap.add_argument("--tuned", action="store_true", help="also the peers' 'tuned:' configs")
    ap.add_argument("--peers-src", type=Path, default=DEFAULT_PEERS_SRC)
    ap.add_argument(
        "--peers-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "rota-bench-peers",
        help="where bench-peers is copied and run (its .venv is reused)",
    )
    ap.add_argument("--peer-timeout", type=float, default=3600, help="seconds for all peers")
    ap.add_argument("--drain-cap", type=float, default=5.0)
    ap.add_argument("--lat-count", type=int, default=500)
    ap.add_argument("--lat-rate", type=float, default=100.0)
    ap.add_argument("--concurrency", type=int, default=64, help="rota worker slots")
    ap.add_argument("--prefetch", type=int, default=64, help="rota worker prefetch")
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 2, help="pool size")
    ap.add_argument("--bulk-chunk", type=int, default=1000)
    ap.add_argument("--failure-timeout", type=float, default=5.0)
    ap.add_argument(
        "--only",
        default=None,
        help="rota runs, comma-separated: " + ",".join(c.key for c in CONFIGS) + ",failover",
    )
    ap.add_argument(
        "--profile", action="store_true", help="py-spy + SLOWLOG on the 1-process probe drains"
    )
    ap.add_argument("--out", type=Path, default=None, help="markdown output file")
    a = ap.parse_args(argv)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    work = Path(tempfile.mkdtemp(prefix="rota-bench-peers-run-"))
    server = RedisServer(work)
    peers: list[dict[str, Any]] = []
    rota_res: dict[str, Any] | None = None
    bench: RotaBench | None = None
    server.start()
    redis_version = str(redis.Redis(port=server.port).info("server")["redis_version"])
    log(f"redis-server {redis_version} pid {server.pid} on 127.0.0.1:{server.port}; logs in {work}")
    try:
        if not a.skip_peers:
            prepare_peers(a.peers_src, a.peers_dir)
            peers = run_peers(a, server.port, a.peers_dir)
        if not a.skip_rota:
            s = Settings(
                tasks=a.tasks,
                reps=a.reps,
                drain_cap=a.drain_cap,
                lat_count=a.lat_count,
                lat_rate=a.lat_rate,
                concurrency=a.concurrency,
                prefetch=a.prefetch,
                processes=a.processes,
                bulk_chunk=a.bulk_chunk,
                failure_timeout=a.failure_timeout,
                profile=a.profile,
            )
            peers_dir = a.peers_dir if (a.peers_dir / "common.py").exists() else a.peers_src
            bench = RotaBench(s, server.port, peers_dir, work, server.pid)
            only = None if a.only is None else {x.strip() for x in a.only.split(",")}
            log(f"== rota (N={a.tasks}, reps={a.reps})")
            rota_res = run_rota(bench, only)
            if only is None or {"async1", "async2"} & only:
                rota_res["probe_ceiling"] = probe_ceiling(bench, a.tasks)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if bench is not None:
            bench.stop_all()
            bench.app.close()
        server.stop()
    text = render(peers, rota_res, a, meta_line(peers, a, redis_version))
    cmd = "python -m bench.peers " + " ".join(argv if argv is not None else sys.argv[1:])
    profile = getattr(bench, "profile_report", "") if bench else ""
    doc = f"# rota vs peers on Redis\n\n`{cmd.strip()}`\n\n{text}\n"
    if profile:
        doc += f"\n## Profile\n\n```\n{profile}\n```\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = a.out or RESULTS / f"peers-{time.strftime('%Y-%m-%d')}.md"
    out.write_text(doc)
    with open(out.with_suffix(".json"), "w") as f:
        json.dump({"peers": peers, "rota": rota_res}, f, indent=1, default=str)
    print(text)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
