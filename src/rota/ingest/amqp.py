"""RabbitMQ ingest (aio-pika; ``pip install rota[amqp]``).

Topology in the URL's vhost, declared (or only checked, ``declare=False``): a durable direct
exchange (default ``rota``); per rota queue Q a durable quorum queue ``rota.Q`` bound with
routing key Q and dead-lettering to the fanout exchange ``rota.invalid`` (queue
``rota.invalid``); the quorum queue ``rota.replies`` holds the RPC replies still owed.

Exactly once: a message's job id is derived from its vhost and ``message_id``, so a
redelivery is refused by the store (see ``storing``). Messages are consumed with manual
acks and a bounded prefetch on a *transactional* channel: per batch, the jobs are stored
first, then the dead-letter copies and "reply owed" records are published and the
messages acked, and one ``tx.commit`` makes those publishes and acks take effect
together (commit-ok is the broker's confirmation). A process killed before the commit
leaves every message of the batch to be redelivered; after it, none is.

Replies (RabbitMQ's RPC convention): a message with ``reply_to`` and ``correlation_id``
gets its job's final outcome (``outcome.outcome``) published to ``reply_to`` with that
correlation id. The "reply owed" record waits, unacked, in ``rota.replies`` until the job
is final; the reply is published and the record acked in one transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
)
from aiormq.abc import FieldTable

from rota.app import Rota
from rota.core.model import JobRecord, NewJob
from rota.core.states import FINAL_STATES
from rota.ingest.outcome import encode, invalid_outcome, outcome
from rota.ingest.runtime import IngestOptions, Reconnect, StoreThread, keep_session
from rota.ingest.stats import IngestStats
from rota.ingest.storing import BatchResult
from rota.ingest.wire import InvalidMessage, parse_message
from rota.store import Store

log = logging.getLogger("rota.ingest.amqp")
PERSISTENT = aio_pika.DeliveryMode.PERSISTENT
REASON_HEADER = "x-rota-reason"


def vhost_of(url: str) -> str:
    """The vhost a URL selects (its path; empty: ``/``)."""
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def app_queues(app: Rota) -> list[str]:
    """The rota queues of the app's tasks, and ``default``."""
    return sorted({"default", *(t.defaults.queue for t in app.tasks.values())})


class Topology:
    """Names of the exchange and queues, and their declaration."""

    def __init__(self, exchange: str, queues: Sequence[str]) -> None:
        self.exchange = exchange
        self.queues = list(queues)
        self.invalid = f"{exchange}.invalid"
        self.replies = f"{exchange}.replies"

    def queue_name(self, queue: str) -> str:
        return f"{self.exchange}.{queue}"

    async def declare(self, channel: AbstractChannel, declare: bool) -> dict[str, Any]:
        """Declare (or passively check) everything; returns the AMQP queues by rota queue."""
        passive = not declare
        quorum: FieldTable = {"x-queue-type": "quorum"}
        direct = await channel.declare_exchange(
            self.exchange, aio_pika.ExchangeType.DIRECT, durable=True, passive=passive
        )
        dlx = await channel.declare_exchange(
            self.invalid, aio_pika.ExchangeType.FANOUT, durable=True, passive=passive
        )
        invalid = await channel.declare_queue(
            self.invalid, durable=True, arguments=quorum, passive=passive
        )
        await channel.declare_queue(self.replies, durable=True, arguments=quorum, passive=passive)
        if declare:
            await invalid.bind(dlx, routing_key="")
        out = {}
        for queue in self.queues:
            q = await channel.declare_queue(
                self.queue_name(queue),
                durable=True,
                arguments={**quorum, "x-dead-letter-exchange": self.invalid},
                passive=passive,
            )
            if declare:
                await q.bind(direct, routing_key=queue)
            out[queue] = q
        return out


async def run_amqp(app: Rota, opts: IngestOptions, store: StoreThread, stats: IngestStats) -> None:
    """Consume until ``opts.stop``; reconnect with backoff after any broker failure."""
    topology = Topology(opts.exchange, opts.queues or app_queues(app))
    vhost = vhost_of(opts.source)

    async def session(reconnect: Reconnect) -> None:
        connection = await aio_pika.connect(opts.source, timeout=10)
        try:
            consumer = _Consumer(app, opts, store, stats, topology, vhost, connection)
            await consumer.start()
            stats.connected = True
            reconnect.connected()
            await consumer.run()
        finally:
            stats.connected = False
            if not connection.is_closed:
                await connection.close()

    await keep_session(f"RabbitMQ {stats.source}", session, opts.stop)


class _Consumer:
    """One connection's work: the ingest channel, the reply channel, the lag probe."""

    def __init__(
        self,
        app: Rota,
        opts: IngestOptions,
        store: StoreThread,
        stats: IngestStats,
        topology: Topology,
        vhost: str,
        connection: AbstractConnection,
    ) -> None:
        self.app, self.opts, self.store, self.stats = app, opts, store, stats
        self.topology, self.vhost, self.connection = topology, vhost, connection
        self.inbox: asyncio.Queue[tuple[str, AbstractIncomingMessage]] = asyncio.Queue()
        self.owed: dict[str, list[AbstractIncomingMessage]] = {}
        self.queues: dict[str, Any] = {}

    async def start(self) -> None:
        self.channel = await self.connection.channel(publisher_confirms=False)
        await self.channel.transaction().select()
        self.queues = await self.topology.declare(self.channel, self.opts.declare)
        await self.channel.set_qos(prefetch_count=self.opts.prefetch)
        self.dlx = await self.channel.get_exchange(self.topology.invalid, ensure=False)
        self.reply_channel = await self.connection.channel(publisher_confirms=False)
        await self.reply_channel.transaction().select()
        await self.reply_channel.set_qos(prefetch_count=self.opts.reply_window)
        self.probe = await self.connection.channel()
        for queue, q in self.queues.items():
            await q.consume(self._deliverer(queue))
        replies = await self.reply_channel.get_queue(self.topology.replies, ensure=False)
        await replies.consume(self._owe)

    def _deliverer(
        self, queue: str
    ) -> Callable[[AbstractIncomingMessage], Coroutine[Any, Any, None]]:
        async def deliver(message: AbstractIncomingMessage) -> None:
            self.inbox.put_nowait((queue, message))

        return deliver

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self._ingest_loop()),
            asyncio.create_task(self._reply_loop()),
            asyncio.create_task(self._lag_loop()),
        ]
        closed = asyncio.ensure_future(self.connection.closed())
        stop = asyncio.create_task(self.opts.stop.wait())
        try:
            done, _ = await asyncio.wait(
                [*tasks, closed, stop], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is not stop and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            if closed in done:
                raise ConnectionError("connection closed by the broker")
        finally:
            for task in [*tasks, closed, stop]:
                task.cancel()
            await asyncio.gather(*tasks, closed, stop, return_exceptions=True)

    # ---- ingest ------------------------------------------------------------------
    async def _ingest_loop(self) -> None:
        """Batches in a pipeline of two: batch N+1 is parsed and stored while batch N's
        acks commit. Commits stay in order, and a batch's acks are sent only after its
        jobs are stored and the previous commit is done (so each commit holds one batch)."""
        committing: asyncio.Task[None] | None = None
        try:
            while not self.opts.stop.is_set():
                batch = [await self.inbox.get()]
                await asyncio.sleep(0)  # let deliveries already read join this batch
                while len(batch) < self.opts.batch and not self.inbox.empty():
                    batch.append(self.inbox.get_nowait())
                stored = await self._store(batch)
                if committing is not None:
                    await committing
                committing = asyncio.create_task(self._settle(batch, stored))
            if committing is not None:
                await committing
        finally:
            if committing is not None and not committing.done():
                committing.cancel()  # not committed: redelivered, refused by the store

    async def _store(self, batch: list[tuple[str, AbstractIncomingMessage]]) -> _Stored:
        """Validate the batch and store its valid jobs (one round trip)."""
        self.stats.received += len(batch)
        jobs: list[NewJob] = []
        stored = _Stored()
        for index, (queue, message) in enumerate(batch):
            try:
                if not message.message_id:
                    raise InvalidMessage("no message_id (rota's deduplication key) was set")
                key = f"amqp|{self.vhost}|{message.message_id}"
                jobs.append(parse_message(self.app, message.body, key, queue))
                stored.valid.append(index)
            except InvalidMessage as exc:
                stored.reasons[index] = exc.reason
        invalid = len(stored.reasons)
        if jobs:
            result = stored.result = await self.store.store_jobs(jobs)
            for position, reason in result.refused.items():
                stored.reasons[stored.valid[position]] = f"refused by the store: {reason}"
            self.stats.refused += len(result.refused)
            created = sum(result.created)
            self.stats.stored += created
            self.stats.duplicates += len(jobs) - created - len(result.refused)
        self.stats.invalid += invalid
        return stored

    async def _settle(
        self, batch: list[tuple[str, AbstractIncomingMessage]], stored: _Stored
    ) -> None:
        """Dead-letter copies, reply-owed records and the acks of a stored batch, in one
        transaction."""
        exchange = self.channel.default_exchange
        for index, reason in stored.reasons.items():
            queue, message = batch[index]
            await self.dlx.publish(_dead_letter(message, queue, reason), routing_key=queue)
            if message.reply_to and message.correlation_id:
                await exchange.publish(
                    _reply(message, invalid_outcome(reason), None),
                    routing_key=message.reply_to,
                    mandatory=False,
                )
        result = stored.result
        if result is not None:
            for position, index in enumerate(stored.valid):
                message = batch[index][1]
                if position in result.refused or not (message.reply_to and message.correlation_id):
                    continue
                if result.created[position] or message.redelivered:
                    owed = {
                        "job_id": result.job_ids[position],
                        "reply_to": message.reply_to,
                        "correlation_id": message.correlation_id,
                    }
                    await exchange.publish(
                        aio_pika.Message(orjson.dumps(owed), delivery_mode=PERSISTENT),
                        routing_key=self.topology.replies,
                    )
        await batch[-1][1].ack(multiple=True)
        await self.channel.transaction().commit()

    # ---- replies -----------------------------------------------------------------
    async def _owe(self, message: AbstractIncomingMessage) -> None:
        try:
            job_id = orjson.loads(message.body)["job_id"]
        except Exception:  # not ours: leave it for an operator (never acked here)
            log.error("unreadable record in %s: %r", self.topology.replies, message.body[:200])
            return
        self.owed.setdefault(job_id, []).append(message)

    async def _reply_loop(self) -> None:
        exchange = self.reply_channel.default_exchange
        while not self.opts.stop.is_set():
            await asyncio.sleep(0.05 if self.owed else 0.2)
            if not self.owed:
                continue
            records = await self.store.call(partial(_get_jobs, list(self.owed)))
            final = [r for r in records if r.state in FINAL_STATES]
            if not final:
                await asyncio.sleep(0.1)
                continue
            sent = 0
            for record in final:
                body = outcome(record)
                for owed_message in self.owed.pop(record.id, []):
                    owed = orjson.loads(owed_message.body)
                    await exchange.publish(
                        aio_pika.Message(
                            encode(body),
                            correlation_id=owed["correlation_id"],
                            message_id=record.id,
                            content_type="application/json",
                            headers={"rota-state": record.state.value},
                            delivery_mode=PERSISTENT,
                        ),
                        routing_key=owed["reply_to"],
                        mandatory=False,
                    )
                    await owed_message.ack()
                    sent += 1
            await self.reply_channel.transaction().commit()
            self.stats.replies += sent

    # ---- lag ---------------------------------------------------------------------
    async def _lag_loop(self) -> None:
        while not self.opts.stop.is_set():
            depth = 0
            for queue in self.queues:
                q = await self.probe.declare_queue(self.topology.queue_name(queue), passive=True)
                depth += q.declaration_result.message_count or 0
            self.stats.lag = depth
            await asyncio.sleep(max(1.0, self.opts.stats_every / 2))


@dataclass(slots=True)
class _Stored:
    """A batch after its store round trip: which messages were valid (by index), the
    store's answer for them, and why the others are dead-lettered."""

    valid: list[int] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)
    result: BatchResult | None = None


def _get_jobs(ids: list[str], store: Store) -> list[JobRecord]:
    return store.get_jobs(ids)


def _dead_letter(message: AbstractIncomingMessage, queue: str, reason: str) -> aio_pika.Message:
    """A copy of ``message`` for the dead-letter exchange, with the reason attached."""
    headers = dict(message.headers or {})
    headers[REASON_HEADER] = reason[:1000]
    headers["x-rota-queue"] = queue
    headers["x-rota-failed-at"] = int(time.time())
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        delivery_mode=PERSISTENT,
    )


def _reply(
    message: AbstractIncomingMessage, body: dict[str, Any], job_id: str | None
) -> aio_pika.Message:
    return aio_pika.Message(
        encode(body),
        correlation_id=message.correlation_id,
        message_id=job_id,
        content_type="application/json",
        headers={"rota-state": body["state"]},
        delivery_mode=PERSISTENT,
    )
