"""Tasks the ingest tests and benchmarks submit through a broker (store from ROTA_STORE)."""

from __future__ import annotations

import asyncio

from rota import Rota

app = Rota()


@app.task(name="ingest.add")
async def add(a: int, b: int) -> int:
    return a + b


@app.task(name="ingest.noop")
async def noop(i: int = 0) -> None:
    return None


@app.task(name="ingest.nap")
async def nap(ms: int) -> int:
    await asyncio.sleep(ms / 1000)
    return ms


@app.task(name="ingest.fail", queue="default")
async def fail(message: str) -> None:
    raise RuntimeError(message)


@app.task(name="ingest.report", queue="reports")
def report(n: int) -> str:
    return f"report {n}"
