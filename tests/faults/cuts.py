"""Connection cuts: the store server drops every connection of the fleet, again and again,
during a drain (PostgreSQL: ``pg_terminate_backend``; Redis: ``CLIENT KILL``). Shared by
``tests/faults/test_connection_cuts.py`` (short form) and ``python -m bench.faults``.

A report whose reply is lost with its connection is sent again; the store must take the
retry as the same report (not as a lease lost), so every job ends once, with no false
lease loss: every completion a worker logs as refused is checked against the job's attempt
history (an attempt that ended with the refused outcome and token is a false loss)."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from rota import Rota
from rota.core.states import JobState
from tests.acceptance.conftest import Fleet
from tests.faults.scenarios import runs_by_key, start_worker

REFUSED = re.compile(r"job (\w+): outcome (\w+) refused: lease lost \(token (\d+)")


def own_tcp_ports() -> set[int]:
    """The local TCP ports of this process's sockets (its own store connections, which the
    cutter spares so that the checks keep reading)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if len(parts) > 9 and parts[9] in inodes:
                    ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


def cut_postgres(url: str) -> int:
    """Terminate every backend of this store's schema (application_name ``rota <schema>``)
    but this process's own; returns how many."""
    import psycopg

    from rota.store.postgres.connection import parse_url

    conninfo, schema, _ = parse_url(url)
    mine = own_tcp_ports()
    with psycopg.connect(conninfo, autocommit=True, application_name="rota-faults-cutter") as c:
        rows = c.execute(
            "SELECT pid, client_port FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            [f"rota {schema}"[:63]],
        ).fetchall()
        victims = [pid for pid, port in rows if port not in mine]
        for pid in victims:
            c.execute("SELECT pg_terminate_backend(%s)", [pid])
    return len(victims)


def cut_redis(url: str) -> int:
    """``CLIENT KILL`` every connection named ``rota:<prefix>:<pid>...`` of another process
    than this one; returns how many."""
    import redis

    parts = urlsplit(url)
    prefix = dict(parse_qsl(parts.query)).get("prefix", "rota")
    client = redis.Redis(host=parts.hostname or "127.0.0.1", port=parts.port or 6379)
    try:
        n = 0
        for info in client.client_list():
            name = str(info.get("name", ""))
            if not name.startswith(f"rota:{prefix}:"):
                continue
            pid = name.removeprefix(f"rota:{prefix}:").split(":", 1)[0]
            if pid != str(os.getpid()):
                kill = client.execute_command("CLIENT", "KILL", "ID", info["id"])  # type: ignore[no-untyped-call]
                n += int(kill or 0)
        return n
    finally:
        client.close()


@dataclass
class ConnectionCuts:
    store: str
    jobs: int
    workers: int
    concurrency: int
    cuts: int
    connections_cut: int
    every_s: float
    lost: int
    doubled: int  # jobs that ran more than once
    refused: int  # completions the workers logged as refused
    false_lease_losses: int  # of those, ones whose attempt had ended with that outcome
    store_errors_retried: int  # "failed, retrying" lines in the workers' logs
    seconds: float


def connection_cuts(
    fleet: Fleet,
    client: Rota,
    *,
    jobs: int = 2000,
    every: float = 2.5,
    ms: int = 100,
    workers: int = 2,
    concurrency: int = 8,
) -> ConnectionCuts:
    """Drain ``jobs`` jobs while every rota connection to the store is cut every
    ``every`` seconds. Checked: every job succeeded and ran once; no completion was
    refused although its attempt had ended with it (a false lease loss)."""
    started = time.monotonic()
    kind = fleet.url.split(":", 1)[0]
    cut = cut_redis if kind == "redis" else cut_postgres
    fleet.scheduler()
    names = [f"w{i}" for i in range(workers)]
    for name in names:
        start_worker(fleet, name, concurrency=concurrency)
    fleet.wait_nodes(workers, names=names)
    record = client.get_task("fault.record")
    keys = [f"c{i:05d}" for i in range(jobs)]
    ids: list[str] = []
    for i in range(0, jobs, 1000):
        ids += [h.id for h in record.submit_many([(k, ms) for k in keys[i : i + 1000]])]

    stop = threading.Event()
    counts = [0, 0]  # cuts, connections cut
    errors: list[BaseException] = []

    def cutter() -> None:
        while not stop.wait(every):
            try:
                counts[1] += cut(fleet.url)
                counts[0] += 1
            except BaseException as exc:  # reported by the test, not lost in a thread
                errors.append(exc)
                return

    thread = threading.Thread(target=cutter, name="cutter", daemon=True)
    thread.start()
    try:
        budget = 60 + jobs * ms / 1000 / (workers * concurrency) * 4
        records = fleet.wait_final(ids, timeout=budget)
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    lost = sum(r.state is not JobState.SUCCEEDED for r in records.values())
    by_key = runs_by_key(fleet)
    doubled = sum(1 for k in keys if len(by_key.get(k, [])) > 1)
    refused = false = retried = 0
    for name in names:
        text = fleet.log(name)
        retried += text.count("failed, retrying")
        for job_id, outcome, token in REFUSED.findall(text):
            refused += 1
            attempts = fleet.store.job_attempts(job_id)
            if any(a.token == int(token) and a.outcome == outcome for a in attempts):
                false += 1
    assert counts[0] > 0, "the drain ended before the first cut"
    assert lost == 0, {
        i: (r.state.value, r.error) for i, r in records.items() if r.state != "succeeded"
    }
    assert false == 0, f"{false} completions refused although they had been recorded"
    assert doubled == 0, f"{doubled} jobs ran more than once"
    return ConnectionCuts(
        store=kind,
        jobs=jobs,
        workers=workers,
        concurrency=concurrency,
        cuts=counts[0],
        connections_cut=counts[1],
        every_s=every,
        lost=lost,
        doubled=doubled,
        refused=refused,
        false_lease_losses=false,
        store_errors_retried=retried,
        seconds=time.monotonic() - started,
    )
