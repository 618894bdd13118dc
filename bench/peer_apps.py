"""rota's tasks for ``bench.peers``: the same probe the peer task queues run, plus no-ops.

Every probe task calls the probe of the peers' benchmark (``common.probe`` / ``common.aprobe``
in ``shared/bench-peers/common.py``: one ``INCR`` per task on the benchmark's Redis, or one
``RPUSH`` of the submit->start latency), loaded from the copy of bench-peers that
``bench.peers`` runs (``BENCH_PEERS_DIR``), so completion is counted exactly as it is for
Celery, RQ, Dramatiq and Huey. The probe's Redis is ``BENCH_REDIS_PORT`` (db 0); rota's own
keys live beside it under their prefix (``ROTA_STORE``, set by ``bench.peers`` for every
process it starts).

* ``peer.probe``: ``async def``, runs on the worker's event loop and calls the peers' sync
  ``probe`` with their redis-py client, exactly as Celery, RQ, Dramatiq and Huey tasks do:
  one blocking ``INCR`` round trip in the thread that runs the task (here the event loop,
  which waits for it like Huey's single worker thread does);
* ``peer.aprobe``: the same task with the asyncio twin ``aprobe`` (redis.asyncio, as the
  asyncio peers arq and taskiq run it). Not the default: redis.asyncio costs about 2.5x
  the CPU of redis-py per call, and 64 tasks in flight each open their own connection, so
  this row measures the probe's client library more than rota (see bench/README.md);
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
    """Async no-op plus the peers' probe (sync redis-py, as they run it), on the worker's
    event loop."""
    common.probe(common.client(), target, t_enq)


@app.task(name="peer.aprobe")
async def aprobe(target: int, t_enq: float) -> None:
    """Async no-op plus the asyncio twin of the probe (redis.asyncio), on the event loop."""
    await common.aprobe(_async_client(), target, t_enq)


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
