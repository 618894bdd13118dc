"""Operator commands over a store: ``status``, ``jobs``, ``job``, ``cancel``, ``retry``,
``schedules`` and ``migrate``. Each names its store on stderr; those that only read or
change existing jobs never create a store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
import orjson
from rich import box
from rich.table import Table

from rota.cli.common import (
    console,
    fail,
    literal,
    open_cli_store,
    resolve_job_ids,
    short_ids,
    store_url_for,
)
from rota.core.states import FINAL_STATES, JobState, parse_state
from rota.status import collect, render, render_attempts, render_job, wait_reason

store_option = click.option(
    "--store",
    "store_url",
    default=None,
    help="Store URL (default: $ROTA_STORE or sqlite:///rota.db in the current directory).",
)
app_option = click.option(
    "--app", "app_spec", default=None, help="module:app, to use its store URL (and task names)."
)
coordinator_option = click.option(
    "--coordinator",
    default=None,
    help="Who decides liveness and leadership: store (default) or "
    "zookeeper://host:2181/root ($ROTA_COORDINATOR; a worker defaults to its app's).",
)


def print_json(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str).decode())


@click.command()
@store_option
@app_option
@coordinator_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(
    store_url: str | None, app_spec: str | None, coordinator: str | None, as_json: bool
) -> None:
    """Nodes with their load and liveness; jobs by state and queue; the scheduler."""
    from rota.coord import open_coordinator

    store = open_cli_store(store_url, app_spec, read_only=True, quiet=True)  # shown in it
    if app_spec and not coordinator:
        from rota.loader import load_app

        coordinator = load_app(app_spec).coordinator
    coord = open_coordinator(coordinator)
    try:
        data = collect(store, coord)
    finally:
        coord.close()
    if as_json:
        print_json(data)
    else:
        render(data, console)


@click.command()
@store_option
@app_option
@click.option("--state", default=None, help="e.g. pending, running, dead (alias: failed).")
@click.option("--queue", default=None)
@click.option(
    "--task", default=None, help="Task name; a short name (resize for myapp.resize) needs --app."
)
@click.option("--node", default=None, help="Node id.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def jobs(
    store_url: str | None,
    app_spec: str | None,
    state: str | None,
    queue: str | None,
    task: str | None,
    node: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List jobs, newest first."""
    try:
        wanted = parse_state(state) if state else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--state'") from None
    if task is not None and app_spec:
        from rota.loader import load_app

        task = load_app(app_spec).get_task(task).name  # short names, as in submit
    store = open_cli_store(store_url, app_spec, read_only=True, quiet=as_json)
    found = store.list_jobs(state=wanted, queue=queue, task=task, node_id=node, limit=limit)
    if as_json:
        print_json([j.to_dict() for j in found])
        return
    if not found:
        hint = ""
        if task is not None and "." not in task and not app_spec:
            hint = (
                f"; task names are stored in full (module.name): pass --app module:app to "
                f"use the short name {task!r}"
            )
        console.print(literal(f"no jobs match{hint}"), soft_wrap=True)
        return
    ids = short_ids([j.id for j in found])
    columns: dict[str, Callable[[Any], object]] = {
        "id": lambda j: ids[j.id],
        "task": lambda j: j.task,
        "queue": lambda j: j.queue,
        "state": lambda j: j.state.value,
        "prio": lambda j: j.priority,
        "tries": lambda j: f"{j.attempts}/{j.max_attempts}",
        "node": lambda j: j.node_id or "-",
        "error": lambda j: (j.error or "")[:60],
    }
    if not any(j.node_id for j in found):
        del columns["node"]
    if not any(j.error for j in found):
        del columns["error"]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, padding=(0, 1))
    for col in columns:  # short columns whole; long names fold rather than vanish
        table.add_column(
            col,
            no_wrap=col not in ("task", "error", "node"),
            overflow="fold",
            min_width=12 if col == "task" else None,
        )
    for j in found:
        table.add_row(*(literal(get(j)) for get in columns.values()))
    console.print(table)


@click.command()
@click.argument("job_id")
@store_option
@app_option
@click.option("--json", "as_json", is_flag=True, help="Raw values (times as unix seconds).")
def job(job_id: str, store_url: str | None, app_spec: str | None, as_json: bool) -> None:
    """Show one job: attempts, node, error, timings. JOB_ID may be a unique prefix."""
    store = open_cli_store(store_url, app_spec, read_only=True, quiet=as_json)
    (full,) = resolve_job_ids(store, [job_id])
    found = store.get_job(full)
    if found is None:
        raise fail(f"no job {job_id}")
    attempts = store.job_attempts(found.id)
    reason = wait_reason(store, found)
    if as_json:
        print_json(
            {
                **found.to_dict(),
                "wait_reason": reason,
                "attempt_history": [a.to_dict() for a in attempts],
            }
        )
    else:
        render_job(found, console, reason)
        render_attempts(attempts, console)


@click.command()
@click.argument("job_ids", nargs=-1, required=True)
@store_option
@app_option
def cancel(job_ids: tuple[str, ...], store_url: str | None, app_spec: str | None) -> None:
    """Cancel jobs (ids or unique prefixes); a running one is stopped by its node. Exits 1
    when a job could not be cancelled (unknown, or already finished)."""
    store = open_cli_store(store_url, app_spec, read_only=True)
    ids = resolve_job_ids(store, list(job_ids))
    before = {r.id: r.state for r in store.get_jobs(ids)}
    refused = 0
    for job_id in ids:
        if before.get(job_id) in FINAL_STATES:
            ended = before[job_id]
            if ended is JobState.CANCELLED:
                click.echo(f"{job_id}: already cancelled")
            else:
                refused += 1
                click.echo(f"{job_id}: not cancelled: it already ended {ended.value}", err=True)
            continue
        state = store.cancel(job_id)
        if state is None:
            refused += 1
            click.echo(f"{job_id}: no such job", err=True)
        elif state is JobState.CANCELLED:
            click.echo(f"{job_id}: cancelled")
        elif state in (JobState.RUNNING, JobState.ASSIGNED):
            click.echo(f"{job_id}: cancellation requested ({state.value}: its node stops it)")
        else:
            refused += 1
            click.echo(f"{job_id}: not cancelled: it ended {state.value}", err=True)
    if refused:
        raise SystemExit(1)


@click.command()
@click.argument("job_ids", nargs=-1)
@store_option
@app_option
@click.option("--all-dead", is_flag=True, help="Retry every dead job.")
def retry(
    job_ids: tuple[str, ...], store_url: str | None, app_spec: str | None, all_dead: bool
) -> None:
    """Send dead jobs (ids or unique prefixes) back to pending with fresh attempts. Exits 1
    when a named job is not dead."""
    if not job_ids and not all_dead:
        raise click.UsageError("name the dead jobs to retry (ids or prefixes), or pass --all-dead")
    store = open_cli_store(store_url, app_spec, read_only=True)
    ids = resolve_job_ids(store, list(job_ids))
    not_dead = [r for r in store.get_jobs(ids) if r.state is not JobState.DEAD]
    for r in not_dead:
        click.echo(f"{r.id}: not retried: it is {r.state.value}, not dead", err=True)
    wanted = [i for i in ids if i not in {r.id for r in not_dead}]
    if all_dead:
        wanted += [j.id for j in store.list_jobs(state=JobState.DEAD, limit=1_000_000)]
    sent = store.retry_dead(list(dict.fromkeys(wanted))) if wanted else 0
    click.echo(f"{sent} job(s) sent back to pending")
    if not_dead:
        raise SystemExit(1)


@click.command()
@store_option
@app_option
@click.option("--json", "as_json", is_flag=True)
def schedules(store_url: str | None, app_spec: str | None, as_json: bool) -> None:
    """List periodic schedules: cron, time zone, last and next tick."""
    from rota.status import schedule_rows

    rows = schedule_rows(open_cli_store(store_url, app_spec, read_only=True, quiet=as_json))
    if as_json:
        print_json(rows)
        return
    table = Table("name", "task", "cron", "tz", "missed", "last tick", "next tick")
    for row in rows:  # names and crons are shown as typed, never as rich markup
        table.add_row(
            *(
                literal(value)
                for value in (
                    row["name"],
                    row.get("task") or "",
                    row.get("cron") or "",
                    row.get("tz") or "",
                    row.get("missed") or "",
                    row.get("last_tick_iso") or "-",
                    row.get("next_tick_iso") or row.get("error") or "-",
                )
            )
        )
    console.print(table if rows else "no periodic schedules in this store")


@click.command()
@store_option
@app_option
def migrate(store_url: str | None, app_spec: str | None) -> None:
    """Apply pending schema migrations (PostgreSQL; other stores need none)."""
    store = open_cli_store(store_url, app_spec, read_only=False)
    applied = store.migrate()
    click.echo(
        f"applied {len(applied)} migration(s): {', '.join(applied)}"
        if applied
        else "schema is up to date"
    )


COMMANDS = (status, jobs, job, cancel, retry, schedules, migrate)
__all__ = ["COMMANDS", "app_option", "print_json", "store_option", "store_url_for"]
