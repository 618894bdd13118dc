"""The peers' probe alone, with no task queue: ``python -m bench.probe_ceiling --port P``.

Every probe drain row of ``bench.peers`` runs bench-peers' probe (one ``INCR`` per task) in
the worker process. This measures how many probe calls one process can make on the same
Redis when it does nothing else: with the asyncio twin ``aprobe`` (redis.asyncio, 64 calls
at once, as rota's async tasks and taskiq's run it) and with the sync ``probe`` (redis-py,
one after another). No system's drain measured with the probe can be faster than this.
Prints one JSON object: ``{"async": calls/s, "sync": calls/s, "async_cpu_us": ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import redis
import redis.asyncio

from bench.peer_apps import load_common

PROBE_KEYS = ("bench:cnt", "bench:t0", "bench:t1", "bench:done")


async def _async_rate(common: Any, url: str, n: int, concurrency: int) -> tuple[float, float]:
    client = redis.asyncio.Redis.from_url(url)
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await common.aprobe(client, n, 0)

    try:
        await asyncio.gather(*(one() for _ in range(min(n, 1000))))  # connections, warm code
        await client.delete(*PROBE_KEYS)
        t, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one() for _ in range(n)))
        wall, used = time.perf_counter() - t, time.process_time() - cpu
    finally:
        await client.aclose()
    return n / wall, 1e6 * used / n


def _sync_rate(common: Any, url: str, n: int) -> tuple[float, float]:
    client = redis.Redis.from_url(url)
    for _ in range(min(n, 1000)):
        common.probe(client, n, 0)
    client.delete(*PROBE_KEYS)
    t, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        common.probe(client, n, 0)
    wall, used = time.perf_counter() - t, time.process_time() - cpu
    client.delete(*PROBE_KEYS)
    client.close()
    return n / wall, 1e6 * used / n


def measure(port: int, n: int, concurrency: int = 64) -> dict[str, float]:
    """Probe calls per second (and CPU µs per call) of this process, async and sync."""
    common = load_common()
    url = f"redis://127.0.0.1:{port}/0"
    a_rate, a_cpu = asyncio.run(_async_rate(common, url, n, concurrency))
    s_rate, s_cpu = _sync_rate(common, url, n)
    return {"async": a_rate, "async_cpu_us": a_cpu, "sync": s_rate, "sync_cpu_us": s_cpu}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.probe_ceiling", description=__doc__)
    ap.add_argument("--port", type=int, default=6379, help="Redis port (db 0 of it is used)")
    ap.add_argument("--tasks", type=int, default=20000, help="probe calls per measure")
    ap.add_argument("--concurrency", type=int, default=64, help="async calls at once")
    a = ap.parse_args(argv)
    print(json.dumps(measure(a.port, a.tasks, a.concurrency)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
