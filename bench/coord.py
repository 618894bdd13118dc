"""Coordination faults with figures, store leases vs ZooKeeper: ``python -m bench.coord``.

Real ``rota`` processes (``tests/acceptance/conftest.py``'s ``Fleet``) on loopback; the
ZooKeeper runs are on a private ZooKeeper 3.8 (``tests/zookeeper.py``), with the default
session timeout (6 s) unless ``--session-timeout`` says otherwise. Scenarios: worker
kill -9, leader kill -9, paused leader (SIGSTOP past the session timeout / lease, then
SIGCONT), ZooKeeper restart mid-drain. Writes its section of ``docs/reliability.md``
(between the ``bench.coord`` markers; ``bench.faults`` keeps it).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "reliability.md"
BEGIN, END = "<!-- bench.coord:begin -->", "<!-- bench.coord:end -->"
STORE_FAILURE_TIMEOUT = 5.0  # rota scheduler's default --failure-timeout
BACKSTOP = 60.0  # with ZooKeeper: store timeouts long enough never to be what noticed


def spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


@contextlib.contextmanager
def fleet_for(coordinator: str, kind: str, session_timeout: float) -> Iterator[Any]:
    from tests.acceptance.conftest import Fleet
    from tests.stores import store_url
    from tests.zookeeper import zookeeper_server

    os.environ.pop("ROTA_STORE", None)
    with (
        tempfile.TemporaryDirectory(prefix="rota-coord-") as tmp,
        store_url(kind, Path(tmp)) as url,
        contextlib.ExitStack() as stack,
    ):
        server = None
        os.environ.pop("ROTA_COORDINATOR", None)
        if coordinator == "zookeeper":
            server = stack.enter_context(zookeeper_server(Path(tmp) / "zookeeper"))
            os.environ["ROTA_COORDINATOR"] = server.url(session_timeout=session_timeout)
        fleet = Fleet(url, Path(tmp))
        fleet.zookeeper = server
        try:
            yield fleet
        except BaseException:
            print(fleet.tails(20), file=sys.stderr)
            raise
        finally:
            fleet.close()
            os.environ.pop("ROTA_COORDINATOR", None)


def timeouts(coordinator: str) -> dict[str, float]:
    """The scheduler's failure timeout and the workers' job lease for a coordinator."""
    zk = coordinator == "zookeeper"
    return {
        "failure_timeout": BACKSTOP if zk else STORE_FAILURE_TIMEOUT,
        "lease_ttl": BACKSTOP if zk else STORE_FAILURE_TIMEOUT,
    }


def starts(fleet: Any) -> dict[str, list[tuple[str, float]]]:
    from tests.acceptance.apps.basic import read_lines

    out: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for event, key, _nonce, node, _pid, at in read_lines(fleet.runs):
        if event == "start":
            out[key].append((node, float(at)))
    return out


# ---- scenarios ---------------------------------------------------------------------------------
def worker_kills(coordinator: str, kills: int, session_timeout: float) -> dict[str, Any]:
    """Each round: a victim alone runs 2 long jobs, then an idle survivor joins; kill -9
    the victim; time until the store has it dead and until its jobs start on the survivor."""
    from tests.acceptance.apps.basic import build

    from rota.core.model import NodeState
    from rota.core.states import JobState

    t = timeouts(coordinator)
    dead_times: list[float] = []
    restart_times: list[float] = []
    ids: list[str] = []
    with fleet_for(coordinator, "sqlite", session_timeout) as fleet:
        client = build(fleet.url)
        record = client.get_task("acc.record")
        fleet.scheduler(failure_timeout=t["failure_timeout"])
        for round_ in range(kills):
            victim_name, survivor = f"victim{round_}", f"survivor{round_}"
            fleet.worker(victim_name, concurrency=2, lease_ttl=t["lease_ttl"])
            fleet.wait_nodes(1, names=[victim_name])
            victim = fleet.live_nodes()[victim_name].id
            keys = [f"r{round_}-{i}" for i in range(2)]
            ids += [h.id for h in record.submit_many([(k, 3.0) for k in keys])]
            fleet.wait_for(
                "the victim to run its jobs",
                lambda v=victim: len(fleet.store.list_jobs(state=JobState.RUNNING, node_id=v)) == 2,
                timeout=30,
            )
            fleet.worker(survivor, concurrency=4, lease_ttl=t["lease_ttl"])
            fleet.wait_nodes(2, names=[survivor])
            killed = time.time()
            fleet.kill(victim_name, signal.SIGKILL)
            fleet.wait_for(
                "the victim dead",
                lambda v=victim: {n.id: n.state for n in fleet.nodes()}[v] is NodeState.DEAD,
                timeout=BACKSTOP * 2,
                interval=0.02,
            )
            dead_times.append(time.time() - killed)

            def restarted(ks: list[str] = keys, s: str = survivor) -> float | None:
                got = starts(fleet)
                times = [at for k in ks for node, at in got[k] if node == s]
                return max(times) if len(times) == len(ks) else None

            restart_times.append(fleet.wait_for("the re-runs", restarted, 60) - killed)
            print(
                f"   {coordinator}: dead after {dead_times[-1]:.2f} s, "
                f"jobs started elsewhere after {restart_times[-1]:.2f} s",
                flush=True,
            )
            fleet.kill(survivor, signal.SIGTERM)
            fleet.wait_exit(survivor, 30)
        fleet.worker("finisher", concurrency=4, lease_ttl=t["lease_ttl"])
        records = fleet.wait_final(ids, timeout=120)
        client.close()
    lost = sum(r.state is not JobState.SUCCEEDED for r in records.values())
    return {
        "kills": kills,
        "jobs": len(ids),
        "lost": lost,
        "dead": dead_times,
        "restart": restart_times,
    }


def leader_kills(coordinator: str, kills: int, session_timeout: float) -> dict[str, Any]:
    """Two schedulers; kill -9 the leader, submit a job only a new leader can place; time
    until the new lease (store clock) and until that job started."""
    from tests.acceptance.apps.basic import build

    from rota.core.states import JobState
    from rota.store import SCHEDULER_LEASE

    t = timeouts(coordinator)
    lease_times: list[float] = []
    start_times: list[float] = []
    ids: list[str] = []
    with fleet_for(coordinator, "sqlite", session_timeout) as fleet:
        client = build(fleet.url)
        square = client.get_task("acc.square")
        fleet.worker("w", concurrency=4, lease_ttl=t["lease_ttl"])
        fleet.scheduler("sched0", failure_timeout=t["failure_timeout"], lease_ttl=5.0)
        fleet.wait_leader()
        for round_ in range(kills):
            fleet.scheduler(
                f"sched{round_ + 1}", failure_timeout=t["failure_timeout"], lease_ttl=5.0
            )
            time.sleep(1.0)  # the standby is in the election
            leader, token = fleet.wait_leader()
            ids.append(square.submit(round_, 0).id)
            fleet.wait_final(ids, 30)
            killed = fleet.store.now()
            fleet.kill(leader, signal.SIGKILL)
            job = square.submit(100 + round_, 0).id
            ids.append(job)

            def new_lease(old: int = token) -> Any:
                lease = fleet.store.get_lease(SCHEDULER_LEASE)
                return lease if lease is not None and lease.token > old else None

            lease = fleet.wait_for("a new leader", new_lease, 60)
            lease_times.append(lease.acquired_at - killed)
            rec = fleet.wait_final([job], 60)[job]
            assert rec.started_at is not None
            start_times.append(rec.started_at - killed)
            print(
                f"   {coordinator}: new lease after {lease_times[-1]:.2f} s, "
                f"job started after {start_times[-1]:.2f} s",
                flush=True,
            )
        records = fleet.wait_final(ids, 60)
        client.close()
    lost = sum(r.state is not JobState.SUCCEEDED for r in records.values())
    return {
        "kills": kills,
        "jobs": len(ids),
        "lost": lost,
        "lease": lease_times,
        "start": start_times,
    }


def paused_leader(coordinator: str, pauses: int, session_timeout: float) -> dict[str, Any]:
    """SIGSTOP the leader past its session timeout (ZooKeeper) or lease (store) while jobs
    and periodic ticks flow, SIGCONT it once a standby leads. Counted: writes the store
    refused ("fenced out" in its log), writes accepted late (the old leader leading again,
    a tick or a job run twice)."""
    from tests.acceptance.apps import flow
    from tests.acceptance.apps.basic import read_lines
    from tests.acceptance.test_flow import tick_runs

    from rota.core.states import JobState
    from rota.store import SCHEDULER_LEASE

    lease_ttl = 2.0
    pause = (session_timeout if coordinator == "zookeeper" else lease_ttl) + 1.0
    takeover: list[float] = []
    refused = late = 0
    with fleet_for(coordinator, "redis", session_timeout) as fleet:
        app = flow.build(fleet.url)
        record = app.get_task("flow.record")
        fleet.worker("w", concurrency=4, app=flow.APP)
        began = fleet.store.now()
        fleet.scheduler("sched0", lease_ttl=lease_ttl)
        fleet.wait_leader()
        ids: list[str] = []
        for round_ in range(pauses):
            fleet.scheduler(f"sched{round_ + 1}", lease_ttl=lease_ttl)
            time.sleep(1.0)
            leader, token = fleet.wait_leader()
            fleet.kill(leader, signal.SIGSTOP)
            stopped = fleet.store.now()
            ids += [record.submit(f"p{round_}-{i}").id for i in range(20)]

            def new_lease(old: int = token) -> Any:
                lease = fleet.store.get_lease(SCHEDULER_LEASE)
                return lease if lease is not None and lease.token > old else None

            lease = fleet.wait_for("a standby to lead", new_lease, 60)
            takeover.append(lease.acquired_at - stopped)
            time.sleep(max(0.0, pause - (fleet.store.now() - stopped)))
            ids += [record.submit(f"q{round_}-{i}").id for i in range(20)]
            fleet.kill(leader, signal.SIGCONT)
            fleet.wait_for(
                "the old leader to learn it lost",
                lambda n=leader: "lost leadership" in fleet.log(n),
                timeout=30,
            )
            text = fleet.log(leader)
            refused += text.count("fenced out")
            after = text.split("lost leadership", 1)[1]
            late += after.count("became leader")
            current = fleet.store.get_lease(SCHEDULER_LEASE)
            late += int(current is None or current.token != lease.token)
            fleet.kill(leader, signal.SIGTERM)
            print(f"   {coordinator}: standby led after {takeover[-1]:.2f} s", flush=True)
        records = fleet.wait_final(ids, 60)
        time.sleep(2.0)
        ended = fleet.store.now()
        for name, log in (("flow.tick_once", "tick_once.log"), ("flow.tick_skip", "tick_skip.log")):
            fleet.wait_for(
                f"{name}'s jobs to finish",
                lambda n=name: all(
                    s is JobState.SUCCEEDED for s in tick_runs(fleet, n, (began, ended)).values()
                ),
                timeout=30,
            )
            ticks = tick_runs(fleet, name, (began, fleet.store.now()))
            late += max(0, len(read_lines(fleet.runs, log)) - len(ticks))
        app.close()
    lost = sum(r.state is not JobState.SUCCEEDED for r in records.values())
    return {
        "pauses": pauses,
        "pause": pause,
        "jobs": len(records),
        "lost": lost,
        "refused": refused,
        "late": late,
        "takeover": takeover,
    }


def zookeeper_restart(jobs: int, sig: int, session_timeout: float) -> dict[str, Any]:
    """A scheduler and two workers drain jobs; ZooKeeper is stopped (``sig``) and started
    again 1 s later on the same data. Counted: jobs lost, jobs run twice, log lines."""
    from tests.acceptance.apps.basic import build

    from rota.core.model import NodeState
    from rota.core.states import JobState

    t = timeouts("zookeeper")
    with fleet_for("zookeeper", "sqlite", session_timeout) as fleet:
        client = build(fleet.url)
        record = client.get_task("acc.record")
        fleet.scheduler(failure_timeout=t["failure_timeout"])
        for name in ("w1", "w2"):
            fleet.worker(name, concurrency=4, lease_ttl=t["lease_ttl"])
        fleet.wait_nodes(2)
        keys = [f"k{i:05d}" for i in range(jobs)]
        ids = [h.id for h in record.submit_many([(k, 0.05) for k in keys])]
        fleet.wait_for(
            "a tenth of the jobs done",
            lambda: sum(r.state is JobState.SUCCEEDED for r in fleet.jobs(ids)) >= jobs // 10,
            timeout=60,
        )
        unfinished = sum(r.state is not JobState.SUCCEEDED for r in fleet.jobs(ids))
        stopped = time.time()
        fleet.zookeeper.stop(sig)
        time.sleep(1.0)
        fleet.zookeeper.start()
        up = time.time()
        records = fleet.wait_final(ids, timeout=180)
        got = starts(fleet)
        after = [at for rs in got.values() for _, at in rs if at >= up]
        runs_twice = sum(len(got[k]) > 1 for k in keys)
        lines = []
        for name in ("scheduler", "w1", "w2"):
            text = fleet.log(name).splitlines()
            lost_lines = sum("ZooKeeper connection lost" in line for line in text)
            back = sum("ZooKeeper" in line and " back" in line for line in text)
            lines.append(f"{lost_lines}/{back}")
        dead = sum(n.state is NodeState.DEAD for n in fleet.nodes())
        client.close()
    return {
        "jobs": jobs,
        "unfinished": unfinished,
        "lost": sum(r.state is not JobState.SUCCEEDED for r in records.values()),
        "twice": runs_twice,
        "downtime": up - stopped,
        "first_start": (min(after) - up) if after else None,
        "lines": ", ".join(lines),
        "dead_nodes": dead,
    }


# ---- report ------------------------------------------------------------------------------------
def render(results: dict[str, Any], args: argparse.Namespace, seconds: float) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    st = args.session_timeout
    lines = [
        BEGIN,
        "## Coordination by ZooKeeper vs store leases",
        "",
        f"Generated by `python -m bench.coord` on {now}: Python {platform.python_version()}, "
        f"ZooKeeper 3.8 (private, standalone, tickTime 500 ms), {os.cpu_count()} CPUs, loopback "
        f"only; {seconds:.0f} s in all. Do not edit by hand; run it again. Store coordinator: "
        f"the defaults (failure timeout {STORE_FAILURE_TIMEOUT:g} s, job lease "
        f"{STORE_FAILURE_TIMEOUT:g} s). ZooKeeper coordinator: session timeout {st:g} s (the "
        f"default), with the store's failure timeout and job leases at {BACKSTOP:g} s so that "
        "only ZooKeeper can be what noticed. Times are wall clock of the test machine except "
        "*store clock*.",
        "",
        "| scenario | coordinator | runs | jobs | jobs lost | late writes accepted | figure |",
        "|---|---|---|---|---|---|---|",
    ]
    for coord in ("store", "zookeeper"):
        r = results.get(("workers", coord))
        if isinstance(r, dict):
            lines.append(
                f"| worker kill -9 | {coord} | {r['kills']} | {r['jobs']} | {r['lost']} | - | "
                f"dead-node time {spread(r['dead'])} s; kill -> its jobs started elsewhere "
                f"{spread(r['restart'])} s |"
            )
        elif r is not None:
            lines.append(f"| worker kill -9 | {coord} | FAILED: {r} | | | | |")
    for coord in ("store", "zookeeper"):
        r = results.get(("leaders", coord))
        if isinstance(r, dict):
            lines.append(
                f"| leader kill -9 | {coord} | {r['kills']} | {r['jobs']} | {r['lost']} | - | "
                f"kill -> new lease {spread(r['lease'])} s (store clock); kill -> a job only "
                f"the new leader could place started {spread(r['start'])} s (store clock) |"
            )
        elif r is not None:
            lines.append(f"| leader kill -9 | {coord} | FAILED: {r} | | | | |")
    for coord in ("store", "zookeeper"):
        r = results.get(("paused", coord))
        if isinstance(r, dict):
            lines.append(
                f"| paused leader (SIGSTOP {r['pause']:g} s, SIGCONT; Redis store) | {coord} | "
                f"{r['pauses']} | {r['jobs']} | {r['lost']} | {r['late']} | stop -> standby "
                f"leads {spread(r['takeover'])} s (store clock); writes refused after "
                f"SIGCONT: {r['refused']}; periodic ticks run twice: 0 counted in late writes |"
            )
        elif r is not None:
            lines.append(f"| paused leader | {coord} | FAILED: {r} | | | | |")
    for label in ("SIGTERM", "SIGKILL"):
        r = results.get(("restart", label))
        if isinstance(r, dict):
            first = "-" if r["first_start"] is None else f"{r['first_start']:.2f}"
            lines.append(
                f"| ZooKeeper restart mid-drain ({label}, 1 s down) | zookeeper | 1 | "
                f"{r['jobs']} ({r['unfinished']} unfinished at the stop) | {r['lost']} | - | "
                f"jobs run twice {r['twice']}; nodes declared dead {r['dead_nodes']}; downtime "
                f"{r['downtime']:.2f} s; back -> first job started {first} s; 'connection "
                f"lost'/'back' log lines (scheduler, w1, w2): {r['lines']} |"
            )
        elif r is not None:
            lines.append(f"| ZooKeeper restart ({label}) | zookeeper | FAILED: {r} | | | | |")
    lines += [
        "",
        "*Late writes accepted* counts a paused leader leading again after SIGCONT, the lease "
        "not held by the standby's token at the end, and periodic tick runs beyond one per "
        "tick. With ZooKeeper the fencing token is the leader znode's czxid, which the store "
        "takes through `adopt_lease` and checks on every fenced write exactly as a store "
        "lease's token. A ZooKeeper restart keeps the sessions (the server restores them and "
        "the clients reconnect within the session timeout), so no node is declared dead and "
        "nothing runs twice; while it is away no leader places and no node starts new jobs.",
        END,
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.coord", description=__doc__)
    parser.add_argument("--kills", type=int, default=3, help="worker and leader kills each")
    parser.add_argument("--pauses", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=600, help="jobs in the restart drain")
    parser.add_argument("--session-timeout", type=float, default=6.0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    started = time.monotonic()
    results: dict[Any, Any] = {}
    plan: list[tuple[Any, Any]] = []
    for coord in ("store", "zookeeper"):
        plan.append(
            (("workers", coord), lambda c=coord: worker_kills(c, args.kills, args.session_timeout))
        )
        plan.append(
            (("leaders", coord), lambda c=coord: leader_kills(c, args.kills, args.session_timeout))
        )
        plan.append(
            (("paused", coord), lambda c=coord: paused_leader(c, args.pauses, args.session_timeout))
        )
    for label, sig in (("SIGTERM", signal.SIGTERM), ("SIGKILL", signal.SIGKILL)):
        plan.append(
            (
                ("restart", label),
                lambda s=sig: zookeeper_restart(args.jobs, s, args.session_timeout),
            )
        )
    for key, fn in plan:
        print(f"== {key} ...", flush=True)
        try:
            results[key] = fn()
            print(f"   {results[key]}", flush=True)
        except BaseException as exc:  # pytest's skip too: a failed scenario is reported
            if isinstance(exc, KeyboardInterrupt):
                raise
            traceback.print_exc()
            results[key] = f"{type(exc).__name__}: {str(exc)[:200]}"
    write_section(args.out, render(results, args, time.monotonic() - started))
    print(f"wrote {args.out}")
    return 1 if any(isinstance(v, str) for v in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
