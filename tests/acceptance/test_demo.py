"""``rota demo`` runs to the end: its own scheduler pair and four workers, one killed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.acceptance.conftest import MARK_VAR, REPO, kill_marked

pytestmark = [pytest.mark.acceptance, pytest.mark.demo]

BUDGET = 60.0  # seconds: the demo must end well within this


@pytest.mark.timeout(BUDGET + 30)
def test_demo_runs_to_the_end(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k != "ROTA_STORE"}
    # The demo's temporary directory (store and logs) goes under tmp_path; the marker
    # reaches every process it starts, so that none outlives the test.
    env.update({MARK_VAR: marker, "TMPDIR": str(tmp_path), "COLUMNS": "120"})
    log = tmp_path / "demo.out"
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rota", "demo", "--jobs", "400"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = proc.wait(BUDGET)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            kill_marked(marker)
            proc.wait(10)
    elapsed = time.monotonic() - started
    text = log.read_text(errors="replace")
    tail = "\n".join(text.splitlines()[-40:])
    assert code is not None, f"rota demo still running after {BUDGET} s:\n{tail}"
    assert code == 0, f"rota demo exited with {code} after {elapsed:.1f} s:\n{tail}"
    summary = " ".join(text.split())
    assert "401 jobs:" in summary and "0 lost" in summary, tail
    assert "killed cpu-large (SIGKILL)" in summary, tail
    # It points at no file it deletes: a demo that succeeded leaves nothing behind and
    # does not mention logs (a failed one keeps them and says where).
    assert "logs" not in summary, tail
    assert not list(tmp_path.glob("rota-demo-*")), list(tmp_path.iterdir())
