"""RabbitMQ ingest (aiormq, the protocol layer below aio-pika; ``pip install rota[amqp]``).

Topology in the URL's vhost, declared (or only checked, ``declare=False``): a durable direct
exchange (default ``rota``); per rota queue Q a durable quorum queue ``rota.Q`` bound with
routing key Q and dead-lettering to the fanout exchange ``rota.invalid`` (queue
``rota.invalid``); the quorum queue ``rota.replies`` holds the RPC replies still owed.

Exactly once: a message's job id is derived from its vhost and ``message_id``, so a
redelivery is refused by the store (see ``storing``). Messages are consumed with manual
acks and a bounded prefetch, in batches: a batch's jobs are stored first (one
``submit_many`` round trip), then its dead-letter copies and "reply owed" records are
published and confirmed by the broker (publisher confirms), and only then is the batch
acked with one ``basic.ack(multiple=True)``. A process killed before the ack leaves the
whole batch to be redelivered: its jobs are refused as stored already, and what it
published is published again (a dead-letter copy of a redelivered message is counted in
``dead_letter_repeats``; a second "reply owed" record is settled below).

Replies (RabbitMQ's RPC convention): a message with ``reply_to`` and ``correlation_id``
gets its job's final outcome (``outcome.outcome``) published to ``reply_to`` with that
correlation id. The "reply owed" record waits, unacked, in ``rota.replies`` until the job
is final. Then the record claims the reply with ``Store.put_stats_once`` (name: job id and
correlation id; data: the record's own id): among several records for one reply (a
redelivered message, several ingest processes) exactly one wins, and only the winner
publishes; the others are acked unpublished. The winner's reply is confirmed before its
record is acked, so a kill in between redelivers the record, which wins again (same id)
and publishes the reply once more: a reply is never lost, and it is sent twice only when
an ingest process dies between the broker's confirm and the ack (its ``message_id`` is the
job id, for a consumer that wants to drop such a repeat).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import unquote, urlsplit

import aiormq
import orjson
from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage
from pamqp import commands as spec
from pamqp.common import FieldValue

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
PERSISTENT = 2
REASON_HEADER = "x-rota-reason"
REPLY_CLAIM = "ingest.reply:"  # + job id + ":" + correlation id (Store.put_stats_once)


class NotConfirmed(ConnectionError):
    """The broker nacked a publish: the batch is left unacked (redelivered)."""


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

    async def declare(self, channel: AbstractChannel, declare: bool) -> None:
        """Declare everything (or passively check that it exists)."""
        passive = not declare
        quorum: dict[str, FieldValue] = {"x-queue-type": "quorum"}
        await channel.exchange_declare(
            self.exchange, exchange_type="direct", durable=True, passive=passive
        )
        await channel.exchange_declare(
            self.invalid, exchange_type="fanout", durable=True, passive=passive
        )
        await channel.queue_declare(self.invalid, durable=True, arguments=quorum, passive=passive)
        await channel.queue_declare(self.replies, durable=True, arguments=quorum, passive=passive)
        if declare:
            await channel.queue_bind(self.invalid, self.invalid, routing_key="")
        for queue in self.queues:
            name = self.queue_name(queue)
            arguments: dict[str, FieldValue] = {**quorum, "x-dead-letter-exchange": self.invalid}
            await channel.queue_declare(name, durable=True, arguments=arguments, passive=passive)
            if declare:
                await channel.queue_bind(name, self.exchange, routing_key=queue)


async def run_amqp(app: Rota, opts: IngestOptions, store: StoreThread, stats: IngestStats) -> None:
    """Consume until ``opts.stop``; reconnect with backoff after any broker failure."""
    topology = Topology(opts.exchange, opts.queues or app_queues(app))
    vhost = vhost_of(opts.source)

    async def session(reconnect: Reconnect) -> None:
        connection = await asyncio.wait_for(aiormq.connect(opts.source), 10)
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


async def _confirmed(publishes: Sequence[Awaitable[Any]]) -> None:
    """Wait for the broker's confirm of every publish; a nack fails the batch."""
    for answer in await asyncio.gather(*publishes):
        if not isinstance(answer, spec.Basic.Ack):
            raise NotConfirmed(f"the broker did not confirm a publish: {answer!r}")


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
        self.inbox: asyncio.Queue[tuple[str, DeliveredMessage]] = asyncio.Queue()
        self.owed: dict[str, list[tuple[int, dict[str, Any]]]] = {}

    async def start(self) -> None:
        self.channel = await self.connection.channel(publisher_confirms=True)
        await self.topology.declare(self.channel, self.opts.declare)
        await self.channel.basic_qos(prefetch_count=self.opts.prefetch)
        self.reply_channel = await self.connection.channel(publisher_confirms=True)
        await self.reply_channel.basic_qos(prefetch_count=self.opts.reply_window)
        self.probe = await self.connection.channel(publisher_confirms=False)
        for queue in self.topology.queues:
            await self.channel.basic_consume(
                self.topology.queue_name(queue), self._deliverer(queue), no_ack=False
            )
        await self.reply_channel.basic_consume(self.topology.replies, self._owe, no_ack=False)

    def _deliverer(self, queue: str) -> Callable[[DeliveredMessage], Coroutine[Any, Any, None]]:
        put = self.inbox.put_nowait

        async def deliver(message: DeliveredMessage) -> None:
            put((queue, message))

        return deliver

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self._ingest_loop()),
            asyncio.create_task(self._reply_loop()),
            asyncio.create_task(self._lag_loop()),
        ]
        closed = asyncio.ensure_future(self.connection.closing)
        stop = asyncio.create_task(self.opts.stop.wait())
        try:
            done, _ = await asyncio.wait(
                [*tasks, closed, stop], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is not stop and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc,unused-ignore]
            if closed in done:
                raise ConnectionError("connection closed by the broker")
        finally:
            for task in [*tasks, closed, stop]:
                task.cancel()
            await asyncio.gather(*tasks, closed, stop, return_exceptions=True)

    # ---- ingest ------------------------------------------------------------------
    async def _ingest_loop(self) -> None:
        """Batches in a pipeline of two: batch N+1 is parsed and stored while batch N's
        publishes are confirmed and its ack sent. Settling stays in delivery order (an ack
        with ``multiple`` covers every earlier delivery of the channel), and a batch is
        acked only after its jobs are stored and the previous batch is settled."""
        settling: asyncio.Task[None] | None = None
        try:
            while not self.opts.stop.is_set():
                batch = [await self.inbox.get()]
                await asyncio.sleep(0)  # let deliveries already read join this batch
                while len(batch) < self.opts.batch and not self.inbox.empty():
                    batch.append(self.inbox.get_nowait())
                stored = await self._store(batch)
                if settling is not None:
                    await settling
                settling = asyncio.create_task(self._settle(batch, stored))
            if settling is not None:
                await settling
        finally:
            if settling is not None and not settling.done():
                settling.cancel()  # not acked: redelivered, refused by the store

    async def _store(self, batch: list[tuple[str, DeliveredMessage]]) -> _Stored:
        """Validate the batch and store its valid jobs (one round trip)."""
        self.stats.received += len(batch)
        jobs: list[NewJob] = []
        stored = _Stored()
        for index, (queue, message) in enumerate(batch):
            try:
                message_id = message.header.properties.message_id
                if not message_id:
                    raise InvalidMessage("no message_id (rota's deduplication key) was set")
                key = f"amqp|{self.vhost}|{message_id}"
                jobs.append(parse_message(self.app, message.body, key, queue))
                stored.valid.append(index)
            except InvalidMessage as exc:
                stored.reasons[index] = exc.reason
        invalid = set(stored.reasons)
        if jobs:
            result = stored.result = await self.store.store_jobs(jobs)
            for position, reason in result.refused.items():
                stored.reasons[stored.valid[position]] = f"refused by the store: {reason}"
            created = sum(result.created)
            self.stats.stored += created
            self.stats.duplicates += len(jobs) - created - len(result.refused)
        for index in stored.reasons:
            if batch[index][1].redelivered:  # its copy may be in the dead letters already
                self.stats.dead_letter_repeats += 1
            elif index in invalid:
                self.stats.invalid += 1
            else:
                self.stats.refused += 1
        return stored

    async def _settle(self, batch: list[tuple[str, DeliveredMessage]], stored: _Stored) -> None:
        """Publish a stored batch's dead-letter copies and "reply owed" records, wait for
        the broker's confirms, then ack the whole batch at once."""
        publish = self.channel.basic_publish
        publishes: list[Awaitable[Any]] = []
        for index, reason in stored.reasons.items():
            queue, message = batch[index]
            props = message.header.properties
            publishes.append(
                publish(
                    message.body,
                    exchange=self.topology.invalid,
                    routing_key=queue,
                    properties=_dead_letter(props, queue, reason),
                )
            )
            if props.reply_to and props.correlation_id:
                body = invalid_outcome(reason)
                publishes.append(
                    publish(
                        encode(body),
                        routing_key=props.reply_to,
                        properties=_reply_props(props.correlation_id, None, body["state"]),
                    )
                )
        result = stored.result
        if result is not None:
            for position, index in enumerate(stored.valid):
                message = batch[index][1]
                props = message.header.properties
                if position in result.refused or not (props.reply_to and props.correlation_id):
                    continue
                if result.created[position] or message.redelivered:
                    owed = {
                        "job_id": result.job_ids[position],
                        "reply_to": props.reply_to,
                        "correlation_id": props.correlation_id,
                        "record": uuid.uuid4().hex,
                    }
                    publishes.append(
                        publish(
                            orjson.dumps(owed),
                            routing_key=self.topology.replies,
                            properties=spec.Basic.Properties(delivery_mode=PERSISTENT),
                        )
                    )
        if publishes:
            await _confirmed(publishes)
        tag = batch[-1][1].delivery_tag
        assert tag is not None
        await self.channel.basic_ack(tag, multiple=True)

    # ---- replies -----------------------------------------------------------------
    async def _owe(self, message: DeliveredMessage) -> None:
        try:
            owed = orjson.loads(message.body)
            job_id = owed["job_id"]
        except Exception:  # not ours: leave it for an operator (never acked here)
            log.error("unreadable record in %s: %r", self.topology.replies, message.body[:200])
            return
        owed.setdefault("record", message.header.properties.message_id)
        tag = message.delivery_tag
        assert tag is not None
        self.owed.setdefault(job_id, []).append((tag, owed))

    async def _reply_loop(self) -> None:
        while not self.opts.stop.is_set():
            await asyncio.sleep(0.05 if self.owed else 0.2)
            if not self.owed:
                continue
            records = await self.store.call(partial(_get_jobs, list(self.owed)))
            final = [r for r in records if r.state in FINAL_STATES]
            if not final:
                await asyncio.sleep(0.1)
                continue
            due = [
                (record, tag, owed) for record in final for tag, owed in self.owed.pop(record.id)
            ]
            wins = await self.store.call(partial(_claim_replies, [owed for _, _, owed in due]))
            publishes = []
            for (record, _, owed), won in zip(due, wins, strict=True):
                if won:
                    body = outcome(record)
                    publishes.append(
                        self.reply_channel.basic_publish(
                            encode(body),
                            routing_key=owed["reply_to"],
                            properties=_reply_props(
                                owed["correlation_id"], record.id, record.state.value
                            ),
                        )
                    )
            await _confirmed(publishes)
            for _, tag, _ in due:
                await self.reply_channel.basic_ack(tag)
            self.stats.replies += len(publishes)

    # ---- lag ---------------------------------------------------------------------
    async def _lag_loop(self) -> None:
        while not self.opts.stop.is_set():
            depth = 0
            for queue in self.topology.queues:
                name = self.topology.queue_name(queue)
                declared = await self.probe.queue_declare(name, passive=True)
                depth += declared.message_count or 0
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


def _claim_replies(owed: list[dict[str, Any]], store: Store) -> list[bool]:
    """Per "reply owed" record: whether it won its reply (``put_stats_once``)."""
    return [
        store.put_stats_once(
            f"{REPLY_CLAIM}{o['job_id']}:{o['correlation_id']}", {"record": o.get("record")}
        )
        for o in owed
    ]


def _dead_letter(props: spec.Basic.Properties, queue: str, reason: str) -> spec.Basic.Properties:
    """The properties of a message's dead-letter copy, with the reason attached."""
    headers = dict(props.headers or {})
    headers[REASON_HEADER] = reason[:1000]
    headers["x-rota-queue"] = queue
    headers["x-rota-failed-at"] = int(time.time())
    return spec.Basic.Properties(
        headers=headers,
        content_type=props.content_type,
        message_id=props.message_id,
        correlation_id=props.correlation_id,
        reply_to=props.reply_to,
        delivery_mode=PERSISTENT,
    )


def _reply_props(correlation_id: str, job_id: str | None, state: str) -> spec.Basic.Properties:
    return spec.Basic.Properties(
        correlation_id=correlation_id,
        message_id=job_id,
        content_type="application/json",
        headers={"rota-state": state},
        delivery_mode=PERSISTENT,
    )
