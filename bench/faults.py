"""The reliability suite ("Prove it"), with figures: ``python -m bench.faults [--profile ci|full]``.

Runs the fault-injection scenarios of ``tests/faults/scenarios.py`` against real ``rota``
processes (loopback only; Redis scenarios use the server on 127.0.0.1:6379 with a private
key prefix, the restart scenario a private ``redis-server`` on a free port), then the
property and security tests of ``tests/faults`` through pytest, and writes
``docs/reliability.md``. The ``ci`` profile is what ``pytest tests/faults`` runs; ``full``
is bigger (10,000 jobs and 20 kills in the kill -9 loop).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "reliability.md"
STORES = ("sqlite", "redis", "postgres")  # the stores the process-fault tables cover
CUT_STORES = ("postgres", "redis")  # connection cuts: the stores with a server


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|")


PROFILES: dict[str, dict[str, Any]] = {
    "ci": {
        "kill_jobs": 1500,
        "kills": 5,
        "kill_interval": 1.0,
        "failover_kills": 3,
        "restart_jobs": 400,
        "skew": 600.0,
        "cut_jobs": 2000,
        "cut_every": 2.5,
    },
    "full": {
        "kill_jobs": 10_000,
        "kills": 20,
        "kill_interval": 1.5,
        "failover_kills": 10,
        "restart_jobs": 2000,
        "skew": 600.0,
        "cut_jobs": 2000,
        "cut_every": 2.5,
    },
}


# (label, persistent, crash): the first three on a private Redis, the rest PostgreSQL.
RESTARTS = [
    ("Redis, appendonly + fsync always; SIGTERM", True, False),
    ("Redis, appendonly + fsync always; SIGKILL", True, True),
    ("Redis, no persistence; SIGTERM", False, False),
    ("PostgreSQL; pg_ctl stop -m fast", True, False),
    ("PostgreSQL; pg_ctl stop -m immediate (crash)", True, True),
]


@dataclass
class Outcome:
    name: str
    store: str
    result: Any = None
    error: str = ""


def fmt(x: float) -> str:
    return f"{x:.2f}"


def span(values: Sequence[float]) -> str:
    from tests.faults.scenarios import quantiles

    if not values:
        return "-"
    lo, med, hi = quantiles(values)
    return f"{fmt(med)} (min {fmt(lo)}, max {fmt(hi)})"


@contextlib.contextmanager
def fleet_on(kind: str) -> Iterator[tuple[Any, Any]]:
    from tests.acceptance.conftest import Fleet
    from tests.faults.apps import build
    from tests.stores import store_url

    os.environ.pop("ROTA_STORE", None)
    with (
        tempfile.TemporaryDirectory(prefix="rota-faults-") as tmp,
        store_url(kind, Path(tmp)) as url,
    ):
        fleet = Fleet(url, Path(tmp))
        client = build(url)
        try:
            yield fleet, client
        except BaseException:
            print(fleet.tails(15), file=sys.stderr)
            raise
        finally:
            client.close()
            fleet.close()


def attempt(name: str, store: str, fn: Callable[[], Any]) -> Outcome:
    started = time.monotonic()
    print(f"== {name} [{store}] ...", flush=True)
    try:
        out = Outcome(name, store, result=fn())
    except BaseException as exc:  # a failed scenario is reported, not hidden
        if isinstance(exc, KeyboardInterrupt):
            raise
        traceback.print_exc()
        out = Outcome(name, store, error=f"{type(exc).__name__}: {str(exc)[:300]}")
    print(f"   {'FAILED' if out.error else 'ok'} in {time.monotonic() - started:.1f} s", flush=True)
    return out


def run_scenarios(p: dict[str, Any]) -> list[Outcome]:
    from tests.acceptance.conftest import Fleet
    from tests.faults import scenarios
    from tests.faults.apps import build

    outcomes: list[Outcome] = []
    for kind in STORES:

        def kill(kind: str = kind) -> Any:
            with fleet_on(kind) as (fleet, client):
                return scenarios.kill_loop(
                    fleet,
                    client,
                    jobs=p["kill_jobs"],
                    kills=p["kills"],
                    interval=p["kill_interval"],
                )

        outcomes.append(attempt("kill -9 loop", kind, kill))
    for kind in STORES:

        def fail(kind: str = kind) -> Any:
            with fleet_on(kind) as (fleet, client):
                return scenarios.failover(fleet, client, kills=p["failover_kills"])

        outcomes.append(attempt("scheduler failover", kind, fail))
    for kind in CUT_STORES:

        def cuts(kind: str = kind) -> Any:
            from tests.faults.cuts import connection_cuts

            with fleet_on(kind) as (fleet, client):
                return connection_cuts(fleet, client, jobs=p["cut_jobs"], every=p["cut_every"])

        outcomes.append(attempt("connection cuts", kind, cuts))
    for label, persistent, crash in RESTARTS[:3]:

        def restart(persistent: bool = persistent, crash: bool = crash) -> Any:
            with (
                tempfile.TemporaryDirectory(prefix="rota-faults-") as tmp,
                scenarios.private_redis(Path(tmp), persistent) as server,
            ):
                fleet = Fleet(server.url, Path(tmp))
                client = build(server.url)
                try:
                    return scenarios.store_restart(
                        fleet, client, server, jobs=p["restart_jobs"], crash=crash
                    )
                finally:
                    client.close()
                    fleet.close()

        outcomes.append(attempt("store restart", label, restart))
    for label, _, crash in RESTARTS[3:]:

        def pg_restart(crash: bool = crash) -> Any:
            with (
                tempfile.TemporaryDirectory(prefix="rota-faults-") as tmp,
                scenarios.private_postgres() as server,
            ):
                fleet = Fleet(server.url, Path(tmp))
                client = build(server.url)
                try:
                    return scenarios.store_restart(
                        fleet, client, server, jobs=p["restart_jobs"], crash=crash
                    )
                finally:
                    client.close()
                    fleet.close()

        outcomes.append(attempt("store restart", label, pg_restart))
    for kind, skew in (("sqlite", p["skew"]), ("redis", -p["skew"]), ("postgres", p["skew"])):

        def skewed(kind: str = kind, skew: float = skew) -> Any:
            with fleet_on(kind) as (fleet, client):
                return scenarios.clock_skew(fleet, client, skew=skew)

        outcomes.append(attempt("clock skew", kind, skewed))
    for kind in ("sqlite", "redis"):

        def poison(kind: str = kind) -> Any:
            with fleet_on(kind) as (fleet, client):
                return scenarios.poison(fleet, client)

        outcomes.append(attempt("poison jobs", kind, poison))
    return outcomes


def run_pytest(files: Sequence[str]) -> tuple[str, float]:
    """Run the in-process fault tests; returns pytest's summary line and the time."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else proc.stderr.strip()[-200:]
    summary = re.sub(r"=+", "", summary).strip()
    return summary, time.monotonic() - started


# ---- the report -------------------------------------------------------------------------------
def render(
    profile: str, outcomes: list[Outcome], tests: list[tuple[str, str, float]], wall: float
) -> str:
    by = {(o.name, o.store): o for o in outcomes}
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    redis_version = "?"
    with contextlib.suppress(Exception):
        redis_version = (
            subprocess.run(
                ["redis-server", "--version"], capture_output=True, text=True, check=False
            )
            .stdout.split()[2]
            .removeprefix("v=")
        )
    out = [
        "# Reliability: faults injected, figures measured",
        "",
        f"Generated by `python -m bench.faults --profile {profile}` on {when}: "
        f"Python {platform.python_version()}, Redis {redis_version}, {os.cpu_count()} CPUs, "
        f"loopback only; {wall:.0f} s in all. Do not edit by hand; run it again.",
        "",
        "Every scenario starts real `rota worker` / `rota scheduler` processes "
        "(`tests/acceptance/conftest.py`'s `Fleet`; code in `tests/faults/scenarios.py`, "
        "shared with `pytest tests/faults`, which runs the `ci` profile). Timings of the "
        "fleet: worker heartbeat 0.5 s, job lease 2 s, scheduler failure timeout 2 s, "
        "leader lease 2 s. Times marked *store clock* are differences of the store's own "
        "timestamps; the others are the test machine's wall clock.",
        "",
    ]

    ok = [o for o in outcomes if not o.error]
    worker_kills = sum(o.result.kills for o in ok if o.name == "kill -9 loop")
    leader_kills = sum(o.result.kills for o in ok if o.name == "scheduler failover")
    restarts = [o for o in ok if o.name == "store restart"]
    kept = [o for o in restarts if o.result.persistent]
    jobs = sum(o.result.jobs for o in ok if o.name in ("kill -9 loop", "scheduler failover"))
    lost = sum(o.result.lost for o in ok if o.name in ("kill -9 loop", "scheduler failover"))
    lost += sum(o.result.lost for o in kept)
    gone = sum(o.result.lost for o in restarts if not o.result.persistent)
    cuts = [o for o in ok if o.name == "connection cuts"]
    jobs += sum(o.result.jobs for o in cuts)
    lost += sum(o.result.lost for o in cuts)
    skewed = sum(1 for o in ok if o.name == "clock skew")
    poisons = sum(len(o.result.cases) for o in ok if o.name == "poison jobs")
    out += [
        "**Summary.** "
        f"{worker_kills} worker SIGKILLs and {leader_kills} leader SIGKILLs over "
        f"{jobs:,} jobs, {sum(o.result.cuts for o in cuts)} rounds of cut connections, "
        f"{len(restarts)} store restarts ({len(kept)} with persistence), "
        f"{skewed} workers with a clock 10 minutes off, {poisons} poison jobs: "
        f"**{lost} jobs lost** where the store keeps its data "
        f"({gone} lost by the Redis without persistence, all it held); "
        "every duplicate execution came from a killed worker's attempt. "
        f"Scenarios failed: {len(outcomes) - len(ok)} of {len(outcomes)}.",
        "",
    ]

    def failed(o: Outcome | None) -> str | None:
        if o is None:
            return "not run"
        return f"**FAILED**: {o.error}" if o.error else None

    def rows(
        name: str, keys: Iterable[str], columns: int, render: Callable[[str, Any], list[str]]
    ) -> list[str]:
        """The table rows of scenario ``name`` for each key (a store, a restart label); a
        run that failed or did not happen gets one row saying so."""
        lines: list[str] = []
        for key in keys:
            o = by.get((name, key))
            if (msg := failed(o)) is not None:
                lines.append(f"| {key} | {msg} |" + "|" * (columns - 2))
                continue
            assert o is not None
            lines += render(key, o.result)
        return lines

    # 1
    out += [
        "## 1. kill -9 loop",
        "",
        "N jobs of an async task that logs the start and end of each run (job key, nonce, "
        "pid, time) to a file. While they run, a random worker gets SIGKILL and a new one "
        "is started, again and again. Checked: every job succeeded; one result per job, from "
        "a run that returned; every other run was on a killed worker (so is every run with "
        "no end line); every killed worker was declared dead.",
        "",
        "| store | jobs | workers x concurrency | SIGKILLs | jobs running on the victims at the kills | jobs lost | duplicate executions (bound) | runs cut short | kill -> job re-run, s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    out += rows(
        "kill -9 loop",
        STORES,
        9,
        lambda store, r: [
            f"| {store} | {r.jobs:,} | {r.workers} x {r.concurrency} | {r.kills} | "
            f"{sum(r.in_flight_at_kills)} ({', '.join(map(str, r.in_flight_at_kills))}) | "
            f"{r.lost} | {r.duplicates} (<= {r.duplicate_bound}) | {r.cut_short} | "
            f"{span(r.replace_s)} |"
        ],
    )
    out += [
        "",
        "Duplicate executions are the price of at-least-once delivery: a job whose worker "
        "died mid-run (or after the run, before its report reached the store) runs again. "
        "The bound is the number of jobs the store showed running on the victims just "
        "before each kill (if a job started in the instant between that read and the kill, "
        "the hard bound kills x concurrency applies). *kill -> job re-run* is from the kill "
        "to the next start of each cut-short job: the failure timeout (2 s) plus placement.",
        "",
    ]
    # 2
    out += [
        "## 2. Zombie (frozen worker)",
        "",
        "Covered by `tests/acceptance/test_zombie.py` (SQLite): a worker SIGSTOPped past the "
        "failure timeout is declared dead, its job re-runs elsewhere, and its late "
        "completion is refused by the fencing token. `tests/faults/test_zombie_redis.py` "
        "runs the same test on Redis (result in the last table).",
        "",
    ]
    # 3
    out += [
        "## 3. Scheduler failover under load",
        "",
        "Three schedulers, two workers (8 slots each), batches of jobs flowing; the leader "
        "gets SIGKILL, a new standby is started, again. Right after each kill a batch is "
        "submitted that only a new leader can place. Checked: a new leader with a higher "
        "token each time; every job ran exactly once (no job on two nodes, no job twice).",
        "",
        "| store | leader kills | jobs | jobs unfinished at the kills | kill -> new lease, s (store clock) | kill -> first job placed by the new leader started, s (store clock) | jobs lost | jobs run twice |",
        "|---|---|---|---|---|---|---|---|",
    ]
    out += rows(
        "scheduler failover",
        STORES,
        8,
        lambda store, r: [
            f"| {store} | {r.kills} | {r.jobs:,} | {', '.join(map(str, r.in_flight_at_kills))} | "
            f"{span(r.takeover_s)} | {span(r.resume_s)} | {r.lost} | {r.double_runs} |"
        ],
    )
    out += [
        "",
        "The leader lease is 2 s: a standby can take it only once the dead leader's lease "
        "has run out, so takeover is at most the TTL plus a standby's polling period.",
        "",
    ]
    # 3b
    out += [
        "## 3b. Connections cut during a drain",
        "",
        "One scheduler, two workers (8 slots each), N jobs of 100 ms; every few seconds the "
        "store server drops every connection of the fleet (PostgreSQL: "
        "`pg_terminate_backend` of each backend whose `application_name` is the store's; "
        "Redis: `CLIENT KILL ID` of each client named `rota:<prefix>:<pid>`; the test's own "
        "connections are spared). Code: `tests/faults/cuts.py`. A report whose reply is "
        "lost with its connection is sent again, and the store takes the retry as the same "
        "report. Checked: every job succeeded and ran once; every completion a worker "
        "logged as refused is checked against the job's attempt history (one whose attempt "
        "had ended with that outcome and token would be a *false* lease loss).",
        "",
        "| store | jobs | workers x concurrency | cut every, s | rounds of cuts | connections cut | store calls retried by the workers | jobs lost | jobs run twice | completions refused | false lease losses |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    out += rows(
        "connection cuts",
        CUT_STORES,
        11,
        lambda store, r: [
            f"| {store} | {r.jobs:,} | {r.workers} x {r.concurrency} | {r.every_s:g} | "
            f"{r.cuts} | {r.connections_cut} | {r.store_errors_retried} | {r.lost} | "
            f"{r.doubled} | {r.refused} | **{r.false_lease_losses}** |"
        ],
    )
    out.append("")
    # 4
    out += [
        "## 4. Store restart (a private Redis; a private PostgreSQL)",
        "",
        "A private `redis-server` (or a private PostgreSQL cluster: `initdb` into a temp "
        "dir, run as the `postgres` user) on a free port; one scheduler and one worker; N "
        "jobs submitted; once a tenth of them have finished, the server is stopped (cleanly, "
        "or killed) and started again 1 s later on the same directory. Then 50 more jobs are submitted. Checked: the worker and the "
        "scheduler reconnect by themselves (Redis: their logs' `reconnected to Redis` line; "
        "PostgreSQL: the outage lines of psycopg's pool, as the PostgreSQL store logs no "
        "reconnect line of its own), the new jobs run, and, with persistence, every job "
        "acknowledged by `submit` before the restart succeeds.",
        "",
        "| server, persistence, stop | jobs submitted before | unfinished at the restart | jobs lost | downtime, s | restart -> first job started, s (store clock) | reconnect / outage log lines (worker / scheduler) |",
        "|---|---|---|---|---|---|---|",
    ]
    out += rows(
        "store restart",
        [label for label, _, _ in RESTARTS],
        7,
        lambda label, r: [
            f"| {label} | {r.jobs_before:,} | {r.unfinished_at_restart} | **{r.lost}** | "
            f"{fmt(r.downtime_s)} | {fmt(r.first_job_after_s)} | "
            f"{r.worker_reconnect_lines} / {r.scheduler_reconnect_lines} |"
        ],
    )
    out += [
        "",
        "Without persistence a Redis restart loses everything: every job (finished or "
        "not), the node registrations and the leader lease. The fleet recovers by itself "
        "(the worker is told it is dead and registers again; the scheduler takes the lease "
        "again), and new jobs run; but the lost jobs are gone, and fencing tokens start "
        "again from 1. Run Redis with `appendonly yes` (and `appendfsync always` for no "
        "loss of acknowledged submits) or use PostgreSQL.",
        "",
    ]
    # 5
    out += [
        "## 5. Clock skew",
        "",
        "A worker whose whole process (and pool) runs with `time.time`, `time.time_ns` and "
        "`datetime.now` moved by the skew (`ROTA_FAULT_SKEW`, installed by the task module "
        "before the worker registers). Checked: it registers, stays live (fresh heartbeats "
        "by the store's clock) for three failure timeouts, runs a job (which sees the skewed "
        "clock); SIGKILLed, it is declared dead after the failure timeout by the store's "
        "clock.",
        "",
        "| store | worker clock skew | max heartbeat age seen, s (store clock) | job's time.time() - store now, s | kill -> seen dead, s | last heartbeat -> seen dead, s (store clock) | failure timeout, s |",
        "|---|---|---|---|---|---|---|",
    ]
    out += rows(
        "clock skew",
        STORES,
        7,
        lambda store, r: [
            f"| {store} | {r.skew_s:+.0f} s | {fmt(r.max_heartbeat_age_s)} | "
            f"{r.job_clock_offset_s:+.1f} | {fmt(r.declared_dead_after_s)} | "
            f"{fmt(r.silent_before_dead_s)} | {r.failure_timeout_s:g} |"
        ],
    )
    out.append("")
    # 6
    out += [
        "## 6. Poison jobs",
        "",
        "One worker (2 slots, 2 pool processes). Corrupt payloads are written straight into "
        "the store (the SQLite `jobs.payload` column, the Redis job hash's `payload` field) "
        "before any worker could take the job. Checked: each ends `dead` with the attempts "
        "shown, the worker process never exits, keeps its node identity and runs a normal "
        "job afterwards.",
        "",
        "| store | job | final state | attempts | error recorded |",
        "|---|---|---|---|---|",
    ]
    out += rows(
        "poison jobs",
        ("sqlite", "redis"),
        5,
        lambda store, r: [
            f"| {store} | {what} | {state} | {attempts} | `{_cell(error)}` |"
            for what, state, attempts, error in r.cases
        ],
    )
    out += [""]
    # 7, 8
    out += [
        "## 2, 7 and 8. Zombie on Redis; bad input at every door; security",
        "",
        "| tests | what | result | time, s |",
        "|---|---|---|---|",
    ]
    for name, summary, seconds in tests:
        what = {
            "tests/faults/test_bad_input.py": "hypothesis: `task.submit`/`submit_many`, "
            "`app.submit` and `rota submit` (CliRunner) with random and hostile input "
            "(huge, deep, NaN/Infinity, lone surrogates, non-UTF-8, SQL/Lua metacharacters "
            "in task/queue names and keys, unknown options): accepted and stored verbatim, "
            "or refused with a `RotaError`/usage error and the store unchanged",
            "tests/faults/test_security.py": "no pickle/marshal/eval/exec/import_module in "
            "`src/rota` but the CLI's app loader (the worker pool's messages to its own "
            "children are JSON too); SQL parameterised "
            "(AST check of `src/rota/store/*.py`, placeholders in the `.sql` files); Lua "
            "never built from values; store passwords absent from `rota status`, `--json`, "
            "`rota jobs --json` and worker/scheduler logs (a private Redis with "
            "`requirepass`, restarted under them); `redact_url` with an `@` in the password",
            "tests/faults/test_store_bugs.py": "regression test: a non-UTF-8 payload on Redis "
            "is read as a corrupt payload (it used to stall the worker)",
            "tests/faults/test_zombie_redis.py": "the zombie (SIGSTOP) scenario on Redis",
            "tests/faults/test_connection_cuts.py": "connection cuts, short form (400 jobs, "
            "cuts every second) on PostgreSQL and Redis",
        }.get(name, "")
        out.append(f"| `{name}` | {what} | {summary} | {seconds:.0f} |")
    out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="ci")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    started = time.monotonic()
    outcomes = run_scenarios(PROFILES[args.profile])
    tests = []
    for name in (
        "tests/faults/test_bad_input.py",
        "tests/faults/test_security.py",
        "tests/faults/test_store_bugs.py",
        "tests/faults/test_zombie_redis.py",
        "tests/faults/test_connection_cuts.py",
    ):
        print(f"== pytest {name} ...", flush=True)
        summary, seconds = run_pytest([name])
        print(f"   {summary}", flush=True)
        tests.append((name, summary, seconds))
    text = render(args.profile, outcomes, tests, time.monotonic() - started)
    from bench.doc_blocks import with_kept_blocks

    # Keep the sections other commands own (bench.coord, bench.ha, bench.ingest, ...).
    args.out.write_text(with_kept_blocks(args.out, text) + "\n")
    print(f"wrote {args.out}")
    failures = [o for o in outcomes if o.error]
    bad = re.compile(r"\b\d+ (failed|errors?)\b")
    return 1 if failures or any(bad.search(s) for _, s, _ in tests) else 0


if __name__ == "__main__":
    raise SystemExit(main())
