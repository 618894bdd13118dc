"""The ``rota`` command line against a running fleet: submit (and wait), refusals that
store nothing, ``jobs``, ``job`` and ``status``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from rota import Rota
from tests.acceptance.conftest import APP, Fleet

pytestmark = pytest.mark.acceptance

BAD_SUBMITS = [
    (["nope", "[1]"], "unknown task 'nope'"),
    (["acc.add", "[1, 2"], "not JSON"),
    (["acc.add", '{"a": 1}'], "ARGS must be a JSON array"),
    (["acc.add", "[1]", "--kwargs", "[2]"], "--kwargs must be a JSON object"),
    (["acc.add", "[1, 2, 3]"], "bad arguments for task 'acc.add'"),
    (["acc.add", "[1]", "--priority", "x"], "Invalid value for '--priority'"),
    (["acc.add", "[1]", "--retries", "-1"], "retries must be between 0 and 1000"),
    (["acc.add", "[1]", "--timeout", "0"], "timeout must be > 0"),
    (["acc.add", "[1]", "--resources", "cpu=lots"], "cannot read resource quantity 'lots'"),
    (["acc.add", "[1]", "--no-such-option", "3"], "No such option"),
]


@pytest.mark.timeout(120)
def test_cli(fleet: Fleet) -> None:
    fleet.scheduler()
    fleet.worker("cli-node", concurrency=2)
    node_id = fleet.wait_nodes(1)["cli-node"].id

    # Refused at once, with a message on stderr, and nothing stored.
    with ThreadPoolExecutor(4) as pool:  # a few at a time: each one imports rota
        outs = list(pool.map(lambda a: fleet.rota("submit", APP, *a[0]), BAD_SUBMITS))
    for (args, message), out in zip(BAD_SUBMITS, outs, strict=True):
        assert out.returncode != 0, (args, out)
        assert message in " ".join(out.stderr.split()), (args, out.stderr)
        assert out.stdout == "", (args, out.stdout)
    out = fleet.rota("submit", "no.such.module:app", "acc.add", "[1]")
    assert out.returncode != 0 and "cannot import 'no.such.module'" in out.stderr
    assert fleet.store.count_jobs() == {}

    # Submit and wait: the result is printed as JSON.
    out = fleet.rota("submit", APP, "acc.add", "[1, 2]", "--wait", "--wait-timeout", "30")
    assert (out.returncode, out.stdout) == (0, "3\n"), out.stderr
    out = fleet.rota("submit", APP, "add", "[40]", "--kwargs", '{"b": 2}', "--wait")
    assert (out.returncode, out.stdout) == (0, "42\n"), out.stderr
    out = fleet.rota("submit", APP, "acc.add", "[1, 1]", "-n", "3", "--wait")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()  # one "ID RESULT" line per job, as --help says
    assert [line.split()[1] for line in lines] == ["2", "2", "2"], out.stdout
    assert all(len(line.split()[0]) == 32 for line in lines)
    assert "3 finished, 0 failed, 0 unfinished" in out.stderr

    # A job that fails: --wait exits 1 and says why; without --wait the id is printed.
    out = fleet.rota("submit", APP, "acc.always_fails", '["bad row"]', "--retries", "1", "--wait")
    assert out.returncode == 1
    assert "ended dead: ValueError: bad row" in " ".join(out.stderr.split())
    out = fleet.rota("submit", APP, "acc.always_fails", '["worse row"]')
    assert out.returncode == 0, out.stderr
    dead_id = out.stdout.strip()
    assert len(dead_id) == 32
    fleet.wait_final([dead_id], timeout=30)

    # rota jobs --state failed (alias of dead) --json, with --store instead of ROTA_STORE.
    out = fleet.rota("jobs", "--state", "failed", "--json", "--store", fleet.url, with_store=False)
    assert out.returncode == 0, out.stderr
    dead = orjson.loads(out.stdout)
    assert [j["args"] for j in dead] == [["worse row"], ["bad row"]]  # newest first
    assert {j["state"] for j in dead} == {"dead"}
    assert dead[0]["id"] == dead_id
    out = fleet.rota("jobs", "--state", "succeeded", "--json")
    assert sorted(j["result"] for j in orjson.loads(out.stdout)) == [2, 2, 2, 3, 42]

    # rota job ID --json: attempts, node, error, traceback.
    out = fleet.rota("job", dead[1]["id"], "--json")
    assert out.returncode == 0, out.stderr
    job = orjson.loads(out.stdout)
    assert (job["state"], job["attempts"], job["max_attempts"]) == ("dead", 2, 2)
    assert job["node_id"] == node_id
    assert job["error"] == "ValueError: bad row"
    assert "raise ValueError(message)" in job["traceback"]
    assert job["task"] == "acc.always_fails"
    out = fleet.rota("job", dead_id)  # the table view
    assert out.returncode == 0 and "worse row" in out.stdout

    # Lookups that find nothing, or cannot be understood, fail clearly.
    out = fleet.rota("job", "0" * 32, "--json")
    assert out.returncode == 1 and f"no job {'0' * 32}" in out.stderr
    out = fleet.rota("jobs", "--state", "bogus")
    assert out.returncode == 2 and "unknown job state 'bogus'" in out.stderr

    out = fleet.rota("status")
    assert out.returncode == 0, out.stderr
    assert "cli-node" in out.stdout and "Scheduler leader" in out.stdout


def test_submit_count_keeps_args_and_kwargs(fleet: Fleet) -> None:
    out = fleet.rota("submit", APP, "acc.add", "[1]", "--kwargs", '{"b": 5}', "-n", "2")
    assert out.returncode == 0, out.stderr
    jobs = fleet.store.list_jobs()
    assert [(j.arguments()) for j in jobs] == [([1], {"b": 5})] * 2


def test_store_option_wins_over_environment(fleet: Fleet, client: Rota, tmp_path: Path) -> None:
    job = client.get_task("acc.add").submit(1, 2)
    other = {"ROTA_STORE": f"sqlite:///{tmp_path / 'elsewhere.db'}"}
    out = fleet.rota("jobs", "--json", "--store", fleet.url, with_store=False, env=other)
    assert out.returncode == 0, out.stderr
    assert [j["id"] for j in orjson.loads(out.stdout)] == [job.id]
