"""Fault-injection scenarios shared by ``tests/faults`` (CI profile) and ``bench.faults``
(both profiles). Each scenario drives a :class:`~tests.acceptance.conftest.Fleet` of real
``rota`` processes, injects its fault, checks the invariants with plain ``assert``s and
returns its figures (a dataclass the report renders)."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rota import Rota
from rota.core.model import JobRecord, NodeState
from rota.core.states import JobState
from rota.store import SCHEDULER_LEASE
from tests.acceptance.apps.basic import read_lines
from tests.acceptance.conftest import FAILURE_TIMEOUT, HEARTBEAT, LEADER_LEASE_TTL, Fleet

APP = "tests.faults.apps:app"


def start_worker(
    fleet: Fleet,
    name: str,
    *,
    concurrency: int = 8,
    processes: int | None = None,
    extra_env: dict[str, str] | None = None,
) -> None:
    """A worker on the fault suite's app (``extra_env`` e.g. a clock skew)."""
    if extra_env is None:
        fleet.worker(name, concurrency=concurrency, processes=processes, app=APP)
        return
    args = ["worker", APP, "--name", name, "--concurrency", str(concurrency)]
    args += ["--lease-ttl", "2.0", "--heartbeat", str(HEARTBEAT), "--grace", "5.0"]
    if processes is not None:
        args += ["--processes", str(processes)]
    fleet.start(name, args, env={**fleet.env(name), **extra_env})


def quantiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(min, median, max), 0s when empty."""
    if not values:
        return (0.0, 0.0, 0.0)
    return (min(values), statistics.median(values), max(values))


@dataclass
class Run:
    key: str
    nonce: str
    node: str
    pid: int
    start: float
    end: float | None = None


def runs_by_key(fleet: Fleet) -> dict[str, list[Run]]:
    """Every run the tasks logged, by job key, in start order."""
    runs: dict[str, Run] = {}
    by_key: dict[str, list[Run]] = defaultdict(list)
    for event, key, nonce, node, pid, at in read_lines(fleet.runs):
        if event == "start":
            run = Run(key, nonce, node, int(pid), float(at))
            runs[nonce] = run
            by_key[key].append(run)
        else:
            runs[nonce].end = float(at)
    for lst in by_key.values():
        lst.sort(key=lambda r: r.start)
    return by_key


def final_records(fleet: Fleet, ids: Sequence[str], timeout: float) -> dict[str, JobRecord]:
    records = fleet.wait_final(ids, timeout=timeout)
    bad = {i: (r.state.value, r.error) for i, r in records.items() if r.state != "succeeded"}
    assert not bad, f"{len(bad)} jobs did not succeed: {list(bad.items())[:5]}"
    return records


# ---- 1. kill -9 loop -----------------------------------------------------------------------
@dataclass
class KillLoop:
    store: str
    jobs: int
    workers: int
    concurrency: int
    kills: int
    in_flight_at_kills: list[int]
    lost: int
    duplicates: int
    duplicate_bound: int
    cut_short: int
    replace_s: list[float]
    seconds: float


def kill_loop(
    fleet: Fleet,
    client: Rota,
    *,
    jobs: int = 1500,
    kills: int = 5,
    workers: int = 3,
    concurrency: int = 8,
    ms: int = 100,
    interval: float = 1.0,
    seed: int = 1,
) -> KillLoop:
    """N jobs; while they run, SIGKILL a random worker and start a new one, ``kills``
    times. Every job succeeds once (one result, from a run that returned); every other
    run is one a kill cut short."""
    started = time.monotonic()
    rng = random.Random(seed)
    fleet.scheduler()
    current = [f"w{i}" for i in range(workers)]
    for name in current:
        start_worker(fleet, name, concurrency=concurrency)
    fleet.wait_nodes(workers, names=current)

    keys = [f"k{i:05d}" for i in range(jobs)]
    record = client.get_task("fault.record")
    handles = []
    for i in range(0, jobs, 1000):
        handles += record.submit_many([(k, ms) for k in keys[i : i + 1000]])
    key_of = {h.id: k for h, k in zip(handles, keys, strict=True)}
    ids = list(key_of)

    killed: dict[int, float] = {}  # pid -> time.time() of the kill
    in_flight: list[int] = []
    spare = workers
    for _ in range(kills):
        time.sleep(interval * (0.5 + rng.random()))
        fleet.check_alive()
        live = fleet.live_nodes()
        candidates = [n for n in current if n in live]
        victim = rng.choice(candidates)
        running = fleet.store.list_jobs(state=JobState.RUNNING, node_id=live[victim].id, limit=1000)
        in_flight.append(len(running))
        killed[fleet.procs[victim].pid] = time.time()
        fleet.kill(victim, signal.SIGKILL)
        current.remove(victim)
        replacement = f"w{spare}"
        spare += 1
        start_worker(fleet, replacement, concurrency=concurrency)
        current.append(replacement)

    records = fleet.wait_final(ids, timeout=60 + jobs * ms / 1000 / (workers * concurrency) * 3)
    lost = sum(1 for r in records.values() if r.state is not JobState.SUCCEEDED)
    lost += len(ids) - len(records)
    assert lost == 0, {
        i: (r.state.value, r.error) for i, r in records.items() if r.state != "succeeded"
    }

    by_key = runs_by_key(fleet)
    assert set(by_key) == set(keys), "some jobs never ran"
    duplicates = 0
    cut_short = 0
    replace: list[float] = []
    for job_id, rec in records.items():
        key = key_of[job_id]
        runs = by_key[key]
        result = rec.result_value()
        assert result["key"] == key
        kept = [r for r in runs if r.nonce == result["nonce"]]
        assert len(kept) == 1, (key, runs, result)  # one result, from one run...
        assert kept[0].end is not None, (key, kept)  # ...that returned
        assert rec.attempts >= len(runs), (key, rec.attempts, runs)
        for run in runs:
            if run is kept[0]:
                continue
            # Any other run was on a worker we killed (cut short, or its report lost).
            assert run.pid in killed, (key, run, "a duplicate run on a worker never killed")
            duplicates += 1
            if run.end is None:
                cut_short += 1
            later = [r.start for r in runs if r.start > run.start]
            if later:
                replace.append(min(later) - killed[run.pid])
        for run in runs:
            if run.end is None:
                assert run.pid in killed, (key, run, "a run without an end, never killed")
    bound = sum(in_flight) if duplicates <= sum(in_flight) else kills * concurrency
    assert duplicates <= kills * concurrency, (duplicates, kills, concurrency)
    fleet.wait_for(
        "every killed worker to be declared dead",
        lambda: set(killed) <= {n.spec.pid for n in fleet.nodes([NodeState.DEAD])},
        FAILURE_TIMEOUT + 10,
    )
    return KillLoop(
        store=fleet.url.split(":", 1)[0],
        jobs=jobs,
        workers=workers,
        concurrency=concurrency,
        kills=kills,
        in_flight_at_kills=in_flight,
        lost=lost,
        duplicates=duplicates,
        duplicate_bound=bound,
        cut_short=cut_short,
        replace_s=replace,
        seconds=time.monotonic() - started,
    )


# ---- 3. scheduler failover under load --------------------------------------------------------
@dataclass
class Failover:
    store: str
    kills: int
    jobs: int
    in_flight_at_kills: list[int]
    takeover_s: list[float]  # kill -> the new lease acquired (store clock)
    resume_s: list[float]  # kill -> first job started after placement by the new leader
    lost: int
    double_runs: int
    seconds: float


def failover(
    fleet: Fleet,
    client: Rota,
    *,
    kills: int = 3,
    batch: int = 200,
    ms: int = 50,
) -> Failover:
    """Three schedulers; kill the leader ``kills`` times while jobs flow (a new standby
    is started after each kill). Each job runs exactly once."""
    started = time.monotonic()
    fleet.scheduler("s0")
    fleet.wait_for("s0 to lead", lambda: (fleet.leader() or ("", 0))[0] == "s0", 30)
    fleet.scheduler("s1")
    fleet.scheduler("s2")
    for name in ("w1", "w2"):
        start_worker(fleet, name, concurrency=8)
    fleet.wait_nodes(2)
    record = client.get_task("fault.record")
    ids: list[str] = []
    n = 0

    def submit(count: int) -> list[str]:
        nonlocal n
        keys = [f"f{n + i:05d}" for i in range(count)]
        n += count
        got = [h.id for h in record.submit_many([(k, ms) for k in keys])]
        ids.extend(got)
        return got

    takeover: list[float] = []
    resume: list[float] = []
    in_flight: list[int] = []
    spare = 3
    for _ in range(kills):
        flowing = submit(batch)

        def flows(flowing: list[str] = flowing) -> bool:
            done = sum(r.state is JobState.SUCCEEDED for r in fleet.jobs(flowing))
            return done >= batch // 10

        fleet.wait_for("jobs to flow", flows, 30)
        leader, token = fleet.wait_leader()
        in_flight.append(sum(r.state is not JobState.SUCCEEDED for r in fleet.jobs(flowing)))
        fleet.kill(leader, signal.SIGKILL)
        killed_at = fleet.store.now()
        after = submit(batch // 4)  # only a new leader can place these

        def new_leader(leader: str = leader) -> tuple[str, int] | None:
            found = fleet.leader()
            return found if found is not None and found[0] != leader else None

        _, new_token = fleet.wait_for("a new leader", new_leader, LEADER_LEASE_TTL + 20)
        assert new_token > token
        lease = fleet.store.get_lease(SCHEDULER_LEASE)
        assert lease is not None
        takeover.append(lease.acquired_at - killed_at)
        recs = fleet.wait_final(after, 60)
        firsts = [r.started_at for r in recs.values() if r.started_at is not None]
        resume.append(min(firsts) - killed_at)
        fleet.scheduler(f"s{spare}")
        spare += 1

    records = final_records(fleet, ids, 90)
    by_key = runs_by_key(fleet)
    double = 0
    for rec in records.values():
        key = rec.result_value()["key"]
        runs = by_key[key]
        if len(runs) != 1:
            double += 1
        # Never on two nodes at once: with no worker lost, never twice at all.
        assert len(runs) == 1, (key, runs)
        assert runs[0].end is not None
    return Failover(
        store=fleet.url.split(":", 1)[0],
        kills=kills,
        jobs=len(ids),
        in_flight_at_kills=in_flight,
        takeover_s=takeover,
        resume_s=resume,
        lost=0,
        double_runs=double,
        seconds=time.monotonic() - started,
    )


# ---- 4. store restart (a private Redis) ----------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivateRedis:
    port: int
    directory: Path
    persistent: bool
    log: Path
    extra: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0?prefix=faults"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.directory), "--save", "", "--protected-mode", "no"]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        args += list(self.extra)
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        out.close()
        deadline = time.monotonic() + 15
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not start: {self.log.read_text()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@contextlib.contextmanager
def private_redis(
    root: Path, persistent: bool, extra: tuple[str, ...] = ()
) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed")
    directory = root / "redis-data"
    directory.mkdir(parents=True, exist_ok=True)
    server = PrivateRedis(free_port(), directory, persistent, root / "redis-server.log", extra)
    server.start()
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)


def _pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed")
    return str(found[-1])


@dataclass
class PrivatePostgres:
    """A throw-away PostgreSQL cluster (``initdb`` into a temp dir, run as the ``postgres``
    user, which PostgreSQL requires when we are root) on a free loopback port."""

    port: int
    directory: Path
    log: Path
    persistent: bool = True

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres?schema=faults"

    def _run(self, *args: str) -> None:
        argv = list(args)
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        data = self.directory / "data"
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
        self._run(_pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} "
            "-c fsync=on -c synchronous_commit=on"
        )
        self._run(
            _pg_bin("pg_ctl"), "-D", str(self.directory / "data"), "-l", str(self.log),
            "-o", opts, "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(
                _pg_bin("pg_ctl"), "-D", str(self.directory / "data"), "-m", mode, "-w",
                "-t", "30", "stop",
            )  # fmt: skip


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A private cluster in a directory of its own under /tmp (``tmp_path``'s parents are
    not readable by the ``postgres`` user)."""
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="rota-faults-pg-"))
    server = PrivatePostgres(free_port(), directory, directory / "postgres.log")
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class StoreRestart:
    store: str
    how: str
    persistent: bool
    jobs_before: int
    unfinished_at_restart: int
    lost: int
    downtime_s: float
    first_job_after_s: float  # restart -> first job started after it (store clock)
    worker_reconnect_lines: int
    scheduler_reconnect_lines: int
    jobs_after: int
    seconds: float


def _retry(fn, tries: int = 50):  # type: ignore[no-untyped-def]
    for i in range(tries):
        try:
            return fn()
        except Exception:
            if i == tries - 1:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def store_restart(
    fleet: Fleet,
    client: Rota,
    server: PrivateRedis | PrivatePostgres,
    *,
    jobs: int = 400,
    ms: int = 20,
    crash: bool = False,
) -> StoreRestart:
    """Restart the store's server mid-run (Redis: SIGTERM; PostgreSQL: ``pg_ctl stop -m
    fast``; with ``crash``, Redis: SIGKILL, PostgreSQL: ``-m immediate``), and start it
    again on the same directory 1 s later."""
    started = time.monotonic()
    fleet.scheduler()
    start_worker(fleet, "w1", concurrency=8)
    fleet.wait_nodes(1)
    record = client.get_task("fault.record")
    before = [h.id for h in record.submit_many([(f"a{i:05d}", ms) for i in range(jobs)])]
    fleet.wait_for(
        "jobs to flow",
        lambda: sum(r.state is JobState.SUCCEEDED for r in fleet.jobs(before)) >= jobs // 10,
        30,
    )
    unfinished = sum(r.state is not JobState.SUCCEEDED for r in fleet.jobs(before))
    down = time.monotonic()
    if isinstance(server, PrivateRedis):
        server.stop(signal.SIGKILL if crash else signal.SIGTERM)
        how = "SIGKILL" if crash else "SIGTERM"
    else:
        server.stop("immediate" if crash else "fast")
        how = "pg_ctl stop -m " + ("immediate" if crash else "fast")
    time.sleep(1.0)  # the fleet notices
    server.start()
    downtime = time.monotonic() - down
    restarted_at = _retry(fleet.store.now)
    after = _retry(
        lambda: [h.id for h in record.submit_many([(f"b{i:05d}", ms) for i in range(50)])]
    )
    records = final_records(fleet, after, 60)
    lost = 0
    if server.persistent:
        records.update(final_records(fleet, before, 60))
    else:
        got = _retry(lambda: fleet.jobs(before))
        lost = len(before) - len(got)
    # Recovery: from the restart to the first job started after it (re-runs of the
    # jobs cut short, the backlog, or the new ones, whichever comes first).
    firsts = [
        r.started_at
        for r in records.values()
        if r.started_at is not None and r.started_at >= restarted_at
    ]
    first_after = min(firsts) - restarted_at
    wlog, slog = fleet.log("w1"), fleet.log("scheduler")
    if isinstance(server, PrivateRedis):
        w_lines = wlog.count("reconnected to Redis")
        s_lines = slog.count("reconnected to Redis")
    else:
        # The PostgreSQL store logs no "reconnected" line of its own: count the lines that
        # show the outage and the retries (psycopg's pool, rota's retry loops).
        def outage(line: str) -> bool:
            return any(
                m in line
                for m in (
                    "psycopg.pool: error connecting",
                    "discarding closed connection",
                    "failed, retrying",
                    "heartbeat failed",
                    "store unreachable",
                    "store error",
                )
            )

        w_lines = sum(1 for line in wlog.splitlines() if outage(line))
        s_lines = sum(1 for line in slog.splitlines() if outage(line))
    return StoreRestart(
        store="redis" if isinstance(server, PrivateRedis) else "postgres",
        how=how,
        persistent=server.persistent,
        jobs_before=jobs,
        unfinished_at_restart=unfinished,
        lost=lost,
        downtime_s=downtime,
        first_job_after_s=first_after,
        worker_reconnect_lines=w_lines,
        scheduler_reconnect_lines=s_lines,
        jobs_after=len(after),
        seconds=time.monotonic() - started,
    )


# ---- 5. clock skew ---------------------------------------------------------------------------
@dataclass
class ClockSkew:
    store: str
    skew_s: float
    live_for_s: float
    max_heartbeat_age_s: float
    job_clock_offset_s: float  # the job's time.time() - store's now
    declared_dead_after_s: float  # kill -> DEAD, store clock
    silent_before_dead_s: float  # last heartbeat -> seen DEAD, store clock
    failure_timeout_s: float


def clock_skew(fleet: Fleet, client: Rota, *, skew: float = 600.0, watch: float = 6.0) -> ClockSkew:
    fleet.scheduler()
    start_worker(fleet, "skewed", concurrency=2, extra_env={"ROTA_FAULT_SKEW": str(skew)})
    node = fleet.wait_nodes(1, names=["skewed"])["skewed"]
    # It stays live for several failure timeouts, and its heartbeats stay fresh.
    ages = []
    end = time.monotonic() + watch
    while time.monotonic() < end:
        now = fleet.store.now()
        nodes = {n.id: n for n in fleet.nodes()}
        assert nodes[node.id].state is NodeState.LIVE, nodes[node.id]
        ages.append(now - nodes[node.id].heartbeat_at)
        time.sleep(0.2)
    assert max(ages) < FAILURE_TIMEOUT, ages
    # It runs jobs (and its clock really is skewed).
    job = client.get_task("fault.clock").submit()
    result = job.result(timeout=30)
    offset = result["time"] - fleet.store.now()
    assert abs(offset - skew) < 30, (offset, skew)
    assert job.record().node_id == node.id
    # Killed, it is declared dead by the store's clock after the failure timeout.
    fleet.kill("skewed", signal.SIGKILL)
    killed_at = fleet.store.now()
    dead = fleet.wait_for(
        "the skewed node to be declared dead",
        lambda: next(
            (n for n in fleet.nodes() if n.id == node.id and n.state is NodeState.DEAD), None
        ),
        FAILURE_TIMEOUT + 20,
        interval=0.02,
    )
    seen_dead_at = fleet.store.now()
    dead_after = seen_dead_at - killed_at
    silent_for = seen_dead_at - dead.heartbeat_at  # its last heartbeat -> seen dead
    # Dead only once silent for the failure timeout, by the store's clock (a clock 10 min
    # off would make it dead at once, or never).
    assert silent_for >= FAILURE_TIMEOUT, (silent_for, dead)
    assert dead_after < FAILURE_TIMEOUT + 10, dead_after
    return ClockSkew(
        store=fleet.url.split(":", 1)[0],
        skew_s=skew,
        live_for_s=watch,
        max_heartbeat_age_s=max(ages),
        job_clock_offset_s=offset,
        declared_dead_after_s=dead_after,
        silent_before_dead_s=silent_for,
        failure_timeout_s=FAILURE_TIMEOUT,
    )


# ---- 6. poison jobs --------------------------------------------------------------------------
CORRUPTIONS = {
    "garbage text": b"\x00\x01 not json {{",
    "truncated JSON": b'{"args": [1, 2',
    "JSON of the wrong shape": b"[1, 2, 3]",
}


def corrupt_payload(url: str, job_id: str, payload: bytes) -> None:
    """Write ``payload`` into a stored job's payload, behind rota's back."""
    if url.startswith("sqlite"):
        import sqlite3

        path = url.split("sqlite:///", 1)[1].split("?", 1)[0]
        conn = sqlite3.connect(path)
        try:
            with conn:
                n = conn.execute("UPDATE jobs SET payload = ? WHERE id = ?", (payload, job_id))
                assert n.rowcount == 1
        finally:
            conn.close()
    elif url.startswith("redis"):
        import redis

        from rota.store.redis.connection import parse_url

        conn_url, prefix, _ = parse_url(url)
        client = redis.Redis.from_url(conn_url)
        try:
            key = f"{prefix}:{{{prefix}}}:job:{job_id}"
            assert client.exists(key), key
            client.hset(key, "payload", payload)
        finally:
            client.close()
    else:  # pragma: no cover
        raise ValueError(url)


@dataclass
class Poison:
    store: str
    # (what, final state, attempts, error)
    cases: list[tuple[str, str, int, str]] = field(default_factory=list)
    worker_restarts: int = 0
    seconds: float = 0.0


def poison(fleet: Fleet, client: Rota) -> Poison:
    started = time.monotonic()
    out = Poison(store=fleet.url.split(":", 1)[0])
    echo = client.get_task("fault.echo")
    # Corrupt payloads first, before any worker can pick the jobs up.
    corrupt = {}
    corruptions = dict(CORRUPTIONS)
    corruptions["non-UTF-8 bytes"] = b"\xff\xfe\x00 not json"  # not even text
    for what, payload in corruptions.items():
        handle = echo.submit("fine")
        corrupt_payload(fleet.url, handle.id, payload)
        corrupt[what] = handle.id
    fleet.scheduler()
    start_worker(fleet, "w1", concurrency=2, processes=2)
    node = fleet.wait_nodes(1)["w1"]
    jobs = {
        "sync task hangs (timeout 1 s)": client.get_task("fault.hang").submit().id,
        "async task hangs (timeout 1 s)": client.get_task("fault.async_hang").submit().id,
        "os._exit(3) (retries 2)": client.get_task("fault.exit").submit(3).id,
        "segfault (retries 2)": client.get_task("fault.segfault").submit().id,
    }
    jobs.update({f"corrupt payload: {k}": v for k, v in corrupt.items()})
    records = fleet.wait_final(list(jobs.values()), timeout=60)
    for what, job_id in jobs.items():
        rec = records[job_id]
        out.cases.append((what, rec.state.value, rec.attempts, (rec.error or "")[:80]))
        assert rec.state is JobState.DEAD, (what, rec)
        if "hangs" in what:
            assert rec.attempts == 1 and "timed out" in (rec.error or ""), (what, rec)
        elif what.startswith("corrupt"):
            assert rec.attempts == 1, (what, rec)  # no attempt could ever succeed
            assert "corrupt payload" in (rec.error or ""), (what, rec)
        else:
            assert rec.attempts == 3, (what, rec)  # retried, then dead-lettered
    crashes = read_lines(fleet.runs, "crash.log")
    assert sum(1 for c in crashes if c[0] == "exit") == 3
    assert sum(1 for c in crashes if c[0] == "segv") == 3
    # The worker survived all of it, under the same identity, and still works.
    fleet.check_alive()
    assert echo.submit({"still": "works"}).result(timeout=30) == {"still": "works"}
    assert fleet.live_nodes()["w1"].id == node.id
    out.worker_restarts = len([n for n in fleet.nodes() if n.spec.name == "w1"]) - 1
    assert out.worker_restarts == 0
    out.seconds = time.monotonic() - started
    return out


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def apps_client(url: str) -> Rota:
    from tests.faults import apps

    return apps.build(url)
