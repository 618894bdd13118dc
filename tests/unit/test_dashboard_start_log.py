"""``rota dashboard`` logs its start at INFO when a token protects it, and at WARNING only
when access is open (issue 19)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from rota.cli import cli
from rota.store import open_store


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize(("token", "level"), [("s3cret", logging.INFO), ("", logging.WARNING)])
def test_start_line_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str, level: int
) -> None:
    pytest.importorskip("uvicorn")
    import uvicorn

    url = f"sqlite:///{tmp_path / 'd.db'}"
    open_store(url).close()
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    monkeypatch.delenv("ROTA_STORE", raising=False)
    monkeypatch.delenv("ROTA_DASHBOARD_TOKEN", raising=False)
    keep = Keep()
    logger = logging.getLogger("rota.dashboard")
    logger.addHandler(keep)
    try:
        args = ["dashboard", "--store", url, "--port", "9999"]
        result = CliRunner().invoke(cli, [*args, "--token", token] if token else args)
    finally:
        logger.removeHandler(keep)
    assert result.exit_code == 0, result.output
    (start,) = [r for r in keep.records if "rota dashboard on" in r.getMessage()]
    assert start.levelno == level
