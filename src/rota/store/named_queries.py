"""Load a file of named SQL statements (``-- name: NAME`` markers), as procrastinate does."""

from __future__ import annotations

import re
from importlib import resources

_MARKER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Split ``text`` at ``-- name: x`` lines into ``{name: statement}``."""
    parts = _MARKER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = body.strip()
    return queries


def load_queries(package: str, filename: str) -> dict[str, str]:
    """The named queries of a ``.sql`` file shipped in ``package``."""
    return parse_queries(resources.files(package).joinpath(filename).read_text("utf-8"))
