"""How one attempt of a job ended, as the runner saw it (``ExecResult``): shared by the
worker's runners, its reporting and tracing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ExecKind = Literal["ok", "error", "retry", "timeout", "crashed", "cancelled"]


@dataclass(frozen=True, slots=True)
class ExecResult:
    """How one attempt of a job ended, as the executor saw it."""

    kind: ExecKind
    result: str | None = None  # JSON text of the return value (kind "ok")
    error: str | None = None  # one line: "ValueError: bad width", "timed out after 2.0 s"...
    traceback: str | None = None  # formatted traceback for "error"/"retry"
    retry_delay: float | None = None  # from rota.Retry(delay=...) for kind "retry"
    fatal: bool = False  # no attempt can ever succeed (corrupt payload, unknown task)
