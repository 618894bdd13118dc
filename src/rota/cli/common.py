"""What every ``rota`` command shares: printing text literally, finding the store (without
ever creating one for a command that only reads), naming jobs by a unique id prefix, and
readable times."""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.console import Console
from rich.text import Text

from rota.core.model import JobRecord
from rota.store import Store, open_store, resolve_url

console = Console()
err_console = Console(stderr=True)

# A prefix shorter than this is refused (like git): too many jobs would match it.
MIN_PREFIX = 4
# How many of the newest jobs a prefix is looked up among (a full id is always found).
PREFIX_SCAN = 200_000


def literal(value: object, style: str = "") -> Text:
    """``value`` as text shown exactly as it is: never read as rich markup."""
    return Text(str(value), style=style)


def fail(message: str) -> click.ClickException:
    """An error that exits 1 (click prints its message literally)."""
    return click.ClickException(message)


def store_url_for(store_url: str | None, app_spec: str | None) -> str:
    """The store a command uses: the app's (``--app``), else ``--store``, else
    ``$ROTA_STORE``, else ``sqlite:///rota.db`` (in the current directory)."""
    if app_spec:
        from rota.loader import load_app

        return load_app(app_spec).store_url
    return store_url or resolve_url()


def describe_url(url: str) -> str:
    """The URL without its password; a relative SQLite path also as an absolute one."""
    from rota.status import redact_url

    shown = redact_url(url)
    path = _sqlite_path(url)
    if path is not None and path != ":memory:" and not os.path.isabs(path):
        shown += f" (= {Path(path).resolve()})"
    return shown


def _sqlite_path(url: str) -> str | None:
    if url.split(":", 1)[0].lower() != "sqlite":
        return None
    from rota.store.sqlite.connection import sqlite_path

    return sqlite_path(url)


def check_store_exists(url: str) -> None:
    """Refuse (exit 1) when ``url`` names no existing store, instead of creating an empty
    one: a SQLite file that is not there, a PostgreSQL schema that was never made."""
    path = _sqlite_path(url)
    if path is not None:
        if path != ":memory:" and not Path(path).is_file():
            raise fail(
                f"no rota store at {Path(path).resolve()} ({url}): nothing was ever "
                "submitted there. Name the store with --store URL, $ROTA_STORE or "
                "--app module:app (the URL in your Rota(...))."
            )
        return
    if url.split(":", 1)[0].lower() in ("postgresql", "postgres"):
        _check_postgres_schema(url)


def _check_postgres_schema(url: str) -> None:
    try:
        import psycopg

        from rota.store.postgres.connection import parse_url
    except ImportError:
        return  # open_store says what to install
    conninfo, schema, _ = parse_url(url)
    try:
        with psycopg.connect(conninfo, connect_timeout=10, autocommit=True) as conn:
            row = conn.execute(
                "SELECT to_regclass(format('%I.jobs', %s::text)) IS NOT NULL", (schema,)
            ).fetchone()
    except psycopg.Error:
        return  # not reachable, authentication...: open_store reports it
    if row is None or not row[0]:
        from rota.status import redact_url

        raise fail(
            f"no rota store in schema {schema!r} of {redact_url(conninfo)}: nothing was ever "
            "submitted there (run `rota migrate` to create it empty)."
        )


def open_cli_store(
    store_url: str | None, app_spec: str | None, *, read_only: bool, quiet: bool = False
) -> Store:
    """The command's store, named on stderr (one dim line) unless ``quiet``. A
    ``read_only`` command never creates a store: it fails when there is none."""
    url = store_url_for(store_url, app_spec)
    if read_only:
        check_store_exists(url)
    store = open_store(url)
    if not quiet:
        err_console.print(literal(f"store {describe_url(url)}", "dim"), soft_wrap=True)
    return store


def resolve_job_ids(store: Store, given: list[str]) -> list[str]:
    """Full ids for ``given`` full ids or unique prefixes (like git), in order;
    ``ClickException`` (exit 1) when one matches no job or several."""
    exact = {r.id for r in store.get_jobs(given)}
    prefixes = [g for g in given if g not in exact]
    if not prefixes:
        return list(given)
    for prefix in prefixes:
        if len(prefix) < MIN_PREFIX:
            raise fail(
                f"job id prefix {prefix!r} is too short: give at least {MIN_PREFIX} characters"
            )
    candidates: dict[str, list[JobRecord]] = {p: [] for p in prefixes}
    for record in store.list_jobs(limit=PREFIX_SCAN):
        for prefix in prefixes:
            if record.id.startswith(prefix):
                candidates[prefix].append(record)
    out = []
    for g in given:
        if g in exact:
            out.append(g)
            continue
        found = candidates[g]
        if not found:
            raise fail(f"no job {g}")
        if len(found) > 1:
            listed = "\n".join(f"  {r.id}  {r.task}  {r.state.value}" for r in found[:10])
            more = f"\n  ... and {len(found) - 10} more" if len(found) > 10 else ""
            raise fail(f"job id prefix {g!r} is ambiguous; it matches:\n{listed}{more}")
        out.append(found[0].id)
    return out


def short_ids(ids: list[str], minimum: int = 10) -> dict[str, str]:
    """The shortest prefix of each id (at least ``minimum`` characters) that is unique
    among ``ids``, as git abbreviates commits."""
    out: dict[str, str] = {}
    ordered = sorted(set(ids))
    for i, job_id in enumerate(ordered):
        length = minimum
        for neighbour in (
            ordered[i - 1] if i else "",
            ordered[i + 1] if i + 1 < len(ordered) else "",
        ):
            common = 0
            while common < min(len(job_id), len(neighbour)) and job_id[common] == neighbour[common]:
                common += 1
            length = max(length, common + 1)
        out[job_id] = job_id[: min(length, len(job_id))]
    return out
