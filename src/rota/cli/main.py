"""The ``rota`` command line."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, Literal

import click
import orjson
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from rota.cli.common import console, err_console, literal
from rota.cli.ingest import ingest
from rota.cli.ops import COMMANDS, coordinator_option, store_option
from rota.core.errors import JobFailed, ResultTimeout, RotaError
from rota.core.resources import parse_labels, parse_resources
from rota.core.states import JobState
from rota.scheduler import Scheduler, SchedulerConfig
from rota.scheduler.placement import POLICIES
from rota.store import resolve_url
from rota.telemetry.logs import setup_logging

if TYPE_CHECKING:
    from rota.app import Rota


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


for _command in COMMANDS:
    cli.add_command(_command)


@cli.command()
@click.argument("app_spec", metavar="APP")
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Jobs running at once (slots). 8: more slots did not drain faster on a 2-core "
    "machine (bench.defaults, one run: -c 8/16/32/64 gave 1,157/988/1,064/946 jobs/s).",
)
@click.option(
    "--isolation",
    type=click.Choice(["thread", "process"]),
    default="thread",
    show_default=True,
    help="Where sync tasks run unless their @app.task(isolation=...) says: threads of the "
    "worker (default: no hop to another process; bench.defaults, one run: 974-1,733 jobs/s "
    "vs 700-708 for a pool of 2 or 8 processes), or a pool of processes (a task is killed "
    "at its timeout or cancel, and its crash does not stop the worker).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Threads for sync tasks run in threads (default: concurrency, one per slot).",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=None,
    help="Pool processes for sync tasks run in processes (default: concurrency, one per "
    "slot; started only if some task runs in a process).",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=0),
    default=None,
    help="Jobs the scheduler may assign ahead of free slots (default: concurrency/2, at "
    "least 1: the next job is already here when a slot frees). A worker also claims plain "
    "jobs itself as slots free up, under the scheduler's claim grant, in the same store "
    "round trip as its finished jobs' outcomes (Redis, PostgreSQL, SQLite), so few slots "
    "do not wait for a scheduler cycle.",
)
@click.option(
    "--resources",
    default="",
    help="Capacity, e.g. cpu=4,mem=8G,gpu=1 (default: none, so jobs asking for a resource "
    "are never placed here: capacity is what you declare, never guessed).",
)
@click.option(
    "--labels",
    default="",
    help="Labels, e.g. zone=eu,disk=ssd (default: none; jobs requiring a label go elsewhere).",
)
@click.option(
    "--queues",
    "-q",
    default="default",
    show_default=True,
    help="Comma-separated queues (the default is the queue @app.task uses by default).",
)
@click.option("--name", default="", help="Node name (default: host name).")
@click.option(
    "--scheduler", "with_scheduler", is_flag=True, help="Also stand for the scheduler role."
)
@click.option(
    "--policy",
    type=click.Choice(sorted(POLICIES)),
    default="least_loaded",
    show_default=True,
    help="Placement policy when leading (least_loaded: a job goes to the node with the "
    "lowest load, so a fleet shares work evenly).",
)
@click.option(
    "--heartbeat",
    type=click.FloatRange(min=0.05, max=3600),
    default=1.0,
    show_default=True,
    help="Heartbeat interval, seconds (1: a node may miss four beats within its 5 s lease "
    "and the scheduler's 5 s failure timeout before its jobs are taken back).",
)
@click.option(
    "--lease-ttl",
    type=click.FloatRange(min=0.1, max=86400),
    default=5.0,
    show_default=True,
    help="Job lease without heartbeat, seconds (5: a killed worker's jobs run again within "
    "seconds, while a slow beat or two does not cost a job).",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0, max=86400),
    default=10.0,
    show_default=True,
    help="Shutdown grace period, seconds: on SIGTERM running jobs get this long to finish "
    "before they are handed back to pending (10: most short jobs finish; a second "
    "signal stops at once).",
)
@click.option(
    "--cancel-grace",
    type=click.FloatRange(min=0, max=86400),
    default=5.0,
    show_default=True,
    help="Time a cancelled sync job has to stop before it is killed (process) or reported "
    "cancelled with its thread left to finish (thread), seconds.",
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
@coordinator_option
@with_logging
def worker(
    app_spec: str,
    concurrency: int,
    isolation: Literal["thread", "process"],
    threads: int | None,
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
    coordinator: str | None,
    log_level: str,
    log_json: bool,
) -> None:
    """Run a worker node for APP (module:app)."""
    from rota.core.text import check_text
    from rota.loader import load_app
    from rota.options import validate_options
    from rota.worker.node import WorkerConfig, run_worker

    queue_names = tuple(q.strip() for q in queues.split(",") if q.strip())
    if name:
        check_text("--name", name, 100)
    for queue in queue_names:  # the same rule as a job's queue
        validate_options({"queue": queue})
    setup_logging(log_level, log_json, prefix=f"[{name}] " if name else "")
    app = load_app(app_spec)
    config = WorkerConfig(
        name=name,
        concurrency=concurrency,
        prefetch=prefetch,
        isolation=isolation,
        threads=threads,
        processes=processes,
        resources=parse_resources(resources),
        labels=parse_labels(labels),
        queues=queue_names,
        heartbeat_interval=heartbeat,
        lease_ttl=lease_ttl,
        shutdown_grace=grace,
        cancel_grace=cancel_grace,
        metrics_port=metrics_port or None,
        metrics_host=metrics_host,
        coordinator=coordinator,
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
    "--policy",
    type=click.Choice(sorted(POLICIES)),
    default="least_loaded",
    show_default=True,
    help="Placement policy.",
)
@click.option(
    "--lease-ttl",
    type=click.FloatRange(min=0.1, max=86400),
    default=5.0,
    show_default=True,
    help="Leader lease, seconds.",
)
@click.option(
    "--failure-timeout",
    type=click.FloatRange(min=0.1, max=86400),
    default=5.0,
    show_default=True,
    help="Silence that makes a node dead, seconds.",
)
@click.option(
    "--retention",
    type=click.FloatRange(min=0, max=10 * 365 * 86400),
    default=7 * 86400.0,
    show_default=True,
    help="Keep finished jobs this long, seconds.",
)
@click.option(
    "--reserve-slots",
    type=click.IntRange(min=0, max=10_000),
    default=8,
    show_default=True,
    help="Free slots per queue reserved for plain jobs when nothing is pending, so the "
    "store places them as they are submitted (Redis); 0 turns it off.",
)
@coordinator_option
@with_logging
def scheduler(
    app_spec: str | None,
    store_url: str | None,
    policy: str,
    lease_ttl: float,
    failure_timeout: float,
    retention: float,
    reserve_slots: int,
    coordinator: str | None,
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
        coordinator = coordinator or app.coordinator
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
    sched = Scheduler(url, config, coordinator=coordinator)
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
@click.option(
    "--wait",
    is_flag=True,
    help="Wait for the result(s) and print them (with -n: one 'ID RESULT' line per job).",
)
@click.option(
    "--wait-timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="Give up waiting after this many seconds.",
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
    """Wait for the jobs' results and print them: one job's result as JSON; for several,
    one line per job in submit order (``ID RESULT``) after a progress bar, failures on
    stderr, and a count. Exits 1 when a job failed or did not finish in time."""
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
    final: dict[str, Any] = {}
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
    ) as progress:
        bar = progress.add_task("jobs finished", total=len(pending))
        deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
        while pending and (deadline is None or time.monotonic() < deadline):
            done = store.wait_for_results(pending[:1000], 0.5)  # the final ones
            final.update((r.id, r) for r in done)
            pending = [p for p in pending if p not in final]
            progress.update(bar, completed=len(handles) - len(pending))
    failed = 0
    for h in handles:
        record = final.get(h.id)
        if record is None:
            click.echo(f"{h.id}: unfinished after {wait_timeout:g} s", err=True)
        elif record.state is JobState.SUCCEEDED:
            click.echo(f"{h.id} {record.result if record.result is not None else 'null'}")
        else:
            failed += 1
            click.echo(f"{h.id}: ended {record.state.value}: {record.error}", err=True)
    click.echo(
        f"{len(handles) - len(pending)} finished, {failed} failed, {len(pending)} unfinished",
        err=True,
    )
    if failed or pending:
        sys.exit(1)


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
@coordinator_option
@with_logging
def dashboard(
    app_spec: str | None,
    store_url: str | None,
    host: str,
    port: int,
    token: str | None,
    metrics_public: bool,
    history_interval: float,
    coordinator: str | None,
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

        loaded = load_app(app_spec)
        url = loaded.store_url
        coordinator = coordinator or loaded.coordinator
    else:
        url = resolve_url(store_url)
    app = create_app(
        url,
        token,
        metrics_public=metrics_public,
        sample_interval=history_interval,
        trusted_hosts=None if token else open_mode_hosts(host),
        coordinator=coordinator,
    )
    # WARNING only when access is open (no token); otherwise the start is just news.
    level = logging.INFO if token else logging.WARNING
    logging.getLogger("rota.dashboard").log(level, startup_message(url, host, port, token))
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower(), access_log=False)


cli.add_command(ingest)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except RotaError as exc:  # printed as it is: "rota[redis]" keeps its brackets
        err_console.print(literal("error: ", "red") + literal(exc), soft_wrap=True)
        sys.exit(2)
