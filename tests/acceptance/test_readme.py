"""Every ``python`` block of README.md runs as written (issue 19). The blocks run in order,
in one namespace (as a reader pastes them into one file or session), on a temporary SQLite
store (``ROTA_STORE`` overrides the URL in ``Rota(...)``), while a real scheduler and worker
run the jobs they wait for; the worker's app is the blocks' definitions. The PostgreSQL
block runs on its own against a private schema (the test supplies ``app`` on PostgreSQL,
``DSN`` and the ``orders`` table, which the README names as the reader's own)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from rota import Rota
from tests.acceptance.conftest import Fleet
from tests.stores import PG_DB, PG_HOST, PG_PORT, need_module, need_server

pytestmark = pytest.mark.acceptance
README = Path(__file__).resolve().parents[2] / "README.md"
MODULE = "readme_app"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), re.M | re.S)


def definitions(blocks: list[str]) -> str:
    """The blocks' imports, ``app = Rota(...)`` and task definitions: the worker's app."""
    kept: list[str] = []
    for block in blocks:
        tree = ast.parse(block)
        for node in tree.body:
            is_app = (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", "") == "Rota"
            )
            if is_app or isinstance(
                node, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.AsyncFunctionDef
            ):
                kept.append(ast.get_source_segment(block, node, padded=True) or "")
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    decorators = [ast.get_source_segment(block, d) for d in node.decorator_list]
                    kept[-1] = "".join(f"@{d}\n" for d in decorators) + kept[-1]
    return "\n\n".join(kept) + "\n"


def run_block(block: str, namespace: dict[str, Any]) -> None:
    exec(compile(block, f"README.md block:\n{block[:60]}", "exec"), namespace)


def test_readme_python_blocks_name_nothing_undefined(tmp_path: Path) -> None:
    """A name used before it is defined (like the ``ready()`` the ``poll`` example once
    called) fails only when that code runs; ruff's F821 finds it statically."""
    blocks = python_blocks()
    provided = "from rota import Rota\napp = Rota()\nDSN = ''\n"  # the PostgreSQL block's
    source = tmp_path / "readme_blocks.py"
    source.write_text(
        "\n".join(b for b in blocks if "psycopg" not in b)
        + "\n".join(provided + b for b in blocks if "psycopg" in b)
    )
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--select", "F821", str(source)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.timeout(120)
def test_readme_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks()
    assert len(blocks) >= 6
    pg_blocks = [b for b in blocks if "psycopg" in b]
    main_blocks = [b for b in blocks if b not in pg_blocks]
    (tmp_path / f"{MODULE}.py").write_text(definitions(main_blocks))
    url = f"sqlite:///{tmp_path / 'readme.db'}"
    monkeypatch.setenv("ROTA_STORE", url)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    fleet = Fleet(url, tmp_path / "fleet")
    namespace: dict[str, Any] = {"__name__": MODULE}  # task names as the worker has them
    try:
        fleet.scheduler()
        fleet.worker(
            "readme", app=f"{MODULE}:app", resources="cpu=4,gpu=1", queues="default,reports"
        )
        fleet.wait_for("the worker", lambda: fleet.store.list_nodes(), 60)
        for block in main_blocks:
            run_block(block, namespace)
        assert namespace["poll"](2) == "done"  # the example's own code runs too
    finally:
        app = namespace.get("app")
        if isinstance(app, Rota):
            app.close()
        fleet.close()
    assert not (tmp_path / "rota.db").exists()  # ROTA_STORE won
    monkeypatch.delenv("ROTA_STORE")
    run_postgres_blocks(pg_blocks)


def run_postgres_blocks(blocks: list[str]) -> None:
    need_server("PostgreSQL", PG_HOST, PG_PORT)
    need_module("rota.store.postgres", "postgres")
    import psycopg

    schema = f"rota_readme_{uuid.uuid4().hex[:10]}"
    base = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{PG_DB}"
    app = Rota(f"{base}?schema={schema}")
    dsn = f"{base}?options=-csearch_path%3D{schema}"
    try:
        app.store.migrate()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE orders (id integer)")
        for block in blocks:
            namespace: dict[str, Any] = {"__name__": "readme_pg", "app": app, "DSN": dsn}
            run_block(block, namespace)
        assert [j.task for j in app.store.list_jobs()] == ["readme_pg.ship"]
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT id FROM orders").fetchall() == [(42,)]
    finally:
        app.close()
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
