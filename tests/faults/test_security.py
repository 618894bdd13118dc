"""Security checks: no code loading from data, parameterised SQL only, and store passwords
never shown (``rota status``, ``--json``, worker and scheduler logs)."""

from __future__ import annotations

import ast
import re
import signal
import time
from pathlib import Path

import pytest

from rota.status import redact_url
from tests.acceptance.conftest import Fleet
from tests.faults import scenarios

pytestmark = pytest.mark.acceptance

SRC = Path(__file__).resolve().parents[2] / "src" / "rota"
PASSWORD = "s3cret-Pa55"

DANGEROUS = re.compile(
    r"\b(pickle|marshal|cPickle|shelve|dill)\b|\beval\(|\bexec\(|import_module|__import__"
)
# The one allowed dynamic import: the CLI's app loader (a module named on the command line).
# Nothing else: even the worker pool's private messages to its children are JSON.
ALLOWED = {
    "loader.py": {"import_module"},
}


def test_no_code_loading_from_data() -> None:
    found: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for m in DANGEROUS.finditer(code):
                word = m.group(0).rstrip("(")
                if word in ALLOWED.get(rel, set()):
                    continue
                # prose in docstrings mentioning the word is fine; code is not
                if re.search(r"\bimport\b|\.\w+\(|\w\(", code) is None:
                    continue
                found.setdefault(rel, set()).add(f"{lineno}: {line.strip()}")
    assert not found, found


SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|WHERE|PRAGMA|CREATE|DROP|ALTER|SET)\b")


def _is_safe_value(node: ast.expr) -> bool:
    """An interpolation that cannot carry a value from outside: ``int(...)`` or a constant."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "int":
        return True
    return isinstance(node, ast.Name) and node.id.isupper()


def _is_composed(node: ast.expr) -> bool:
    """psycopg's ``sql.SQL("... {}").format(sql.Identifier(x))``: identifiers quoted."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
        and ast.unparse(node.func.value).startswith("sql.SQL(")
        and all(ast.unparse(a).startswith(("sql.Identifier(", "sql.Literal(")) for a in node.args)
    )


def test_sql_is_parameterised() -> None:
    problems = []
    for path in sorted((SRC / "store").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            where = f"{path.name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.JoinedStr):
                literal = "".join(
                    v.value
                    for v in node.values
                    if isinstance(v, ast.Constant) and isinstance(v.value, str)
                )
                if SQL_WORDS.search(literal):
                    for v in node.values:
                        if isinstance(v, ast.FormattedValue) and not _is_safe_value(v.value):
                            problems.append(f"{where}: f-string SQL with {ast.unparse(v.value)}")
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
                for side in (node.left, node.right):
                    if (
                        isinstance(side, ast.Constant)
                        and isinstance(side.value, str)
                        and SQL_WORDS.search(side.value)
                    ):
                        problems.append(f"{where}: SQL built with % or +")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "format"
                and isinstance(node.func.value, ast.Constant)
                and isinstance(node.func.value.value, str)
                and SQL_WORDS.search(node.func.value.value)
            ):
                problems.append(f"{where}: SQL built with str.format")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("execute", "executemany")
                and node.args
            ):
                # Statements come from the named-query files, constants, or psycopg's sql
                # composition (identifiers quoted); values go in parameters.
                first = node.args[0]
                ok = (
                    isinstance(first, ast.Subscript)
                    or (isinstance(first, ast.Constant) and isinstance(first.value, str))
                    or isinstance(first, ast.Name | ast.JoinedStr)  # f-strings: checked above
                    or (isinstance(first, ast.Call) and ast.unparse(first) == "text.encode()")
                    or _is_composed(first)
                )
                if not ok:
                    problems.append(f"{where}: execute({ast.unparse(first)[:60]})")
    assert not problems, problems
    # The named-query files bind values with placeholders (``:name`` for SQLite,
    # ``%(name)s`` for psycopg), never Python ``{field}`` formatting.
    sql_files = list((SRC / "store").rglob("*.sql"))
    assert sql_files  # the store packages' SQL (a moved file must not make this vacuous)
    for sql_file in sql_files:
        text = sql_file.read_text()
        assert not re.search(r"\{\w+\}", text), sql_file.name


def test_lua_is_not_built_from_values() -> None:
    sources = list((SRC / "store").rglob("redis*/**/*.py")) + list(
        (SRC / "store").glob("redis*.py")
    )
    assert sources  # the Redis store's Python, wherever the package puts it
    tree = ast.Module(body=[ast.parse(p.read_text()) for p in sources], type_ignores=[])
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            literal = "".join(
                v.value
                for v in node.values
                if isinstance(v, ast.Constant) and isinstance(v.value, str)
            )
            assert "redis.call" not in literal and "local " not in literal, ast.unparse(node)


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{PASSWORD}@127.0.0.1:1/0",
        f"redis://user:{PASSWORD}@host:6379/0?prefix=x",
        f"postgresql://postgres:{PASSWORD}@db.example:5432/rota?schema=a",
        f"rediss://u:{PASSWORD}@h/0",
    ],
)
def test_redact_url(url: str) -> None:
    assert PASSWORD not in redact_url(url)
    assert "***" in redact_url(url)


def test_redact_url_password_with_at_sign() -> None:
    assert "tail" not in redact_url("redis://:p@ss-tail@h:6379/0")


@pytest.mark.timeout(90)
def test_password_never_shown(tmp_path: Path) -> None:
    """A private Redis that requires a password: a scheduler and a worker run jobs through
    a URL carrying it, Redis restarts under them (so they log connection errors), and
    ``rota status`` / ``--json`` run; the password appears nowhere."""
    with scenarios.private_redis(tmp_path, False, extra=("--requirepass", PASSWORD)) as server:
        url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0?prefix=sec"
        fleet = Fleet(url, tmp_path)
        client = scenarios.apps_client(url)
        try:
            fleet.scheduler()
            scenarios.start_worker(fleet, "w1", concurrency=2)
            fleet.wait_nodes(1)
            assert client.get_task("fault.echo").submit(7).result(timeout=30) == 7
            server.stop(signal.SIGTERM)
            time.sleep(1.0)
            server.start()
            fleet.wait_for(
                "the worker to reconnect", lambda: "reconnected to Redis" in fleet.log("w1"), 30
            )
            assert client.get_task("fault.echo").submit(8).result(timeout=30) == 8
            outputs = []
            for args in (("status",), ("status", "--json"), ("jobs", "--json")):
                done = fleet.rota(*args)
                assert done.returncode == 0, done.stderr
                outputs.append(done.stdout + done.stderr)
            # And a process that cannot connect at all says where, without the password.
            bad = f"redis://:{PASSWORD}@127.0.0.1:{scenarios.free_port()}/0"
            done = fleet.rota("status", "--store", bad, with_store=False, timeout=60)
            assert done.returncode != 0
            outputs.append(done.stdout + done.stderr)
            assert "127.0.0.1" in outputs[-1]
            fleet.kill("scheduler", signal.SIGTERM)
            fleet.kill("w1", signal.SIGTERM)
            fleet.wait_exit("scheduler", 15)
            fleet.wait_exit("w1", 15)
            logs = [fleet.log("scheduler"), fleet.log("w1")]
            assert "lost the connection" in logs[0] + logs[1]
        finally:
            client.close()
            fleet.close()
    for text in outputs + logs:
        assert PASSWORD not in text, text[:2000]
