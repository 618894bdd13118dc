"""The tasks ``rota demo`` runs: CPU work, GPU work, async I/O, flaky and doomed jobs, a
small workflow (render frames in parallel, assemble, publish) and a periodic job."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from rota import Rota, chain, group

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


@app.task(name="demo.assemble")
def assemble(frames: list[int], title: str) -> str:
    """A workflow's join step: gets the results of every rendered frame."""
    return f"{title}: {len(frames)} frames, checksum {sum(frames)}"


@app.task(name="demo.publish")
async def publish(video: str) -> str:
    """The workflow's last step: gets the assembled video."""
    await asyncio.sleep(0.01)
    return f"published {video}"


@app.periodic("* * * * * */2", name="demo.heartbeat", missed="skip", grace=1.0)
def heartbeat() -> float:
    """A periodic job every two seconds: one run per tick, whichever scheduler leads."""
    return time.time()


def pipeline(frames: int = 8) -> Any:
    """A small DAG: render ``frames`` frames in parallel, assemble them, publish."""
    return chain(
        group(*(render.s(i, 30) for i in range(frames))),
        assemble.s("trailer"),
        publish.s(),
    )
