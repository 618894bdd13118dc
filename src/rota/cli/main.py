"""The ``rota`` command line."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from rota.core.errors import JobFailed, ResultTimeout, RotaError
from rota.core.resources import parse_labels, parse_resources
from rota.core.states import JobState, parse_state
from rota.scheduler import Scheduler, SchedulerConfig
from rota.status import collect, render, render_attempts, render_job
from rota.store import Store, open_store, resolve_url
from rota.telemetry.logs import setup_logging

if TYPE_CHECKING:
    from rota.app import Rota

console = Console()


def _store_from(store_url: str | None, app_spec: str | None) -> Store:
    if app_spec:
        from rota.loader import load_app

        return open_store(load_app(app_spec).store_url)
    return open_store(store_url or resolve_url())  # an explicit --store wins over $ROTA_STORE


def _print_json(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str).decode())


store_option = click.option(
    "--store",
    "store_url",
    default=None,
    help="Store URL (default: $ROTA_STORE or sqlite:///rota.db).",
)
app_option = click.option(
    "--app", "app_spec", default=None, help="module:app, to use its store URL."
)
log_options = [
    click.option("--log-level", default="INFO", show_default=True),
    click.option("--log-json", is_flag=True, help="One JSON object per log line."),
]


def with_logging(fn: Any) -> Any:
    for option in reversed(log_options):
        fn = option(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rota")
def cli() -> None:
    """rota: a distributed task scheduler for Python."""


@cli.command()
@click.argument("app_spec", metavar="APP")
@click.option(
    "--concurrency", "-c", default=8, show_default=True, help="Jobs running at once (slots)."
)
@click.option(
    "--processes",
    type=int,
    default=None,
    help="Child processes for sync tasks (default: concurrency).",
)
@click.option(
    "--prefetch",
    type=int,
    default=None,
    help="Jobs assigned ahead of free slots (default: concurrency/2).",
)
@click.option("--resources", default="", help="Capacity, e.g. cpu=4,mem=8G,gpu=1.")
@click.option("--labels", default="", help="Labels, e.g. zone=eu,disk=ssd.")
@click.option(
    "--queues", "-q", default="default", show_default=True, help="Comma-separated queues."
)
@click.option("--name", default="", help="Node name (default: host name).")
@click.option(
    "--scheduler", "with_scheduler", is_flag=True, help="Also stand for the scheduler role."
)
@click.option(
    "--policy", default="least_loaded", show_default=True, help="Placement policy when leading."
)
@click.option("--heartbeat", default=1.0, show_default=True, help="Heartbeat interval, seconds.")
@click.option(
    "--lease-ttl", default=5.0, show_default=True, help="Job lease without heartbeat, seconds."
)
@click.option("--grace", default=10.0, show_default=True, help="Shutdown grace period, seconds.")
@click.option(
    "--cancel-grace",
    default=5.0,
    show_default=True,
    help="Time a cancelled sync job has to stop before it is killed, seconds.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    default=0,
    help="Serve this node's Prometheus metrics on this port (0: off).",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Address for --metrics-port."
)
@with_logging
def worker(
    app_spec: str,
    concurrency: int,
    processes: int | None,
    prefetch: int | None,
    resources: str,
    labels: str,
    queues: str,
    name: str,
    with_scheduler: bool,
    policy: str,
    heartbeat: float,
    lease_ttl: float,
    grace: float,
    cancel_grace: float,
    metrics_port: int,
    metrics_host: str,
    log_level: str,
    log_json: bool,
) -> None:
    """Run a worker node for APP (module:app)."""
    from rota.loader import load_app
    from rota.worker.node import WorkerConfig, run_worker

    setup_logging(log_level, log_json, prefix=f"[{name}] " if name else "")
    app = load_app(app_spec)
    config = WorkerConfig(
        name=name,
        concurrency=concurrency,
        prefetch=prefetch,
        processes=processes,
        resources=parse_resources(resources),
        labels=parse_labels(labels),
        queues=tuple(q.strip() for q in queues.split(",") if q.strip()),
        heartbeat_interval=heartbeat,
        lease_ttl=lease_ttl,
        shutdown_grace=grace,
        cancel_grace=cancel_grace,
        metrics_port=metrics_port or None,
        metrics_host=metrics_host,
        scheduler=SchedulerConfig(policy=policy, failure_timeout=lease_ttl)
        if with_scheduler
        else None,
    )
    _sync_schedules(app)
    run_worker(app, config)


def _sync_schedules(app: Rota) -> None:
    """Write the app's periodic schedules to the store (logged; a failure is not fatal:
    the scheduler goes on with what the store has)."""
    import logging

    log = logging.getLogger("rota.cli")
    try:
        count = app.sync_schedules()
    except Exception as exc:
        log.warning("could not write the app's periodic schedules to the store: %s", exc)
        return
    if count:
        log.info("periodic schedules written to the store: %s", ", ".join(sorted(app.schedules)))


@cli.command()
@click.argument("app_spec", metavar="[APP]", required=False)
@store_option
@click.option(
    "--policy", default="least_loaded", show_default=True, help="least_loaded, spread or bin_pack."
)
@click.option("--lease-ttl", default=5.0, show_default=True, help="Leader lease, seconds.")
@click.option(
    "--failure-timeout",
    default=5.0,
    show_default=True,
    help="Silence that makes a node dead, seconds.",
)
@click.option(
    "--retention",
    default=7 * 86400.0,
    show_default=True,
    help="Keep finished jobs this long, seconds.",
)
@click.option(
    "--reserve-slots",
    default=8,
    show_default=True,
    help="Free slots per queue reserved for plain jobs when nothing is pending, so the "
    "store places them as they are submitted (Redis); 0 turns it off.",
)
@with_logging
def scheduler(
    app_spec: str | None,
    store_url: str | None,
    policy: str,
    lease_ttl: float,
    failure_timeout: float,
    retention: float,
    reserve_slots: int,
    log_level: str,
    log_json: bool,
) -> None:
    """Run a scheduler (leader or standby) over APP's store."""
    import signal

    setup_logging(log_level, log_json, prefix="[scheduler] ")
    if app_spec:
        from rota.loader import load_app

        app = load_app(app_spec)
        url = app.store_url
        _sync_schedules(app)
    else:
        url = store_url or resolve_url()
    config = SchedulerConfig(
        policy=policy,
        lease_ttl=lease_ttl,
        failure_timeout=failure_timeout,
        retention=retention,
        reserve_slots=reserve_slots,
    )
    sched = Scheduler(url, config)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sched.stop.set())
    sched.run()


@cli.command()
@click.argument("app_spec", metavar="APP")
@click.argument("task_name", metavar="TASK")
@click.argument("args_json", metavar="[ARGS]", default="[]")
@click.option("--kwargs", "kwargs_json", default="{}", help="Keyword arguments as a JSON object.")
@click.option("--queue", default=None)
@click.option("--priority", type=int, default=None)
@click.option("--retries", type=int, default=None)
@click.option("--timeout", type=float, default=None, help="Job timeout, seconds.")
@click.option("--delay", type=float, default=None, help="Start no sooner than this many seconds.")
@click.option("--resources", default=None, help="e.g. cpu=1,gpu=1")
@click.option("--labels", default=None, help="Required node labels, e.g. zone=eu")
@click.option(
    "--count",
    "-n",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Submit this many copies.",
)
@click.option("--wait", is_flag=True, help="Wait for the result(s) and print them.")
@click.option(
    "--wait-timeout", type=float, default=None, help="Give up waiting after this many seconds."
)
def submit(
    app_spec: str,
    task_name: str,
    args_json: str,
    kwargs_json: str,
    queue: str | None,
    priority: int | None,
    retries: int | None,
    timeout: float | None,
    delay: float | None,
    resources: str | None,
    labels: str | None,
    count: int,
    wait: bool,
    wait_timeout: float | None,
) -> None:
    """Submit a job of TASK with ARGS (a JSON array)."""
    from rota.loader import load_app

    app = load_app(app_spec)
    try:
        args = orjson.loads(args_json)
        kwargs = orjson.loads(kwargs_json)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(args, list):
        raise click.BadParameter("ARGS must be a JSON array, e.g. '[\"a.png\", 200]'")
    if not isinstance(kwargs, dict):
        raise click.BadParameter("--kwargs must be a JSON object")
    opts: dict[str, Any] = {
        k: v
        for k, v in {
            "queue": queue,
            "priority": priority,
            "retries": retries,
            "timeout": timeout,
            "delay": delay,
        }.items()
        if v is not None
    }
    if resources is not None:
        opts["resources"] = parse_resources(resources)
    if labels is not None:
        opts["labels"] = parse_labels(labels)
    call = app.get_task(task_name).options(**opts)
    handles = call.submit_jobs([call.new_job(args, kwargs) for _ in range(count)])
    if not wait:
        for h in handles:
            click.echo(h.id)
        return
    _wait_for(handles, wait_timeout)


def _wait_for(handles: list[Any], wait_timeout: float | None) -> None:
    """Wait for the jobs' results: print one result, or show a progress bar for many."""
    failed = 0
    if len(handles) == 1:
        h = handles[0]
        try:
            click.echo(orjson.dumps(h.result(timeout=wait_timeout)).decode())
        except (JobFailed, ResultTimeout) as exc:
            click.echo(f"{h.id}: {exc}", err=True)
            sys.exit(1)
        return
    store = handles[0].app.store
    pending = [h.id for h in handles]
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    ) as progress:
        bar = progress.add_task("jobs finished", total=len(pending))
        deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
        while pending and (deadline is None or time.monotonic() < deadline):
            done = store.wait_for_results(pending[:1000], 0.5)  # the final ones
            finished = {r.id for r in done}
            failed += sum(1 for r in done if r.state is not JobState.SUCCEEDED)
            pending = [p for p in pending if p not in finished]
            progress.update(bar, completed=len(handles) - len(pending))
    click.echo(
        f"{len(handles) - len(pending)} finished, {failed} failed, {len(pending)} unfinished"
    )
    if failed or pending:
        sys.exit(1)


@cli.command()
@store_option
@app_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(store_url: str | None, app_spec: str | None, as_json: bool) -> None:
    """Nodes with their load and liveness; jobs by state and queue; the scheduler."""
    store = _store_from(store_url, app_spec)
    data = collect(store)
    if as_json:
        _print_json(data)
    else:
        render(data, console)


@cli.command()
@store_option
@app_option
@click.option("--state", default=None, help="e.g. pending, running, dead (alias: failed).")
@click.option("--queue", default=None)
@click.option("--task", default=None)
@click.option("--node", default=None, help="Node id.")
@click.option("--limit", default=50, show_default=True)
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
    from rich.table import Table

    try:
        wanted = parse_state(state) if state else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    store = _store_from(store_url, app_spec)
    found = store.list_jobs(state=wanted, queue=queue, task=task, node_id=node, limit=limit)
    if as_json:
        _print_json([j.to_dict() for j in found])
        return
    table = Table()
    for col in ("id", "task", "queue", "state", "prio", "attempts", "node", "error"):
        table.add_column(col)
    for j in found:
        table.add_row(
            j.id,
            j.task,
            j.queue,
            j.state.value,
            str(j.priority),
            f"{j.attempts}/{j.max_attempts}",
            j.node_id or "-",
            (j.error or "")[:60],
        )
    console.print(table)


@cli.command()
@click.argument("job_id")
@store_option
@app_option
@click.option("--json", "as_json", is_flag=True)
def job(job_id: str, store_url: str | None, app_spec: str | None, as_json: bool) -> None:
    """Show one job: attempts, node, error, timings."""
    store = _store_from(store_url, app_spec)
    found = store.get_job(job_id)
    if found is None:
        raise click.ClickException(f"no job {job_id}")
    attempts = store.job_attempts(found.id)
    if as_json:
        _print_json({**found.to_dict(), "attempt_history": [a.to_dict() for a in attempts]})
    else:
        render_job(found, console)
        render_attempts(attempts, console)


@cli.command()
@click.argument("job_ids", nargs=-1, required=True)
@store_option
@app_option
def cancel(job_ids: tuple[str, ...], store_url: str | None, app_spec: str | None) -> None:
    """Cancel jobs (a running one is stopped by its node)."""
    store = _store_from(store_url, app_spec)
    for job_id in job_ids:
        state = store.cancel(job_id)
        click.echo(f"{job_id}: {state.value if state else 'no such job'}")


@cli.command()
@click.argument("job_ids", nargs=-1)
@store_option
@app_option
@click.option("--all-dead", is_flag=True, help="Retry every dead job.")
def retry(
    job_ids: tuple[str, ...], store_url: str | None, app_spec: str | None, all_dead: bool
) -> None:
    """Send dead jobs back to pending with fresh attempts."""
    store = _store_from(store_url, app_spec)
    ids = list(job_ids)
    if all_dead:
        ids += [j.id for j in store.list_jobs(state=JobState.DEAD, limit=1_000_000)]
    click.echo(f"{store.retry_dead(ids)} job(s) sent back to pending")


@cli.command()
@store_option
@app_option
@click.option("--json", "as_json", is_flag=True)
def schedules(store_url: str | None, app_spec: str | None, as_json: bool) -> None:
    """List periodic schedules: cron, time zone, last and next tick."""
    from rota.status import schedule_rows

    rows = schedule_rows(_store_from(store_url, app_spec))
    if as_json:
        _print_json(rows)
        return
    from rich.table import Table
    from rich.text import Text

    table = Table("name", "task", "cron", "tz", "missed", "last tick", "next tick")
    for row in rows:  # Text: names and crons are shown as typed, never as rich markup
        table.add_row(
            *(
                Text(str(value))
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


@cli.command()
@store_option
@app_option
def migrate(store_url: str | None, app_spec: str | None) -> None:
    """Apply pending schema migrations (PostgreSQL; other stores need none)."""
    store = _store_from(store_url, app_spec)
    applied = store.migrate()
    click.echo(
        f"applied {len(applied)} migration(s): {', '.join(applied)}"
        if applied
        else "schema is up to date"
    )


@cli.command()
@click.option("--jobs", "n_jobs", default=3000, show_default=True, help="How many jobs to submit.")
@click.option(
    "--store", "store_url", default=None, help="Store URL (default: a temporary SQLite file)."
)
@click.option("--no-kill", is_flag=True, help="Do not kill a node midway.")
def demo(n_jobs: int, store_url: str | None, no_kill: bool) -> None:
    """Run a scheduler and a few worker nodes on a temporary store and watch them work."""
    from rota.cli.demo import run_demo

    sys.exit(run_demo(n_jobs=n_jobs, store_url=store_url, kill=not no_kill, console=console))


@cli.command()
@click.argument("app_spec", metavar="[APP]", required=False)
@store_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8080, show_default=True, help="Port to listen on.")
@click.option(
    "--token",
    envvar="ROTA_DASHBOARD_TOKEN",
    default=None,
    help="Required for every page and API call ($ROTA_DASHBOARD_TOKEN). Mandatory unless "
    "--host is a loopback address.",
)
@click.option(
    "--metrics-public", is_flag=True, help="Serve /metrics without the token (for Prometheus)."
)
@click.option(
    "--history-interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between chart samples (history starts when the dashboard starts).",
)
@with_logging
def dashboard(
    app_spec: str | None,
    store_url: str | None,
    host: str,
    port: int,
    token: str | None,
    metrics_public: bool,
    history_interval: float,
    log_level: str,
    log_json: bool,
) -> None:
    """Serve the web dashboard and its JSON API (/api/, /metrics) over APP's store."""
    import logging

    try:
        import uvicorn

        from rota.dashboard.app import create_app, is_loopback, open_mode_hosts, startup_message
    except ImportError as exc:
        raise click.ClickException(
            f"the dashboard needs 'pip install rota[dashboard]' ({exc})"
        ) from None

    setup_logging(log_level, log_json, prefix="[dashboard] ")
    token = token or None
    if token is None and not is_loopback(host):
        raise click.UsageError(
            f"refusing to serve the dashboard on {host} without a token: "
            "set --token or ROTA_DASHBOARD_TOKEN, or bind to 127.0.0.1"
        )
    if app_spec:
        from rota.loader import load_app

        url = load_app(app_spec).store_url
    else:
        url = resolve_url(store_url)
    app = create_app(
        url,
        token,
        metrics_public=metrics_public,
        sample_interval=history_interval,
        trusted_hosts=None if token else open_mode_hosts(host),
    )
    logging.getLogger("rota.dashboard").warning(startup_message(url, host, port, token))
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower(), access_log=False)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except RotaError as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}")
        sys.exit(2)
