"""Redis store hot paths: ``python -m bench.redis_store [--jobs N] [--batch B] [--repeat K]``.

Times, on a fresh key prefix (removed afterwards), the store calls a busy cluster makes:
bulk ``submit`` of no-op jobs from one producer, then the scheduler's ``pending_jobs`` +
``assign`` in pages, the nodes' ``start_jobs`` and batched ``complete``, plus one-job
round trips for reference. Prints jobs per second (best of ``--repeat``) and, from Redis'
SLOWLOG, how long the biggest script kept Redis busy.
"""

from __future__ import annotations

import argparse
import uuid

import redis

from bench.store_phases import run_phases
from rota.store.redis.store import RedisStore


def drop(url: str, prefix: str) -> None:
    r = redis.Redis.from_url(url.split("?")[0])
    keys = list(r.scan_iter(match=f"{prefix}*", count=5000))
    for i in range(0, len(keys), 1000):
        r.delete(*keys[i : i + 1000])
    r.close()


def one_round(url: str, jobs: int, batch: int, nodes: int) -> dict[str, float]:
    prefix = f"rota-bench-{uuid.uuid4().hex[:8]}"
    store = RedisStore(f"{url}?prefix={prefix}")
    try:
        return run_phases(store, jobs, batch, nodes)
    finally:
        store.close()
        drop(url, prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    r = redis.Redis.from_url(args.url)
    old = r.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"]
    r.config_set("slowlog-log-slower-than", 20_000)
    r.slowlog_reset()
    best: dict[str, float] = {}
    try:
        for _ in range(args.repeat):
            for name, rate in one_round(args.url, args.jobs, args.batch, args.nodes).items():
                best[name] = max(best.get(name, 0.0), rate)
        slowest = max((e["duration"] for e in r.slowlog_get(128)), default=0) / 1000
    finally:
        r.config_set("slowlog-log-slower-than", old)
        r.close()
    print(f"Redis store, {args.jobs} no-op jobs, {args.nodes} nodes, best of {args.repeat}:")
    for name, rate in best.items():
        print(f"  {name:<40} {rate:>10,.0f} jobs/s")
    print(f"  longest single command in Redis: {slowest:.0f} ms")


if __name__ == "__main__":
    main()
