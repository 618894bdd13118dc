"""The PostgreSQL schema and SQL: migrations give exactly ``schema.sql`` (once, only what is
pending, never with auto_migrate off), URL parameters, and every statement parameterised."""

from __future__ import annotations

import ast
import re
import threading
from pathlib import Path
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402

from rota.core.errors import InvalidOption, StoreError  # noqa: E402
from rota.core.states import JobState  # noqa: E402
from tests.store.postgres.helpers import new_job, open_store  # noqa: E402

# ---- migrations ------------------------------------------------------------------------


def catalog(conn: Any, schema: str) -> dict[str, Any]:
    """Tables, columns (type, nullability, default), indexes, constraints, functions and triggers of
    ``schema``, with the schema's name taken out of definitions."""

    def rows(query: str) -> list[tuple[Any, ...]]:
        out = conn.execute(query, {"s": schema}).fetchall()
        return sorted(tuple(str(v).replace(f"{schema}.", "") for v in row) for row in out)

    return {
        "tables": rows(
            "SELECT table_name, table_type FROM information_schema.tables "
            "WHERE table_schema = %(s)s AND table_name <> 'rota_migrations'"
        ),
        "columns": rows(
            "SELECT table_name, column_name, ordinal_position, data_type, udt_name, "
            "is_nullable, column_default FROM information_schema.columns "
            "WHERE table_schema = %(s)s AND table_name <> 'rota_migrations'"
        ),
        "indexes": rows(
            "SELECT tablename, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = %(s)s AND tablename <> 'rota_migrations'"
        ),
        "constraints": rows(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) "
            "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE n.nspname = %(s)s AND c.conrelid::regclass::text NOT LIKE '%%rota_migrations'"
        ),
        "functions": rows(
            "SELECT p.proname, pg_get_function_identity_arguments(p.oid), "
            "pg_get_function_result(p.oid), p.provolatile, p.prosrc "
            "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %(s)s"
        ),
        "sequences": rows(
            "SELECT sequence_name, data_type FROM information_schema.sequences "
            "WHERE sequence_schema = %(s)s"
        ),
        "triggers": rows(
            "SELECT t.tgrelid::regclass::text, t.tgname, pg_get_triggerdef(t.oid) "
            "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %(s)s AND NOT t.tgisinternal"
        ),
    }


def test_migrations_give_exactly_the_schema_file(store: Any) -> None:
    from rota.store.postgres.queries import SCHEMA_FILE, migrations

    assert store.migrate() == [name for _, name, _ in migrations()]
    assert store.migrate() == []  # nothing left to apply
    reference = f"{store.schema}_ref"
    with psycopg.connect(store.conninfo, autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(reference)))
            with conn.transaction():
                conn.execute(
                    sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(reference))
                )
                conn.execute(SCHEMA_FILE.read_text().encode())
            migrated, expected = catalog(conn, store.schema), catalog(conn, reference)
            versions = conn.execute(
                sql.SQL("SELECT version FROM {}.rota_migrations ORDER BY version").format(
                    sql.Identifier(store.schema)
                )
            ).fetchall()
        finally:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(reference))
            )
    assert [name for name, _ in expected["tables"]] == [
        "claim_grants", "job_attempts", "jobs", "leases", "nodes", "schedules", "settle_children",
        "settle_parents", "stats",
        "unique_keys",
    ]  # fmt: skip
    assert any(name == "jobs_pending_idx" for _, name, _ in expected["indexes"])
    for part in expected:
        assert migrated[part] == expected[part], part
    assert [v for (v,) in versions] == [v for v, _, _ in migrations()]


def test_concurrent_first_uses_migrate_once(url: str) -> None:
    stores = [open_store(url) for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    results: list[Any] = []

    def first_use(s: Any) -> None:
        barrier.wait()
        try:
            s.submit([new_job()])
            results.append("ok")
        except Exception as exc:  # pragma: no cover - the failure being tested
            results.append(exc)

    threads = [threading.Thread(target=first_use, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert results == ["ok"] * len(stores)
        assert stores[0].count_jobs() == {("default", JobState.PENDING): len(stores)}
        assert stores[0].migrate() == []
    finally:
        for s in stores:
            s.close()


def test_auto_migrate_off_leaves_the_database_alone(url: str) -> None:
    off = open_store(url + "&auto_migrate=0")
    try:
        with pytest.raises(StoreError):
            off.submit([new_job()])
        assert off.migrate() == [
            "0001_initial",
            "0002_rota_now_double",
            "0003_flows",
            "0004_attempts",
            "0006_claim_grants",
        ]
        off.submit([new_job()])
        assert len(off.list_jobs()) == 1
    finally:
        off.close()


def test_migrate_applies_only_what_is_pending(url: str) -> None:
    from rota.store.postgres.queries import migrations

    store = open_store(url + "&auto_migrate=0")
    try:
        first = migrations()[0]
        assert store.migrate() == [name for _, name, _ in migrations()]
        with psycopg.connect(store.conninfo, autocommit=True) as conn:  # back to 0001 only
            conn.execute(
                sql.SQL("DELETE FROM {}.rota_migrations WHERE version > %s").format(
                    sql.Identifier(store.schema)
                ),
                [first[0]],
            )
        assert store.migrate() == [name for _, name, _ in migrations()[1:]]
        assert store.migrate() == []
    finally:
        store.close()


def test_url_parameters() -> None:
    from rota.store.postgres.connection import parse_url

    conninfo, schema, auto = parse_url(
        "postgresql://u:p@h:5432/db?sslmode=disable&schema=s1&auto_migrate=0"
    )
    assert (conninfo, schema, auto) == ("postgresql://u:p@h:5432/db?sslmode=disable", "s1", False)
    assert parse_url("postgres://h/db") == ("postgres://h/db", "rota", True)
    with pytest.raises(InvalidOption):
        parse_url("postgresql://h/db?auto_migrate=maybe")
    with pytest.raises(InvalidOption):
        parse_url("postgresql://h/db?schema=" + "x" * 64)


# ---- every statement is parameterised -------------------------------------------------

SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|LISTEN|NOTIFY|CREATE|DROP|SET|WHERE)\b")


def test_sql_is_never_formatted_with_values() -> None:
    from rota.store.postgres.queries import MIGRATIONS_DIR, QUERIES, QUERIES_FILES, SCHEMA_FILE

    assert len(QUERIES_FILES) > 1
    for path in [*QUERIES_FILES, SCHEMA_FILE, *MIGRATIONS_DIR.glob("*.sql")]:
        assert "%" not in path.read_text(), f"{path.name}: parameters are :name, never %"
    for name, text in QUERIES.items():
        stripped = re.sub(r"%\([a-z_]+\)b", "", text)
        assert "%" not in stripped and "{" not in stripped.replace("'{}'", ""), name
    package = Path(SCHEMA_FILE).parent
    trees = [ast.parse(path.read_text()) for path in sorted(package.glob("*.py"))]
    for node in (node for tree in trees for node in ast.walk(tree)):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            pytest.fail(f"%-formatting at line {node.lineno}")
        if isinstance(node, ast.JoinedStr):
            text = "".join(str(v.value) for v in node.values if isinstance(v, ast.Constant))
            assert not SQL_WORDS.search(text), f"f-string SQL at line {node.lineno}"
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "format":
            # only psycopg.sql compositions of identifiers
            assert isinstance(node.func, ast.Attribute)
            base = node.func.value
            assert isinstance(base, ast.Call) and ast.unparse(base.func) == "sql.SQL"
            for arg in node.args:
                assert isinstance(arg, ast.Call) and ast.unparse(arg.func) == "sql.Identifier"


def test_named_query_loader() -> None:
    from rota.store.postgres.queries import psycopg_queries

    text = "-- name: a\n-- doc: x\nSELECT :x::int, 'a'::text, :y\n\n-- name: b\nSELECT 1\n"
    assert psycopg_queries(text) == {"a": "SELECT %(x)b::int, 'a'::text, %(y)b", "b": "SELECT 1"}
