"""The SQL of the PostgreSQL store: the schema, the named queries (``queries/*.sql``) and
the migrations, as files shipped in this package."""

from __future__ import annotations

import re
from pathlib import Path

from rota.store.named_queries import merge_named, parse_queries

HERE = Path(__file__).resolve().parent
SCHEMA_FILE = HERE / "schema.sql"
QUERIES_DIR = HERE / "queries"
QUERIES_FILES = tuple(sorted(QUERIES_DIR.glob("*.sql")))
MIGRATIONS_DIR = HERE / "migrations"
_PARAM = re.compile(r"(?<!:):([A-Za-z_][A-Za-z0-9_]*)")
_MIGRATION = re.compile(r"(\d{4})_([A-Za-z0-9_]+)\.sql")


def for_psycopg(statement: str) -> str:
    """A named query's text with ``:param`` turned into psycopg's binary placeholders
    ``%(param)b`` (comment lines dropped, a literal ``%`` escaped). Binary parameters
    matter for the batch statements' arrays: adapting 20k-row column arrays in binary
    takes about half the time of text."""
    lines = [line for line in statement.splitlines() if not line.strip().startswith("--")]
    return _PARAM.sub(r"%(\1)b", "\n".join(lines).strip().replace("%", "%%"))


def psycopg_queries(text: str) -> dict[str, str]:
    """The ``-- name: NAME`` statements of ``text``, ready for psycopg (:func:`for_psycopg`)."""
    return {name: for_psycopg(body) for name, body in parse_queries(text).items()}


QUERIES = merge_named(psycopg_queries(path.read_text(encoding="utf-8")) for path in QUERIES_FILES)


def query(name: str) -> str:
    """The named query ``name``, ready for ``cursor.execute(query, {params})``."""
    return QUERIES[name]


def migrations() -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of every migration file, in order."""
    found = []
    for path in MIGRATIONS_DIR.iterdir():
        m = _MIGRATION.fullmatch(path.name)
        if m:
            found.append((int(m.group(1)), path.stem, path.read_text(encoding="utf-8")))
    found.sort()
    return found
