"""The task the high-availability runs submit: it notes each run (one line per run, the
job's key) so a run can count duplicates."""

from __future__ import annotations

from rota import Rota
from tests.acceptance.apps.basic import append_line

RUNS = "ha-runs.log"


def build(store: str | None = None) -> Rota:
    app = Rota(store)

    @app.task(name="ha.note", retries=20, backoff=0.1, backoff_max=0.5)
    async def note(key: str) -> str:
        append_line(RUNS, key)
        return key

    return app


app = build()
