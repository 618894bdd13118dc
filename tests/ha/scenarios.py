"""Failover under load, shared by ``tests/ha`` (one kill) and ``bench/ha.py`` (ten): real
``rota`` processes (a scheduler, two workers) and a producer thread run on a replicated
deployment while its primary is killed with SIGKILL and a replica takes over. Counted at
the end: jobs whose submit was acknowledged and that are gone (lost), jobs that ran more
than once (duplicates), fencing tokens handed out twice, and per kill the time until the
deployment had a new primary and until rota had resumed (a job acknowledged after the kill
has finished)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rota.core.states import FAILED_STATES, FINAL_STATES
from rota.store import SCHEDULER_LEASE, open_store
from tests.acceptance.apps.basic import read_lines
from tests.acceptance.conftest import Fleet
from tests.ha.app import RUNS, build
from tests.ha.servers import (
    ClusterDeployment,
    PgDeployment,
    PgServer,
    SentinelDeployment,
    running,
    wait_until,
)

APP = "tests.ha.app:app"


# ---- deployments: how to reach them, kill their primary, wait, heal ----------------------
class Target:
    """One replicated deployment under test."""

    name = ""

    def url(self, durable: bool) -> str:
        raise NotImplementedError

    def kill(self) -> Any:
        """SIGKILL the primary that serves the app; something to pass to ``recover``."""
        raise NotImplementedError

    def recover(self, killed: Any) -> None:
        """Return once a new primary serves (for PostgreSQL: promote the standby)."""
        raise NotImplementedError

    def heal(self, killed: Any) -> None:
        """Bring the killed server back as a replica (ready for the next kill)."""
        raise NotImplementedError

    def token_counter(self) -> int | None:
        """The store's last issued job token as the current primary has it (Redis only)."""
        return None


@dataclass
class SentinelTarget(Target):
    d: SentinelDeployment
    prefix: str
    name = "Redis Sentinel (1 primary, 2 replicas)"

    def url(self, durable: bool) -> str:
        return self.d.url(self.prefix, "&durable=1" if durable else "")

    def kill(self) -> Any:
        return self.d.kill_primary()

    def recover(self, killed: Any) -> None:
        self.d.wait_failover(killed)

    def heal(self, killed: Any) -> None:
        self.d.restart_as_replica(killed)

    def token_counter(self) -> int | None:
        from tests.ha.servers import redis_client

        value = redis_client(self.d.primary_port()).get(f"{self.prefix}:{{{self.prefix}}}:token")
        return int(value or 0)


@dataclass
class ClusterTarget(Target):
    d: ClusterDeployment
    prefix: str
    name = "Redis Cluster (3 primaries, 3 replicas)"

    def url(self, durable: bool) -> str:
        return self.d.url(self.prefix, "&durable=1" if durable else "")

    def kill(self) -> Any:
        return self.d.kill_owner(self.prefix)

    def recover(self, killed: Any) -> None:
        self.d.wait_failover(self.prefix, killed)

    def heal(self, killed: Any) -> None:
        self.d.restart(killed)

    def token_counter(self) -> int | None:
        from tests.ha.servers import redis_client

        port = self.d.owner(self.prefix)
        value = redis_client(port).get(f"{self.prefix}:{{{self.prefix}}}:token")
        return int(value or 0)


@dataclass
class PgTarget(Target):
    d: PgDeployment
    schema: str

    @property
    def name(self) -> str:  # type: ignore[override]
        mode = "synchronous" if self.d.sync else "asynchronous"
        return f"PostgreSQL + {mode} standby"

    def url(self, durable: bool) -> str:
        return self.d.url(self.schema)

    def kill(self) -> Any:
        return self.d.kill_primary()

    def recover(self, killed: Any) -> None:
        self.d.promote()
        wait_until("the promoted standby", lambda: not self.d.primary.in_recovery(), 60)

    def heal(self, killed: PgServer) -> None:
        self.d.add_standby(killed)


@contextlib.contextmanager
def deployment(kind: str, root: Path) -> Iterator[Target]:
    """``kind``: sentinel, cluster, pg-async or pg-sync."""
    tag = uuid.uuid4().hex[:8]
    if kind == "sentinel":
        with running(SentinelDeployment(root / "sentinel", replicas=2)) as d:
            yield SentinelTarget(d, f"ha-{tag}")
    elif kind == "cluster":
        with running(ClusterDeployment(root / "cluster", replicas=1)) as c:
            yield ClusterTarget(c, f"ha-{tag}")
    elif kind in ("pg-async", "pg-sync"):
        with running(PgDeployment(sync=kind == "pg-sync")) as p:
            yield PgTarget(p, f"rota_ha_{tag}")
    else:
        raise ValueError(kind)


# ---- the run --------------------------------------------------------------------------
@dataclass
class Producer:
    """Submits batches of ``ha.note`` jobs until stopped; remembers what was acknowledged."""

    url: str
    batch: int = 5
    pause: float = 0.02
    acked: dict[str, tuple[str, float]] = field(default_factory=dict)  # id -> (key, sent)
    errors: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        client = build(self.url)
        task = client.get_task("ha.note")
        try:
            while not self.stop.is_set():
                keys = [uuid.uuid4().hex[:16] for _ in range(self.batch)]
                sent = time.time()  # a submit sent after a kill can only reach the new primary
                try:
                    handles = task.submit_many([(k,) for k in keys])
                except Exception as exc:
                    self.errors[type(exc).__name__] += 1
                    time.sleep(0.05)
                    continue
                for key, handle in zip(keys, handles, strict=True):
                    self.acked[handle.id] = (key, sent)
                time.sleep(self.pause)
        finally:
            client.close()


@dataclass
class KillReport:
    failover: float  # s from the kill until a new primary served
    resumed: float | None  # s from the kill until a job acknowledged after it had finished
    lease_token_before: int | None
    lease_token_after: int | None
    counter_before: int | None
    counter_after: int | None


@dataclass
class RunReport:
    deployment: str
    durable: bool
    kills: list[KillReport]
    acked: int
    lost: int
    unfinished: int
    failed: int
    duplicates: int
    shared_tokens: int  # token values held by two final jobs (a token handed out twice)
    submit_errors: dict[str, int]

    @property
    def tokens_backwards(self) -> int:
        """Kills after which a fencing token (the lease's or the job counter) was lower
        than before the kill."""
        n = 0
        for k in self.kills:
            lease = (
                k.lease_token_before is not None
                and k.lease_token_after is not None
                and k.lease_token_after < k.lease_token_before
            )
            counter = (
                k.counter_before is not None
                and k.counter_after is not None
                and k.counter_after < k.counter_before
            )
            n += lease or counter
        return n


def _lease_token(url: str) -> int | None:
    store = open_store(url)
    try:
        lease = store.get_lease(SCHEDULER_LEASE)
        return None if lease is None else lease.token
    except Exception:
        return None
    finally:
        store.close()


def failover_run(
    target: Target,
    root: Path,
    *,
    durable: bool,
    kills: int,
    load_seconds: float = 3.0,
    drain_timeout: float = 90.0,
    on_fleet: Callable[[Fleet], None] | None = None,
) -> RunReport:
    """Run the fleet on ``target``, kill its primary ``kills`` times under load (healing it
    in between), then count what the acknowledged jobs became."""
    url = target.url(durable)
    fleet = Fleet(url, root / f"fleet-{uuid.uuid4().hex[:6]}")
    producer = Producer(url)
    thread = threading.Thread(target=producer.run, name="producer", daemon=True)
    reports: list[KillReport] = []
    try:
        fleet.scheduler()
        for i in range(2):
            fleet.worker(f"w{i}", app=APP, concurrency=8)
        fleet.wait_nodes(2, timeout=60)
        fleet.wait_leader(timeout=60)
        thread.start()
        for _ in range(kills):
            time.sleep(load_seconds)
            lease_before = _lease_token(url)
            counter_before = target.token_counter()
            killed = target.kill()
            killed_at = time.time()  # after the kill landed: later sends reach the new primary
            target.recover(killed)
            failover = time.time() - killed_at
            healing = threading.Thread(target=target.heal, args=(killed,), daemon=True)
            healing.start()  # meanwhile: durable writes may need the healed replica
            resumed = _wait_resumed(fleet, producer, killed_at, timeout=60)
            healing.join(120)
            reports.append(
                KillReport(
                    failover,
                    resumed,
                    lease_before,
                    _lease_token(url),
                    counter_before,
                    target.token_counter(),
                )
            )
            if on_fleet is not None:
                on_fleet(fleet)
        time.sleep(1.0)
        producer.stop.set()
        thread.join(30)
        return _count(target, fleet, producer, durable, reports, drain_timeout)
    finally:
        producer.stop.set()
        thread.join(30)
        fleet.close()


def _wait_resumed(fleet: Fleet, producer: Producer, since: float, timeout: float) -> float | None:
    """Seconds from ``since`` until a job acknowledged after it was final (None: never)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        after = [i for i, (_, t) in producer.acked.copy().items() if t > since][:50]
        if after:
            with contextlib.suppress(Exception):
                done = [r for r in fleet.store.get_jobs(after) if r.state in FINAL_STATES]
                if done:
                    return min(r.finished_at or time.time() for r in done) - since
        time.sleep(0.05)
    return None


def _count(
    target: Target,
    fleet: Fleet,
    producer: Producer,
    durable: bool,
    kills: list[KillReport],
    drain_timeout: float,
) -> RunReport:
    ids = list(producer.acked)
    deadline = time.monotonic() + drain_timeout
    records = {}
    while True:
        records = {
            r.id: r for i in range(0, len(ids), 500) for r in fleet.store.get_jobs(ids[i : i + 500])
        }
        open_ = [r for r in records.values() if r.state not in FINAL_STATES]
        if not open_ or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    runs = Counter(line[0] for line in read_lines(fleet.runs, RUNS) if line)
    # Redis hands job tokens out from one counter: two jobs holding one value means a
    # token was handed out twice (PostgreSQL counts per job: not comparable that way).
    tokens = Counter(r.token for r in records.values() if r.token)
    global_tokens = type(target).token_counter is not Target.token_counter
    return RunReport(
        deployment=target.name,
        durable=durable,
        kills=kills,
        acked=len(ids),
        lost=sum(1 for i in ids if i not in records),
        unfinished=sum(1 for r in records.values() if r.state not in FINAL_STATES),
        failed=sum(1 for r in records.values() if r.state in FAILED_STATES),
        duplicates=sum(1 for n in runs.values() if n > 1),
        shared_tokens=sum(1 for n in tokens.values() if n > 1) if global_tokens else -1,
        submit_errors=dict(producer.errors),
    )


def temp_root() -> contextlib.AbstractContextManager[str]:
    os.environ.pop("ROTA_STORE", None)
    return tempfile.TemporaryDirectory(prefix="rota-ha-")
