"""The command line tells the truth (issue 19): text printed literally, exit codes with a
reason, job id prefixes, no store created by a read-only command, the store named, short
task names in ``rota jobs``, readable dates, cancel of a running job, nodes told apart.
In-process with click's runner against real SQLite stores (and one real ``rota``
process for the top-level error printer)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from rota.cli import cli
from rota.cli.common import short_ids
from rota.core.model import Assignment, NodeSpec, NodeState
from rota.core.outcomes import Outcome, OutcomeKind
from rota.store import SCHEDULER_LEASE, open_store

APP = textwrap.dedent(
    """
    from rota import Rota

    app = Rota({url!r})

    @app.task()
    def resize(path: str, width: int) -> str:
        return f"{{path}}@{{width}}"
    """
)


@pytest.fixture
def appdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding ``truthapp.py`` (store: truth.db in that folder), as the cwd."""
    url = f"sqlite:///{tmp_path / 'truth.db'}"
    (tmp_path / "truthapp.py").write_text(APP.format(url=url))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ROTA_STORE", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("truthapp", None)
    return tmp_path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_read_only_commands_never_create_a_store(appdir: Path) -> None:
    for args in (("status",), ("jobs",), ("job", "abcd"), ("schedules",), ("cancel", "abcd")):
        code, out, err = run(*args)
        assert code == 1, (args, out, err)
        assert f"no rota store at {appdir / 'rota.db'}" in " ".join(err.split())
    deep = "sqlite:///nonexistent/dir/x.db"
    code, _, err = run("jobs", "--store", deep)
    assert code == 1 and "no rota store at" in err
    assert not (appdir / "rota.db").exists() and not (appdir / "nonexistent").exists()


def test_prefixes_exit_codes_and_store_line(appdir: Path) -> None:
    code, out, _ = run("submit", "truthapp:app", "resize", '["a", 1]', "-n", "3")
    assert code == 0
    ids = out.split()
    assert len(ids) == 3
    short = short_ids(ids)  # the unique part of one process's ids is at their end

    code, out, err = run("jobs", "--app", "truthapp:app")
    assert code == 0
    assert f"store sqlite:///{appdir / 'truth.db'}" in " ".join(
        err.split()
    )  # which store, on stderr
    for job_id in ids:  # at 80 columns, each id shown by a unique prefix
        assert short[job_id] in out
    code, out, _ = run("jobs", "--app", "truthapp:app", "--task", "resize", "--json")
    assert sorted(j["id"] for j in orjson.loads(out)) == sorted(ids)  # short name, like submit
    code, out, err = run("jobs", "--store", f"sqlite:///{appdir / 'truth.db'}", "--task", "resize")
    assert code == 0 and "task names are stored in full" in " ".join(out.split())

    code, out, _ = run("job", short[ids[0]], "--app", "truthapp:app", "--json")
    assert code == 0 and orjson.loads(out)["id"] == ids[0]
    code, out, _ = run("job", short[ids[0]], "--app", "truthapp:app")
    created = orjson.loads(run("job", ids[0], "--app", "truthapp:app", "--json")[1])["created_at"]
    assert isinstance(created, float)  # raw in --json, an ISO date in the table:
    from datetime import datetime

    assert datetime.fromtimestamp(created).astimezone().isoformat(timespec="seconds") in out

    # An ambiguous prefix lists the candidates; an unknown id or prefix is an error.
    store = open_store(f"sqlite:///{appdir / 'truth.db'}")
    lease = store.acquire_lease(SCHEDULER_LEASE, "t", 30)
    assert lease is not None
    code, _, err = run("cancel", "--app", "truthapp:app", "deadbeef")
    assert code == 1 and "no job deadbeef" in err
    common = ids[0][: next(i for i, c in enumerate(ids[0]) if any(o[i] != c for o in ids))]
    assert len(common) >= 16  # one process's ids share their first 16 digits and more
    code, _, err = run("job", common, "--app", "truthapp:app")
    assert code == 1 and "ambiguous" in err and all(i in err for i in ids)  # the candidates

    # retry: no ids and no --all-dead is a usage error; a job that is not dead is refused.
    code, _, err = run("retry", "--app", "truthapp:app")
    assert code == 2 and "--all-dead" in err
    code, out, err = run("retry", "--app", "truthapp:app", short[ids[1]])
    assert code == 1 and f"{ids[1]}: not retried: it is pending, not dead" in err

    # cancel of a running job says that cancellation was requested.
    spec = NodeSpec(id="w1-aaaa", name="w1", slots=3, prefetch=0)
    store.register_node(spec)
    store.assign(lease, [Assignment(ids[2], spec.id)])
    (started,) = store.start_jobs(spec.id, 1, 30)
    code, out, _ = run("cancel", "--app", "truthapp:app", short[ids[2]])
    assert code == 0 and "cancellation requested" in out
    code, out, _ = run("job", ids[2], "--app", "truthapp:app")
    assert "running (cancellation requested)" in out
    store.complete([Outcome(ids[2], started.token, OutcomeKind.CANCELLED)])
    code, out, err = run("cancel", "--app", "truthapp:app", ids[2])
    assert code == 0 and "already cancelled" in out
    code, out, err = run("cancel", "--app", "truthapp:app", ids[0], ids[1])
    assert code == 0 and out.count(": cancelled") == 2

    # A worker restarted with the same --name: two rows told apart by id and state.
    store.register_node(NodeSpec(id="w1-bbbb", name="w1", slots=3, prefetch=0))
    store.set_node_state("w1-aaaa", NodeState.STOPPED)
    code, out, _ = run("status", "--app", "truthapp:app")
    assert code == 0 and "w1-aaaa" in out and "w1-bbbb" in out and "stopped" in out
    store.close()


def test_markup_is_printed_literally(appdir: Path) -> None:
    """User text with brackets is shown as typed, in tables and in errors."""
    _, out, _ = run("submit", "truthapp:app", "resize", '["[bold]x[/]", 1]')
    (job_id,) = out.split()
    _, out, _ = run("job", job_id, "--app", "truthapp:app")
    assert "'[bold]x[/]'" in out
    env = {**os.environ, "PYTHONPATH": str(appdir)}
    for task in ("[/x]", "rota[redis]"):
        done = subprocess.run(
            [sys.executable, "-m", "rota", "submit", "truthapp:app", task, "[]"],
            capture_output=True,
            text=True,
            cwd=appdir,
            env=env,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert f"error: unknown task {task!r}" in done.stderr
        assert "Traceback" not in done.stderr


def test_short_ids_are_unique_prefixes() -> None:
    ids = ["abcdef0123" + "0" * 22, "abcdef0123" + "1" * 22, "ffff" + "0" * 28]
    short = short_ids(ids)
    assert short[ids[2]] == short[ids[2]]
    assert short[ids[0]] == ids[0][:11] and short[ids[1]] == ids[1][:11]
