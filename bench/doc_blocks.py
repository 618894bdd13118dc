"""Sections of a generated document that other commands own: ``<!-- bench.NAME:begin -->``
... ``<!-- bench.NAME:end -->``. ``bench.faults`` rewrites docs/reliability.md whole and
keeps every such block; each command that owns one (``bench.coord``, ``bench.ha``,
``bench.ingest``, ...) replaces only its own."""

from __future__ import annotations

import re
from pathlib import Path

BLOCK = re.compile(r"<!-- (bench\.[a-z_]+): ?begin -->.*?<!-- \1: ?end -->", re.S)


def kept_blocks(path: Path) -> list[str]:
    """Every owned block of the file at ``path``, in order (none if it does not exist)."""
    old = path.read_text() if path.exists() else ""
    return [m.group(0) for m in BLOCK.finditer(old)]


def with_kept_blocks(path: Path, text: str) -> str:
    """``text`` (a freshly generated document) followed by the owned blocks of the old one."""
    blocks = kept_blocks(path)
    return text.rstrip() + "".join("\n\n" + b for b in blocks) if blocks else text
