"""What both broker loops share: options, the store thread, reconnecting with backoff
(logged once per outage) and the stats publisher; ``rota.ingest.run`` picks the broker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from rota.app import Rota
from rota.core.backoff import retry_delay
from rota.core.errors import StoreError
from rota.core.model import NewJob
from rota.ingest.stats import IngestStats, publish
from rota.ingest.storing import BatchResult, store_batch
from rota.store import Store

log = logging.getLogger("rota.ingest")
T = TypeVar("T")


@dataclass
class IngestOptions:
    """How ``rota ingest`` consumes (see ``rota ingest --help``)."""

    source: str
    queues: Sequence[str] = ()  # AMQP: rota queues to consume (default: the app's queues)
    exchange: str = "rota"  # AMQP
    declare: bool = True  # AMQP: declare the topology (False: only check that it exists)
    topic: str = "rota"  # Kafka
    group: str = "rota"  # Kafka
    result_topic: str | None = None  # Kafka
    prefetch: int = 4000  # unacknowledged messages held at once (two batches in flight)
    batch: int = 2000  # messages per store round trip (and per AMQP commit)
    reply_window: int = 2000  # AMQP: unfinished jobs watched for replies at once
    stats_every: float = 2.0
    stop: asyncio.Event = field(default_factory=asyncio.Event)


class StoreThread:
    """Runs the (blocking) store calls on one thread of its own, off the event loop; a
    call that finds the store unreachable is retried with backoff, so messages stay
    unacknowledged until their jobs are stored."""

    def __init__(self, app: Rota) -> None:
        self.app = app
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="rota-ingest-store")

    async def call(self, fn: Callable[[Store], T], stop: asyncio.Event | None = None) -> T:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            try:
                return await loop.run_in_executor(self.pool, lambda: fn(self.app.store))
            except StoreError as exc:
                attempt += 1
                if attempt == 1:
                    log.warning("store unreachable (%s); retrying with backoff", exc)
                if stop is not None and stop.is_set() and attempt > 3:
                    raise
                await asyncio.sleep(retry_delay(attempt, 0.2, 10.0))

    async def store_jobs(self, jobs: Sequence[NewJob]) -> BatchResult:
        return await self.call(lambda store: store_batch(store, jobs))

    def close(self) -> None:
        self.pool.submit(self.app.close).result()
        self.pool.shutdown()


class Reconnect:
    """Backoff between sessions with the broker; one log line per outage."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failures = 0
        self.down_since = 0.0

    def connected(self) -> None:
        if self.failures:
            log.info(
                "%s: reconnected after %.1f s (%d attempts)",
                self.what,
                time.monotonic() - self.down_since,
                self.failures,
            )
        self.failures = 0

    async def failed(self, exc: BaseException, stop: asyncio.Event) -> None:
        if not self.failures:
            self.down_since = time.monotonic()
            log.warning("%s: %s; reconnecting with backoff", self.what, exc or type(exc).__name__)
        self.failures += 1
        delay = retry_delay(min(self.failures, 8), 0.5, 15.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)


async def keep_session(
    what: str, session: Callable[[Reconnect], Awaitable[None]], stop: asyncio.Event
) -> None:
    """Run ``session`` until ``stop``; reconnect with backoff whenever it fails."""
    reconnect = Reconnect(what)
    while not stop.is_set():
        try:
            await session(reconnect)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await reconnect.failed(exc, stop)


async def publish_stats(stats: IngestStats, store: StoreThread, opts: IngestOptions) -> None:
    """Publish this process's stats every ``stats_every`` seconds until stopped."""
    while not opts.stop.is_set():
        with contextlib.suppress(StoreError):
            await store.call(lambda s: publish(s, stats), opts.stop)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(opts.stop.wait(), opts.stats_every)
