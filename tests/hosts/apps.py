"""Tasks the hosts suite runs: the fault suite's ``fault.record`` (an async task that logs
the start and end of each run) and ``hosts.tick``, a periodic task every second that logs
its tick (``tick.log``: ``tick job_id pid time``)."""

from __future__ import annotations

import os
import time

from rota import Rota
from tests.acceptance.apps.basic import append_line
from tests.faults import apps as fault_apps

EVERY_SECOND = "* * * * * *"
TICK = "hosts.tick"


def build(store: str | None = None) -> Rota:
    app = fault_apps.build(store)

    @app.periodic(EVERY_SECOND, name=TICK, missed="skip", grace=30.0)
    def tick() -> None:
        append_line("tick.log", f"tick {os.getpid()} {time.time():.3f}")

    return app


app = build()
