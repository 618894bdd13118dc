"""``rota demo``: a scheduler and four worker nodes of different capacities, as real
processes on a temporary SQLite store; a few thousand jobs of mixed priority and resource
needs; one node killed midway. Live progress, then a summary of where each job ran."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from rota.core.errors import RotaError
from rota.core.model import NodeRecord
from rota.core.states import FINAL_STATES, JobState
from rota.scheduler import STATS_NAME
from rota.store import Store, open_store
from rota.workflow import WorkflowHandle

FAILURE_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class DemoNode:
    name: str
    concurrency: int
    resources: str
    labels: str = ""


NODES = (
    DemoNode("cpu-small", 4, "cpu=4,mem=8G"),
    DemoNode("cpu-large", 8, "cpu=8,mem=32G", "zone=eu"),
    DemoNode("gpu-box", 4, "cpu=4,gpu=1,mem=16G", "accel=gpu"),
    DemoNode("edge", 3, "cpu=3,mem=4G", "zone=edge"),
)
VICTIM = "cpu-large"


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "rota", *args],
        env=env,
        stdout=out,
        stderr=out,
        start_new_session=True,
    )


def submit_mix(n_jobs: int, seed: int = 7) -> list[str]:
    """Submit the demo's job mix through the public API; returns the job ids."""
    from rota.cli.demo_app import doomed, fetch, flaky, render, train

    rng = random.Random(seed)
    ids: list[str] = []
    n_render = int(n_jobs * 0.55)
    n_fetch = int(n_jobs * 0.2)
    n_flaky = int(n_jobs * 0.15)
    n_train = max(1, int(n_jobs * 0.04))
    n_doomed = max(1, n_jobs - n_render - n_fetch - n_flaky - n_train)
    for prio in (0, 5):  # two priority levels of render work; the urgent ones go first
        batch = [(i, rng.randint(40, 160)) for i in range(n_render // 2)]
        ids += [h.id for h in render.options(priority=prio).submit_many(batch)]
    ids += [
        h.id
        for h in fetch.submit_many(
            [(f"https://example.test/{i}", rng.randint(20, 80)) for i in range(n_fetch)]
        )
    ]
    ids += [h.id for h in flaky.submit_many([(i, rng.randint(20, 60)) for i in range(n_flaky)])]
    ids += [
        h.id
        for h in train.options(priority=9).submit_many(
            [(i, rng.randint(100, 200)) for i in range(n_train)]
        )
    ]
    ids += [h.id for h in doomed.submit_many([(i,) for i in range(n_doomed)])]
    # One job no node can ever run: accepted, and reported as unplaceable.
    ids += [h.id for h in render.options(resources={"cpu": 64}).submit_many([(0, 1)])]
    return ids


def run_demo(
    n_jobs: int = 3000,
    store_url: str | None = None,
    kill: bool = True,
    console: Console | None = None,
) -> int:
    """Run the demo; returns a process exit code (0: every job accounted for)."""
    console = console or Console()
    workdir = Path(tempfile.mkdtemp(prefix="rota-demo-"))
    url = store_url or f"sqlite:///{workdir / 'rota.db'}"
    env = {**os.environ, "ROTA_STORE": url, "PYTHONUNBUFFERED": "1"}
    os.environ["ROTA_STORE"] = url
    logs = workdir / "logs.txt"  # kept when the demo fails (and then pointed at)
    console.print(Text.assemble(("rota demo", "bold"), f": store {url}"))
    code = 1
    procs: dict[str, subprocess.Popen[bytes]] = {}
    store = open_store(url)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # clean up children on SIGTERM too
    try:
        scheduler = [
            "scheduler",
            "--store",
            url,
            "--failure-timeout",
            str(FAILURE_TIMEOUT),
            "--lease-ttl",
            "2",
        ]
        for name in ("scheduler", "scheduler-standby"):  # a leader and a standby
            procs[name] = _spawn(scheduler, env, logs)
        for node in NODES:
            args = [
                "worker",
                "rota.cli.demo_app:app",
                "--name",
                node.name,
                "--concurrency",
                str(node.concurrency),
                "--resources",
                node.resources,
                "--lease-ttl",
                str(FAILURE_TIMEOUT),
                "--grace",
                "5",
            ]
            if node.labels:
                args += ["--labels", node.labels]
            procs[node.name] = _spawn(args, env, logs)
        deadline = time.monotonic() + 30
        while len(store.list_nodes()) < len(NODES) and time.monotonic() < deadline:
            time.sleep(0.1)
        ids = submit_mix(n_jobs)
        console.print(
            f"submitted {len(ids)} jobs: render (cpu=1, priority 0 and 5), fetch (async), flaky "
            f"(fails 35%, retried), train (gpu=1, priority 9), doomed (always fails), one needing cpu=64"
        )
        from rota.cli.demo_app import pipeline

        workflow = pipeline().submit()
        ids += [j.id for j in workflow.jobs]
        console.print(
            f"submitted a workflow of {len(workflow.jobs)} jobs: 8 frames rendered in parallel "
            "-> assemble(frames) -> publish(video); a periodic job demo.heartbeat runs every 2 s"
        )
        killed_at, rerun = _watch(store, ids, procs, kill, console)
        _flow_summary(store, workflow, console)
        code = _summary(store, ids, killed_at, rerun, console)
        return code
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        store.close()
        signal.signal(signal.SIGTERM, previous)
        if code == 0:
            shutil.rmtree(workdir, ignore_errors=True)
        else:  # the processes' logs say what went wrong: keep them
            for leftover in workdir.glob("rota.db*"):
                leftover.unlink(missing_ok=True)
            console.print(Text(f"the demo's process logs are kept in {logs}"))


def _flow_summary(store: Store, workflow: WorkflowHandle, console: Console) -> None:
    """What the workflow returned and how often the periodic job ran."""
    try:
        console.print(
            Text.assemble("workflow result: ", (str(workflow.result(timeout=10)), "bold"))
        )
    except RotaError as exc:
        console.print(Text.assemble(("workflow did not succeed", "yellow"), f": {exc}"))
    ticks = store.list_jobs(task="demo.heartbeat", limit=10_000)
    console.print(
        f"periodic demo.heartbeat: {len(ticks)} ticks, each run once "
        f"({sum(r.state is JobState.SUCCEEDED for r in ticks)} succeeded) with two schedulers up"
    )


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _node_table(nodes: list[NodeRecord]) -> Table:
    table = Table(title="nodes", title_justify="left")
    for col in ("node", "state", "running", "resources in use"):
        table.add_column(col)
    for n in nodes:
        spec = n.spec
        used = ", ".join(
            f"{k} {n.used.get(k, 0):g}/{v:g}" for k, v in spec.resources.items() if k != "mem"
        )
        state = n.state.value
        style = {"live": "green", "dead": "red"}.get(state, "dim")
        table.add_row(spec.name, f"[{style}]{state}[/]", f"{n.running}/{spec.slots}", used)
    return table


def _watch(
    store: Store,
    ids: list[str],
    procs: dict[str, subprocess.Popen[bytes]],
    kill: bool,
    console: Console,
) -> tuple[float | None, list[str]]:

    assert isinstance(store, Store)
    total = len(ids) - 1  # the unplaceable job never finishes
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    bar = progress.add_task("jobs finished", total=total)
    killed_at: float | None = None
    rerun: list[str] = []
    start = time.monotonic()
    with Live(console=console, refresh_per_second=8) as live:
        while True:
            counts = Counter[JobState]()
            for (_, state), n in store.count_jobs().items():
                counts[state] += n
            ticks = store.list_jobs(task="demo.heartbeat", limit=100_000)  # not in ``ids``
            finished = sum(counts[s] for s in FINAL_STATES)
            finished -= sum(r.state in FINAL_STATES for r in ticks)
            progress.update(bar, completed=min(finished, total))
            nodes = [n for n in store.list_nodes() if n.state.value != "stopped"]
            line = "  ".join(f"{s.value} {counts[s]}" for s in JobState if counts[s])
            note = f"[red]killed {VICTIM} (SIGKILL)[/]\n" if killed_at else ""
            live.update(Group(progress, _node_table(nodes), line, note))
            if kill and killed_at is None and finished >= total // 2:
                rerun = [
                    j.id
                    for j in store.list_jobs(state=JobState.RUNNING, limit=1000)
                    if (j.node_id or "").startswith(VICTIM)
                ]
                procs[VICTIM].send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
            if finished >= total or time.monotonic() - start > 600:
                break
            crashed = [n for n, p in procs.items() if n != VICTIM and p.poll() is not None]
            if crashed:
                raise RuntimeError(
                    f"demo process(es) exited early: {', '.join(crashed)}; see the logs"
                )
            time.sleep(0.25)
    return killed_at, rerun


def _summary(
    store: Store, ids: list[str], killed_at: float | None, rerun: list[str], console: Console
) -> int:

    assert isinstance(store, Store)
    records = store.get_jobs(ids)
    node_names = {n.id: n.spec.name for n in store.list_nodes()}
    per_node: dict[str, Counter[str]] = defaultdict(Counter)
    per_task: dict[str, Counter[str]] = defaultdict(Counter)
    for r in records:
        per_node[node_names.get(r.node_id or "", "-")][r.state.value] += 1
        per_task[r.task][r.state.value] += 1
    table = Table(title="where each job ran and how it ended", title_justify="left")
    for col in ("node", "succeeded", "dead", "other"):
        table.add_column(col, justify="right" if col != "node" else "left")
    for name in sorted(per_node):
        c = per_node[name]
        table.add_row(
            name,
            str(c["succeeded"]),
            str(c["dead"]),
            str(sum(c.values()) - c["succeeded"] - c["dead"]),
        )
    console.print(table)
    tasks = Table(title="by task", title_justify="left")
    for col in ("task", "succeeded", "dead", "pending", "retried (attempts > 1)"):
        tasks.add_column(col)
    attempts = Counter(r.task for r in records if r.attempts > 1)
    for task in sorted(per_task):
        c = per_task[task]
        tasks.add_row(
            task, str(c["succeeded"]), str(c["dead"]), str(c["pending"]), str(attempts[task])
        )
    console.print(tasks)
    by_id = {r.id: r for r in records}
    if killed_at is not None:
        moved = [by_id[i] for i in rerun if i in by_id]
        elsewhere = [
            r
            for r in moved
            if r.state is JobState.SUCCEEDED and not (r.node_id or "").startswith(VICTIM)
        ]
        console.print(
            f"{VICTIM} was killed with {len(moved)} jobs running; {len(elsewhere)} of them re-ran and "
            f"succeeded on other nodes after its heartbeats stopped ({FAILURE_TIMEOUT:.0f} s failure timeout)."
        )
    stats = store.get_stats(STATS_NAME) or {}
    for u in stats.get("unplaceable", []):
        console.print(
            Text.assemble(
                ("unplaceable", "yellow"), f" (scheduler): {u['jobs']} job(s): {u['reason']}"
            )
        )
    lost = [i for i in ids if i not in by_id]
    unfinished = [r for r in records if r.state not in FINAL_STATES]
    dead = [r for r in records if r.state is JobState.DEAD]
    if dead:
        example = dead[0]
        console.print(
            Text(f"dead-letter example: job {example.id} ({example.task}): {example.error}")
        )
    console.print(
        f"[bold]{len(records)} jobs[/]: {sum(1 for r in records if r.state is JobState.SUCCEEDED)} succeeded, "
        f"{len(dead)} dead after their retries, {len(unfinished)} unfinished "
        f"(the cpu=64 job is unplaceable), {len(lost)} lost."
    )
    return 0 if not lost and len(unfinished) <= 1 else 1
