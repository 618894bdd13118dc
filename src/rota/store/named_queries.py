"""Files of named statements (``-- name: NAME`` markers, as procrastinate does): the SQL
queries of the SQLite and PostgreSQL stores and the Lua scripts of the Redis store."""

from __future__ import annotations

import re
from collections.abc import Iterable
from importlib import resources

_MARKER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def split_named(text: str) -> tuple[str, dict[str, str]]:
    """Split ``text`` at ``-- name: x`` lines: ``(what comes before the first marker,
    {name: statement})``."""
    parts = _MARKER.split(text)
    named: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in named:
            raise ValueError(f"query {name!r} is defined twice")
        named[name] = body.strip()
    return parts[0], named


def parse_queries(text: str) -> dict[str, str]:
    """Split ``text`` at ``-- name: x`` lines into ``{name: statement}``."""
    return split_named(text)[1]


def read_text(package: str, filename: str) -> str:
    """A text file shipped in ``package`` (``filename`` may name a folder: ``lua/x.lua``)."""
    return resources.files(package).joinpath(*filename.split("/")).read_text("utf-8")


def load_queries(package: str, *filenames: str) -> dict[str, str]:
    """The named queries of the ``.sql`` files shipped in ``package`` (a name may be used
    once across them)."""
    return merge_named(parse_queries(read_text(package, name)) for name in filenames)


def merge_named(parts: Iterable[dict[str, str]]) -> dict[str, str]:
    """One ``{name: statement}`` from several, refusing a name defined twice."""
    merged: dict[str, str] = {}
    for part in parts:
        for name, body in part.items():
            if name in merged:
                raise ValueError(f"query {name!r} is defined twice")
            merged[name] = body
    return merged
