"""``run_ingest``: one ingest process, from the broker its source URL names (the amqp and
kafka modules build on ``rota.ingest.runtime``; this module sits above all three)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from rota.app import Rota
from rota.core.errors import StoreError
from rota.ingest.processes import watch_parent
from rota.ingest.runtime import IngestOptions, StoreThread, publish_stats
from rota.ingest.stats import IngestStats, publish
from rota.status import redact_url

log = logging.getLogger("rota.ingest")


async def run_ingest(app: Rota, opts: IngestOptions) -> None:
    """Consume ``opts.source`` until SIGTERM/SIGINT (or ``opts.stop``)."""
    scheme = opts.source.split("://", 1)[0].lower()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, opts.stop.set)
    store = StoreThread(app)
    stats = IngestStats(source=redact_url(opts.source), kind=scheme)
    runner: Callable[[Rota, IngestOptions, StoreThread, IngestStats], Awaitable[Any]]
    if scheme in ("amqp", "amqps"):
        from rota.ingest.amqp import run_amqp

        runner = run_amqp
    elif scheme == "kafka":
        from rota.ingest.kafka import run_kafka

        runner = run_kafka
    else:
        raise ValueError(f"--from takes amqp://... or kafka://..., not {opts.source!r}")
    log.info("ingest %s from %s into %s", stats.id, stats.source, redact_url(app.store_url))
    publisher = asyncio.create_task(publish_stats(stats, store, opts))
    watcher = asyncio.create_task(watch_parent(opts.stop))
    try:
        await runner(app, opts, store, stats)
    finally:
        opts.stop.set()
        await publisher
        await watcher
        try:
            await store.call(lambda s: publish(s, stats, remove=True), opts.stop)
        except StoreError:
            pass
        finally:
            store.close()
