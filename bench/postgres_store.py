"""PostgreSQL store hot paths: ``python -m bench.postgres_store [--jobs N] [--batch B]
[--repeat K] [--url URL] [--profile]``.

Times, in a fresh schema (dropped afterwards), the store calls a busy cluster makes: bulk
``submit`` of no-op jobs from one producer (one call, and batches of ``--batch``), the
scheduler's ``pending_jobs`` + ``assign`` in pages, the nodes' ``start_jobs`` and batched
``complete``, plus one-job round trips for reference. Prints jobs per second (best of
``--repeat``), then where the time of each batch call goes: Python building the parameters,
the server executing the statement (EXPLAIN ANALYZE of the same statement on a like batch,
rolled back) and the rest. ``--profile`` adds a cProfile of one bulk submit.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
import uuid
from typing import Any

import psycopg
from psycopg import sql

from bench.store_phases import new_jobs, run_phases
from rota.core.model import Assignment, NodeSpec
from rota.core.outcomes import Outcome, OutcomeKind
from rota.store import SCHEDULER_LEASE
from rota.store.postgres.queries import query
from rota.store.postgres.store import PostgresStore

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def fresh_store(url: str) -> PostgresStore:
    schema = f"rota_bench_{uuid.uuid4().hex[:8]}"
    sep = "&" if "?" in url else "?"
    store = PostgresStore(f"{url}{sep}schema={schema}")
    store.migrate()
    return store


def drop(store: PostgresStore) -> None:
    conninfo, schema = store.conninfo, store.schema
    store.close()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def one_round(url: str, jobs: int, batch: int, nodes: int) -> dict[str, float]:
    store = fresh_store(url)
    try:
        return run_phases(store, jobs, batch, nodes, submit_batches=True)
    finally:
        drop(store)


def _server_ms(conn: psycopg.Connection[Any], name: str, params: dict[str, Any]) -> float:
    """Server execution time of the named query, run and rolled back (EXPLAIN ANALYZE)."""
    with conn.transaction(force_rollback=True):
        plan = conn.execute(("EXPLAIN (ANALYZE, TIMING OFF) " + query(name)).encode(), params)
        for (line,) in plan:
            if line.startswith("Execution Time"):
                return float(line.split(":")[1].split()[0])
    return float("nan")


def breakdown(url: str, jobs: int, batch: int, profile: bool) -> None:
    """Where the time of a bulk submit and of batched assign/start/complete goes: Python
    building the parameters, the server executing the statement, and the rest (adapting
    the parameters, the round trip, reading the rows back, building records)."""
    store = fresh_store(url)
    try:
        lease = store.acquire_lease(SCHEDULER_LEASE, "bench", 600)
        assert lease is not None
        spec = NodeSpec(id="node-0", name="node-0", slots=jobs, prefetch=0)
        store.register_node(spec)
        store.submit(new_jobs(10))  # warm the pool and the prepared statements
        conn = psycopg.connect(store.conninfo, autocommit=True)
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(store.schema)))
        rows: list[tuple[str, float, float, float]] = []

        todo = new_jobs(jobs)
        t0 = time.perf_counter()
        params = store._submit_params(todo)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.submit(todo)
        total = time.perf_counter() - t0
        server = _server_ms(conn, "submit", store._submit_params(new_jobs(jobs))) / 1000
        rows.append((f"submit {jobs} (one call)", build, server, total))

        page = store.pending_jobs(2 * batch)
        first, second = page[:batch], page[batch:]
        fence = {"lease_name": lease.name, "holder": lease.holder, "token": lease.token}
        t0 = time.perf_counter()
        store.assign(lease, [Assignment(p.id, spec.id) for p in first])
        total = time.perf_counter() - t0
        params = {
            **fence,
            "job_ids": [p.id for p in second],
            "node_ids": [spec.id] * len(second),
            "node_prefix": store.node_prefix,
        }
        rows.append((f"assign {batch}", 0.0, _server_ms(conn, "assign", params) / 1000, total))

        start_params = {"node_id": spec.id, "limit": batch, "ttl": 600.0}
        server = _server_ms(conn, "start_jobs", start_params) / 1000
        t0 = time.perf_counter()
        started = store.start_jobs(spec.id, batch, 600)
        total = time.perf_counter() - t0
        rows.append((f"start_jobs {batch}", 0.0, server, total))

        half = len(started) // 2
        outcomes = [Outcome(r.id, r.token, OutcomeKind.SUCCEEDED, "null") for r in started]
        params = {
            "ids": [o.job_id for o in outcomes[half:]],
            "tokens": [o.token for o in outcomes[half:]],
            "kinds": [o.kind.value for o in outcomes[half:]],
            "results": [o.result for o in outcomes[half:]],
            "errors": [None] * (len(outcomes) - half),
            "tracebacks": [None] * (len(outcomes) - half),
            "delays": [0.0] * (len(outcomes) - half),
            "pending_channel": store.pending_channel,
            "done_channel": store.done_channel,
        }
        server = _server_ms(conn, "complete", params) / 1000 * half / max(1, len(outcomes) - half)
        t0 = time.perf_counter()
        store.complete(outcomes[:half])
        total = time.perf_counter() - t0
        rows.append((f"complete {half}", 0.0, server, total))
        conn.close()

        print("\nwhere the time goes (ms):")
        print(f"  {'call':<26} {'python':>8} {'server':>8} {'other':>8} {'total':>8}  jobs/s")
        for name, build, server, total in rows:
            count = int(name.split()[1])
            other = total - server
            print(
                f"  {name:<26} {build * 1000:8.1f} {server * 1000:8.1f} {other * 1000:8.1f}"
                f" {(build + total) * 1000:8.1f}  {count / (build + total):,.0f}"
            )
        print("  (python: building parameter arrays; other: adapting parameters, the round")
        print("   trip and reading rows back / building records)")
        if profile:
            prof = cProfile.Profile()
            batch_jobs = new_jobs(jobs)
            prof.enable()
            store.submit(batch_jobs)
            prof.disable()
            print(f"\ncProfile of store.submit({jobs} jobs):")
            pstats.Stats(prof).sort_stats("tottime").print_stats(10)
    finally:
        drop(store)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        for name, rate in one_round(args.url, args.jobs, args.batch, args.nodes).items():
            best[name] = max(best.get(name, 0.0), rate)
    with psycopg.connect(args.url) as conn:
        version: Any = conn.execute("SHOW server_version").fetchone()
    print(f"PostgreSQL {version[0]}, {args.jobs} jobs, best of {args.repeat}:")
    width = max(len(name) for name in best)
    for name, rate in best.items():
        print(f"  {name:<{width}}  {rate:>10,.0f} jobs/s")
    breakdown(args.url, args.jobs, args.batch, args.profile)


if __name__ == "__main__":
    main()
