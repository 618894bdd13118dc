"""The tasks ``rota demo`` runs: CPU work, GPU work, async I/O, flaky and doomed jobs."""

from __future__ import annotations

import asyncio
import random
import time

from rota import Rota

app = Rota()  # the store comes from ROTA_STORE, set by the demo


@app.task(name="demo.render", resources={"cpu": 1}, retries=2, backoff=0.2)
def render(frame: int, ms: int) -> int:
    """A CPU-bound frame: one core for ``ms`` milliseconds."""
    time.sleep(ms / 1000)
    return frame * 2


@app.task(name="demo.train", resources={"gpu": 1, "cpu": 1}, retries=2, backoff=0.2)
def train(step: int, ms: int) -> float:
    """A training step that needs the GPU."""
    time.sleep(ms / 1000)
    return step / 10


@app.task(name="demo.fetch", retries=2, backoff=0.2)
async def fetch(url: str, ms: int) -> int:
    """An I/O-bound async task, run on the worker's event loop."""
    await asyncio.sleep(ms / 1000)
    return len(url)


@app.task(name="demo.flaky", retries=3, backoff=0.2, backoff_max=1.0)
def flaky(i: int, ms: int) -> int:
    """Fails about a third of the time; retried with backoff."""
    time.sleep(ms / 1000)
    if random.random() < 0.35:
        raise ConnectionError(f"upstream hiccup on item {i}")
    return i


@app.task(name="demo.doomed", retries=1, backoff=0.2)
def doomed(i: int) -> None:
    """Always fails: ends dead (the dead-letter record keeps the error and traceback)."""
    raise ValueError(f"item {i} is malformed")
