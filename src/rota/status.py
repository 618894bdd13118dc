"""What ``rota status`` shows: nodes with load and liveness, jobs by queue and state, and
the scheduler (leader, placement rate, unplaceable jobs). Data first, rendering second."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from rota.core.model import AttemptRecord, JobRecord, NodeState
from rota.core.states import FINAL_STATES, JobState
from rota.ingest.stats import ingest_processes
from rota.scheduler import STATS_NAME
from rota.store import SCHEDULER_LEASE, Store

if TYPE_CHECKING:
    from rota.coord import Coordinator


def redact_url(url: str) -> str:
    """A store URL without its password (the user info ends at the host part's last ``@``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:  # libpq's keyword form: "host=a,b password=... dbname=..."
        return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url)
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}{slash}{path}"


def fmt_quantity(name: str, value: float) -> str:
    if name == "mem" and value >= 1e6:
        return f"{value / 1e9:.1f}G" if value >= 1e9 else f"{value / 1e6:.0f}M"
    return f"{value:g}"


def collect(store: Store, coordinator: Coordinator | None = None) -> dict[str, Any]:
    """A JSON-ready snapshot of the fleet; with a ``coordinator`` that decides liveness
    itself (ZooKeeper), each node's session too (``None``: no session, it counts dead)."""
    now = store.now()
    sessions = coordinator.node_sessions() if coordinator is not None else None
    nodes = []
    for n in store.list_nodes():
        spec = n.spec
        nodes.append(
            {
                "id": n.id,
                "name": spec.name,
                "state": n.state.value,
                "heartbeat_age": round(now - n.heartbeat_at, 2),
                "registered_at": n.registered_at,
                "up": round(now - n.registered_at, 2),
                "slots": spec.slots,
                "prefetch": spec.prefetch,
                "running": n.running,
                "assigned": n.assigned,
                "resources": spec.resources,
                "used": n.used,
                "labels": spec.labels,
                "queues": list(spec.queues),
                "host": spec.host,
                "pid": spec.pid,
                "session": "store heartbeats" if sessions is None else sessions.get(n.id),
            }
        )
    by_queue: dict[str, dict[str, int]] = {}
    totals: dict[str, int] = {}
    for (queue, state), count in sorted(store.count_jobs().items()):
        by_queue.setdefault(queue, {})[state.value] = count
        totals[state.value] = totals.get(state.value, 0) + count
    lease = store.get_lease(SCHEDULER_LEASE)
    stats = store.get_stats(STATS_NAME) or {}
    return {
        "store": redact_url(store.url),
        "coordinator": coordinator.describe() if coordinator else {"kind": "store", "url": "store"},
        "now": now,
        "nodes": nodes,
        "jobs": {"total": totals, "by_queue": by_queue},
        "scheduler": {
            "leader": lease.holder if lease else None,
            "token": lease.token if lease else None,
            "since": lease.acquired_at if lease else None,
            "decisions_per_s": stats.get("decisions_per_s"),
            "placed_total": stats.get("placed_total"),
            "waiting": stats.get("waiting"),
            "unplaceable": stats.get("unplaceable", []),
            "held": stats.get("held", []),
            "policy": stats.get("policy"),
            # Fair share (rota.scheduler.fairshare): which policies are live, and per tenant
            # its weight, caps, dominant share and jobs, as the leader last published them.
            "allocation": stats.get("allocation") or {},
            "tenants": stats.get("tenants", []),
            # The leader's coordination session as it last published it (ZooKeeper: state,
            # session id, znode, token); the store lease otherwise.
            "session": stats.get("coordinator") if lease else None,
            # Cumulative across leaders (the scheduler's ``totals``), for /metrics.
            "totals": {
                key: int(stats.get(key) or 0)
                for key in (
                    "leader_changes",
                    "nodes_reaped",
                    "lease_expiries",
                    "jobs_requeued",
                    "preemptions",
                    "preempted_work_s",
                )
            },
        },
        "ingest": ingest_processes(store, now),  # `rota ingest` processes (rota.ingest.stats)
    }


_STATE_STYLE = {
    NodeState.LIVE.value: "green",
    NodeState.DRAINING.value: "yellow",
    NodeState.DEAD.value: "red",
    NodeState.STOPPED.value: "dim",
}
_JOB_COLUMNS = [s.value for s in JobState]


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h" if seconds < 172800 else f"{seconds / 86400:.1f}d"


def render(data: dict[str, Any], console: Console) -> None:
    """Print the snapshot as tables. Every name and reason from the store is shown as
    typed (``Text``), never read as rich markup."""
    coord = data.get("coordinator") or {"kind": "store"}
    console.print(Text.assemble(("rota", "bold"), " store ", data["store"]))
    if coord.get("kind") != "store":
        console.print(Text.assemble("coordinator ", str(coord.get("url"))))
    nodes = Table(title="Nodes", title_justify="left")
    for col in (
        "node",
        "state",
        "up",
        "heartbeat",
        "slots",
        "resources (used/total)",
        "labels",
        "queues",
    ):
        nodes.add_column(col)
    by_session = coord.get("kind") != "store"  # ZooKeeper: each node's own session
    if by_session:
        nodes.add_column("session")
    # A node id is its name plus a random suffix: a worker restarted with the same --name
    # is a new row, told apart by the suffix, its age ("up") and its state.
    order = {NodeState.LIVE.value: 0, NodeState.DRAINING.value: 1}
    for n in sorted(data["nodes"], key=lambda n: (order.get(n["state"], 2), n["id"])):
        res = ", ".join(
            f"{k} {fmt_quantity(k, n['used'].get(k, 0.0))}/{fmt_quantity(k, v)}"
            for k, v in sorted(n["resources"].items())
        )
        row: list[Text | str] = [
            Text(n["id"]),
            Text(n["state"], style=_STATE_STYLE.get(n["state"], "")),
            _age(n.get("up", 0.0)),
            f"{n['heartbeat_age']:.1f}s ago",
            f"{n['running']}/{n['slots']} (+{n['assigned']} queued)",
            Text(res or "-"),
            Text(",".join(f"{k}={v}" for k, v in n["labels"].items()) or "-"),
            Text(",".join(n["queues"])),
        ]
        if by_session:
            row.append(_session_cell(n.get("session")))
        nodes.add_row(*row)
    console.print(nodes)
    jobs = Table(title="Jobs", title_justify="left")
    jobs.add_column("queue")
    for state in _JOB_COLUMNS:
        jobs.add_column(state, justify="right")
    for queue, counts in data["jobs"]["by_queue"].items():
        jobs.add_row(Text(queue), *[str(counts.get(s, 0)) for s in _JOB_COLUMNS])
    jobs.add_row(
        Text("all", style="bold"),
        *[Text(str(data["jobs"]["total"].get(s, 0)), style="bold") for s in _JOB_COLUMNS],
    )
    console.print(jobs)
    s = data["scheduler"]
    if s["leader"]:
        console.print(
            Text.assemble(
                "Scheduler leader ",
                (str(s["leader"]), "bold"),
                f" (token {s['token']}), policy {s['policy']}, "
                f"{s['decisions_per_s'] or 0} placements/s, "
                f"{s['waiting'] or 0} pending jobs waiting for room",
            )
        )
        session = s.get("session") or {}
        if session.get("session_id"):
            console.print(
                Text(f"Scheduler ZooKeeper session {session['session_id']}: {session.get('state')}")
            )
    else:
        console.print(
            Text.assemble(
                ("No scheduler is leading", "red"),
                ": start `rota scheduler` or a worker with --scheduler",
            )
        )
    for label, style, key in (("unplaceable", "yellow", "unplaceable"), ("held", "cyan", "held")):
        for u in s.get(key, []):
            console.print(Text.assemble((label, style), f": {u['jobs']} job(s): {u['reason']}"))
    if s.get("tenants"):
        render_tenants(s["tenants"], console)
    if data.get("ingest"):
        render_ingest(data["ingest"], console)


def render_tenants(tenants: list[dict[str, Any]], console: Console) -> None:
    """Fair share: each tenant's weight, caps, dominant share and jobs."""
    table = Table(title="Tenants (fair share)", title_justify="left")
    for col in ("tenant", "weight", "limit", "dominant share", "running", "pending"):
        table.add_column(col, justify="left" if col in ("tenant", "limit") else "right")
    for t in tenants:
        caps = sorted((t.get("limit") or {}).items())
        limit = ", ".join(f"{k}={fmt_quantity(k, v)}" for k, v in caps)
        table.add_row(
            Text(str(t.get("tenant"))),
            f"{t.get('weight', 1.0):g}",
            Text(limit or "-"),
            f"{100 * float(t.get('dominant_share') or 0):.1f} %",
            str(t.get("running", 0)),
            str(t.get("pending", 0)),
        )
    console.print(table)


def render_ingest(processes: list[dict[str, Any]], console: Console) -> None:
    """The ``rota ingest`` processes: source, rates, lag and dead-lettered messages."""
    table = Table(title="Ingest", title_justify="left")
    for col in ("source", "host/pid", "state", "stored/s", "lag", "stored", "dup", "invalid"):
        table.add_column(col, justify="right" if col[0] in "sldi" and col != "source" else "left")
    for p in processes:
        state = "stale" if p["stale"] else "connected" if p["connected"] else "reconnecting"
        table.add_row(
            Text(str(p["source"])),
            Text(f"{p['host']}/{p['pid']}"),
            state,
            f"{p['stored_per_s']:g}",
            "-" if p["lag"] is None else str(p["lag"]),
            str(p["stored"]),
            str(p["duplicates"]),
            str(p["invalid"] + p["refused"]),
        )
    console.print(table)


def _session_cell(session: Any) -> Text:
    if isinstance(session, str):
        return Text(session)
    if not session:
        return Text("none", style="red")
    return Text(f"{session.get('session_id')} ({session.get('load') or '-'})")


_JOB_FIELDS = (
    "task",
    "queue",
    "state",
    "priority",
    "attempts",
    "node_id",
    "token",
    "args",
    "kwargs",
    "resources",
    "labels",
    "timeout",
    "created_at",
    "scheduled_at",
    "started_at",
    "finished_at",
    "result",
    "error",
)


def wait_reason(store: Store, job: JobRecord) -> str | None:
    """Why a pending job waits, as the scheduler leader last published it (tenant caps,
    limits; ``None`` when it gave no reason beyond "no room now", or the job is not
    pending)."""
    if job.state is not JobState.PENDING:
        return None
    reasons = (store.get_stats(STATS_NAME) or {}).get("reasons")
    found = reasons.get(job.id) if isinstance(reasons, dict) else None
    return str(found) if found is not None else None


def render_job(job: JobRecord, console: Console, wait_reason: str | None = None) -> None:
    """One job: state, attempts, node, timings (ISO dates in the local time zone, as
    ``rota schedules``; raw unix seconds in ``--json``), error and traceback; and why it
    waits, when the scheduler said."""
    table = Table(show_header=False, title=f"Job {job.id}", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    d = job.to_dict()
    for key in _JOB_FIELDS:
        value = d[key]
        if key == "attempts":
            text = f"{job.attempts} of {job.max_attempts}"
        elif key == "state" and job.cancel_requested and job.state not in FINAL_STATES:
            text = f"{value} (cancellation requested)"
        elif key.endswith("_at") and value is not None:
            text = f"{local_iso(value)} ({value - job.created_at:+.3f} s)"
            if key == "created_at":
                text = local_iso(value)
        elif key == "timeout" and value is not None:
            text = f"{value:g} s"
        elif key in ("args", "kwargs", "result"):
            text = "" if value is None else repr(value)
        else:
            text = "" if value is None else str(value)
        table.add_row(key, Text(text))
    if job.alloc.to_json() is not None:
        table.add_row("alloc", Text(str(job.alloc.to_dict())))
    if job.preemptions:
        table.add_row("preemptions", Text(str(job.preemptions)))
    if wait_reason:
        table.add_row("waits for", Text(wait_reason))
    console.print(table)
    if job.traceback:
        console.print(job.traceback, markup=False, highlight=False)


def local_iso(ts: float) -> str:
    """Unix seconds as an ISO date in the local time zone, to the second."""
    from datetime import datetime

    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def schedule_rows(store: Store) -> list[dict[str, Any]]:
    """The store's periodic schedules with their last and next ticks (for the CLI and the
    dashboard)."""
    from rota.core.errors import InvalidOption
    from rota.core.periodic import ScheduleSpec, next_tick

    now = store.now()
    rows: list[dict[str, Any]] = []
    for rec in store.list_schedules():
        row: dict[str, Any] = {"name": rec.name, "last_tick": rec.last_tick}
        try:
            spec = ScheduleSpec.from_json(rec.name, rec.spec)
        except InvalidOption as exc:
            row["error"] = str(exc)
            rows.append(row)
            continue
        upcoming = next_tick(spec, max(now, rec.last_tick or now))
        row.update(
            task=spec.job.get("task"),
            cron=spec.cron,
            tz=spec.tz,
            missed=spec.missed,
            grace=spec.grace,
            next_tick=upcoming,
            next_tick_iso=_iso(upcoming, spec.tz),
            last_tick_iso=_iso(rec.last_tick, spec.tz) if rec.last_tick is not None else None,
        )
        rows.append(row)
    return rows


def _iso(ts: float, tz: str) -> str:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(ts, ZoneInfo(tz)).isoformat(timespec="seconds")


def render_attempts(attempts: Sequence[AttemptRecord], console: Console) -> None:
    """A job's attempt history (``Store.job_attempts``), one row per attempt, oldest first."""
    from rich.text import Text

    if not attempts:
        console.print("no attempt recorded")
        return
    table = Table("#", "node", "started", "took", "outcome", "cut short", "error")
    table.title, table.title_justify = "Attempts", "left"
    for a in attempts:
        started = datetime.fromtimestamp(a.started_at).isoformat(sep=" ", timespec="milliseconds")
        took = "running" if a.ended_at is None else f"{a.ended_at - a.started_at:.3f} s"
        cells = (a.attempt, a.node_id or "", started, took, a.outcome or "", a.cut_short or "")
        table.add_row(*(Text(str(c)) for c in cells), Text(a.error or ""))
    console.print(table)
    for a in attempts:  # tracebacks in full, after the table
        if a.traceback:
            console.print(Text(f"attempt {a.attempt} (token {a.token}) traceback:\n{a.traceback}"))
