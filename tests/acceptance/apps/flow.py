"""Tasks for the flow acceptance tests (test_flow.py): periodic jobs, workflows,
cancellation, keyed concurrency and rate limits. Runs are recorded with
``basic.append_line``."""

from __future__ import annotations

import asyncio
import os
import time

from rota import JobCancelled, Rota, cancel_requested
from tests.acceptance.apps.basic import append_line

EVERY_SECOND = "* * * * * *"
RATE = "40/2s"  # scaled down from a minute-long window: 40 jobs per 2 seconds
CONCURRENCY_LIMIT = 2


def build(store: str | None = None) -> Rota:
    app = Rota(store)

    @app.periodic(EVERY_SECOND, name="flow.tick_skip", missed="skip", grace=0.5)
    def tick_skip() -> None:
        append_line("tick_skip.log", f"{time.time():.3f} {os.getpid()}")

    @app.periodic(EVERY_SECOND, name="flow.tick_once", missed="run_once", grace=0.5)
    def tick_once() -> None:
        append_line("tick_once.log", f"{time.time():.3f} {os.getpid()}")

    @app.task(name="flow.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="flow.total")
    async def total(values: list[int]) -> int:
        return sum(values)

    @app.task(name="flow.fail")
    def fail(why: str) -> None:
        raise RuntimeError(why)

    @app.task(name="flow.record")
    def record(tag: str) -> str:
        append_line("record.log", tag)
        return tag

    @app.task(
        name="flow.keyed",
        concurrency_key=lambda user, **_: f"user:{user}",
        concurrency_limit=CONCURRENCY_LIMIT,
    )
    def keyed(user: int, seconds: float) -> None:
        start = time.time()
        time.sleep(seconds)
        append_line("keyed.log", f"{user} {start:.4f} {time.time():.4f}")

    @app.task(name="flow.limited", rate_limit=RATE)
    async def limited(n: int) -> None:
        append_line("limited.log", f"{n} {time.time():.4f}")

    @app.task(name="flow.polite")
    def polite(seconds: float) -> str:
        """A sync task that stops cleanly when cancelled."""
        append_line("cancel.log", "polite started")
        try:
            deadline = time.time() + seconds
            while time.time() < deadline and not cancel_requested():
                time.sleep(0.02)
        except JobCancelled:
            append_line("cancel.log", f"polite cleaned up flag={cancel_requested()}")
            raise
        return "finished"

    @app.task(name="flow.stubborn", isolation="process")  # killed after the cancel grace
    def stubborn(seconds: float) -> str:
        """A sync task that ignores a cancel: it is killed after the grace period."""
        append_line("cancel.log", "stubborn started")
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                time.sleep(0.05)
            except JobCancelled:
                append_line("cancel.log", "stubborn ignored the cancel")
        return "finished"

    @app.task(name="flow.async_wait")
    async def async_wait(seconds: float) -> str:
        append_line("cancel.log", "async started")
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            append_line("cancel.log", "async cancelled")
            raise
        return "finished"

    return app


app = build()
APP = "tests.acceptance.apps.flow:app"
