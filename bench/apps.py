"""The tasks the benchmarks run: no-ops, so that what is measured is rota itself.

The store comes from ``ROTA_STORE`` (set by ``bench.sqlite`` for every process it starts).
"""

from __future__ import annotations

from rota import Rota

app = Rota()


@app.task(name="bench.noop")
async def noop() -> None:
    """An ``async def`` no-op: runs on the worker's event loop."""


@app.task(name="bench.noop_sync")
def noop_sync() -> None:
    """A sync no-op: runs in the worker's process pool (one round trip to a child)."""
