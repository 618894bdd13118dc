"""What ``rota status`` shows: nodes with load and liveness, jobs by queue and state, and
the scheduler (leader, placement rate, unplaceable jobs). Data first, rendering second."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rota.core.model import AttemptRecord, JobRecord, NodeState
from rota.core.states import JobState
from rota.scheduler import STATS_NAME
from rota.store import SCHEDULER_LEASE, Store


def redact_url(url: str) -> str:
    """A store URL without its password (the user info ends at the host part's last ``@``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
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


def collect(store: Store) -> dict[str, Any]:
    """A JSON-ready snapshot of the fleet."""
    now = store.now()
    nodes = []
    for n in store.list_nodes():
        spec = n.spec
        nodes.append(
            {
                "id": n.id,
                "name": spec.name,
                "state": n.state.value,
                "heartbeat_age": round(now - n.heartbeat_at, 2),
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
            # Cumulative across leaders (the scheduler's ``totals``), for /metrics.
            "totals": {
                key: int(stats.get(key) or 0)
                for key in ("leader_changes", "nodes_reaped", "lease_expiries", "jobs_requeued")
            },
        },
    }


_STATE_STYLE = {
    NodeState.LIVE.value: "green",
    NodeState.DRAINING.value: "yellow",
    NodeState.DEAD.value: "red",
    NodeState.STOPPED.value: "dim",
}
_JOB_COLUMNS = [s.value for s in JobState]


def render(data: dict[str, Any], console: Console) -> None:
    """Print the snapshot as tables."""
    console.print(f"[bold]rota[/] store {data['store']}")
    nodes = Table(title="Nodes", title_justify="left")
    for col in (
        "name",
        "state",
        "heartbeat",
        "slots",
        "resources (used/total)",
        "labels",
        "queues",
    ):
        nodes.add_column(col)
    for n in data["nodes"]:
        res = ", ".join(
            f"{k} {fmt_quantity(k, n['used'].get(k, 0.0))}/{fmt_quantity(k, v)}"
            for k, v in sorted(n["resources"].items())
        )
        style = _STATE_STYLE.get(n["state"], "")
        nodes.add_row(
            n["name"],
            f"[{style}]{n['state']}[/]",
            f"{n['heartbeat_age']:.1f}s ago",
            f"{n['running']}/{n['slots']} (+{n['assigned']} queued)",
            res or "-",
            ",".join(f"{k}={v}" for k, v in n["labels"].items()) or "-",
            ",".join(n["queues"]),
        )
    console.print(nodes)
    jobs = Table(title="Jobs", title_justify="left")
    jobs.add_column("queue")
    for state in _JOB_COLUMNS:
        jobs.add_column(state, justify="right")
    for queue, counts in data["jobs"]["by_queue"].items():
        jobs.add_row(queue, *[str(counts.get(s, 0)) for s in _JOB_COLUMNS])
    jobs.add_row("[bold]all", *[f"[bold]{data['jobs']['total'].get(s, 0)}" for s in _JOB_COLUMNS])
    console.print(jobs)
    s = data["scheduler"]
    if s["leader"]:
        console.print(
            f"Scheduler leader [bold]{s['leader']}[/] (token {s['token']}), policy {s['policy']}, "
            f"{s['decisions_per_s'] or 0} placements/s, {s['waiting'] or 0} pending jobs waiting for room"
        )
    else:
        console.print(
            "[red]No scheduler is leading[/]: start `rota scheduler` or a worker with --scheduler"
        )
    for u in s["unplaceable"]:
        console.print(f"[yellow]unplaceable[/]: {u['jobs']} job(s): {escape(str(u['reason']))}")
    for u in s.get("held", []):
        console.print(f"[cyan]held[/]: {u['jobs']} job(s): {escape(str(u['reason']))}")


def render_job(job: JobRecord, console: Console) -> None:
    """One job: state, attempts, node, timings, error and traceback."""
    table = Table(show_header=False, title=f"Job {job.id}", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    d = job.to_dict()
    for key in (
        "task",
        "queue",
        "state",
        "priority",
        "attempts",
        "max_attempts",
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
    ):
        value = d[key]
        if key == "attempts":
            value = f"{job.attempts} of {job.max_attempts}"
        elif key.endswith("_at") and value is not None:
            value = f"{value:.3f} ({value - job.created_at:+.3f} s)"
        table.add_row(
            key,
            ""
            if value is None
            else repr(value)
            if key in ("args", "kwargs", "result")
            else str(value),
        )
    console.print(table)
    if job.traceback:
        console.print(job.traceback, markup=False, highlight=False)


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
