"""rota's tasks for ``bench.peers``: the same probe the peer task queues run, plus no-ops.

Every probe task calls the probe of the peers' benchmark (``common.probe`` / ``common.aprobe``
in ``shared/bench-peers/common.py``: one ``INCR`` per task on the benchmark's Redis, or one
``RPUSH`` of the submit->start latency), loaded from the copy of bench-peers that
``bench.peers`` runs (``BENCH_PEERS_DIR``), so completion is counted exactly as it is for
Celery, RQ, Dramatiq and Huey. The probe's Redis is ``BENCH_REDIS_PORT`` (db 0); rota's own
keys live beside it under their prefix (``ROTA_STORE``, set by ``bench.peers`` for every
process it starts).

* ``peer.probe``: ``async def``, runs on the worker's event loop with the probe's asyncio
  twin ``aprobe`` (redis.asyncio, one client per worker process): exactly how bench-peers
  runs the asyncio task queues (taskiq, arq);
* ``peer.probe_blocking``: the same task calling the sync ``probe`` with the redis-py
  client, as the thread-based peers (Celery, RQ, Dramatiq, Huey) do; on an event loop that
  call blocks the loop for the round trip, so it is an opt-in row (``async1-blocking``),
  not the comparison (see bench/README.md);
* ``peer.probe_sync``: sync, runs in the worker's process pool (``probe``, redis-py);
* ``peer.noop`` / ``peer.noop_sync``: the same without the probe (completions are then
  counted from the store);
* ``peer.hold``: records ``"<pid> <unix time>"`` on ``bench:hold`` when it starts, then
  sleeps: the dead-node failover measurement.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from rota import Rota

HOLD_KEY = "bench:hold"
DEFAULT_PEERS_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "bench-peers"


def load_common(peers_dir: str | os.PathLike[str] | None = None) -> ModuleType:
    """The peers' ``common.py`` (the probe), imported from ``peers_dir`` as its own module."""
    where = Path(peers_dir or os.environ.get("BENCH_PEERS_DIR") or DEFAULT_PEERS_DIR)
    path = where / "common.py"
    spec = importlib.util.spec_from_file_location("bench_peers_common", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the peers' probe from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = load_common()
app = Rota()

_aclient: Any = None


def _async_client() -> Any:
    """One redis.asyncio client per worker process (the worker has one event loop)."""
    global _aclient
    if _aclient is None:
        import redis.asyncio

        _aclient = redis.asyncio.Redis.from_url(common.URL)
    return _aclient


@app.task(name="peer.probe")
async def probe(target: int, t_enq: float) -> None:
    """Async no-op plus the shared probe (its asyncio twin), on the worker's event loop."""
    await common.aprobe(_async_client(), target, t_enq)


@app.task(name="peer.probe_blocking")
async def probe_blocking(target: int, t_enq: float) -> None:
    """Async no-op plus the sync probe (redis-py, blocking the event loop meanwhile)."""
    common.probe(common.client(), target, t_enq)


@app.task(name="peer.probe_sync")
def probe_sync(target: int, t_enq: float) -> None:
    """Sync no-op plus the shared probe, in the worker's process pool."""
    common.probe(common.client(), target, t_enq)


@app.task(name="peer.noop")
async def noop() -> None:
    """Async no-op without the probe."""


@app.task(name="peer.noop_sync")
def noop_sync() -> None:
    """Sync no-op without the probe."""


@app.task(name="peer.hold")
async def hold(seconds: float) -> None:
    """Say where and when it started, then hold its slot for ``seconds``."""
    await _async_client().rpush(HOLD_KEY, f"{os.getpid()} {time.time():.6f}")
    await asyncio.sleep(seconds)
