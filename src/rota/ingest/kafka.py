"""Kafka ingest (aiokafka; ``pip install rota[kafka]``).

A consumer group (``--group``) reads ``--topic``; offsets are committed by hand, only after
the jobs of every record up to them are stored (or, for an invalid record, after its copy
is in ``<topic>.invalid`` with the header ``rota-reason``). A record's job id is derived
from its ``message_id`` header when the producer set one, else from (topic, partition,
offset), so a record read again after a crash or a rebalance is refused by the store.

Outcomes (``--result-topic``): a second consumer group, ``<group>.results``, reads the same
topic, derives each record's job id the same way, waits for the job to be final and
produces its outcome to the result topic, keyed by job id; its offsets are committed past
records whose outcome is out. Nothing else has to be remembered across crashes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, KafkaError, TopicAlreadyExistsError

from rota.app import Rota
from rota.core.model import NewJob
from rota.core.states import FINAL_STATES
from rota.ingest.outcome import encode, outcome
from rota.ingest.runtime import IngestOptions, Reconnect, StoreThread, keep_session
from rota.ingest.stats import IngestStats
from rota.ingest.wire import InvalidMessage, parse_message

log = logging.getLogger("rota.ingest.kafka")
ID_HEADER = "message_id"
REASON_HEADER = "rota-reason"


def bootstrap_of(url: str) -> str:
    """``kafka://h1:9092,h2:9092`` -> ``h1:9092,h2:9092``."""
    return urlsplit(url).netloc or "127.0.0.1:9092"


def source_key(record: ConsumerRecord[Any, Any]) -> str:
    """The record's identity: its producer-given ``message_id`` header, else its place."""
    for name, value in record.headers or ():
        if name == ID_HEADER and value:
            return f"kafka|{record.topic}|id|{bytes(value).decode(errors='replace')}"
    return f"kafka|{record.topic}|{record.partition}|{record.offset}"


def record_job(app: Rota, record: ConsumerRecord[Any, Any]) -> NewJob:
    return parse_message(app, record.value or b"", source_key(record))


async def ensure_topics(bootstrap: str, names: Sequence[str], partitions: int = 1) -> None:
    """Create the topics rota writes to, if missing."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in missing]
                )
    finally:
        await admin.close()


async def run_kafka(app: Rota, opts: IngestOptions, store: StoreThread, stats: IngestStats) -> None:
    bootstrap = bootstrap_of(opts.source)
    invalid_topic = f"{opts.topic}.invalid"

    async def session(reconnect: Reconnect) -> None:
        await ensure_topics(bootstrap, [invalid_topic, *filter(None, [opts.result_topic])])
        consumer = AIOKafkaConsumer(
            opts.topic,
            bootstrap_servers=bootstrap,
            group_id=opts.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=opts.batch,
            fetch_max_bytes=16 * 1024 * 1024,
        )
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
        await producer.start()
        await consumer.start()
        tasks: list[asyncio.Task[None]] = []
        try:
            stats.connected = True
            reconnect.connected()
            tasks.append(asyncio.create_task(_ingest(app, opts, store, stats, consumer, producer)))
            if opts.result_topic:
                results = _Results(app, opts, store, stats, producer, bootstrap)
                tasks.append(asyncio.create_task(results.run()))
            stop = asyncio.create_task(opts.stop.wait())
            done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            for task in done:
                if task is not stop and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            stats.connected = False
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await consumer.stop()
            await producer.stop()

    await keep_session(f"Kafka {stats.source}", session, opts.stop)


async def _ingest(
    app: Rota,
    opts: IngestOptions,
    store: StoreThread,
    stats: IngestStats,
    consumer: AIOKafkaConsumer,
    producer: AIOKafkaProducer,
) -> None:
    invalid_topic = f"{opts.topic}.invalid"
    while not opts.stop.is_set():
        batches = await consumer.getmany(timeout_ms=200, max_records=opts.batch)
        await _update_lag(consumer, stats)
        records = [r for part in batches.values() for r in part]
        if not records:
            continue
        reasons = await _store(app, store, stats, records)
        offsets = {tp: part[-1].offset + 1 for tp, part in batches.items() if part}
        await _settle(consumer, producer, invalid_topic, records, reasons, offsets)


async def _store(
    app: Rota, store: StoreThread, stats: IngestStats, records: list[ConsumerRecord[Any, Any]]
) -> dict[int, str]:
    """Validate and store a batch (one round trip); returns why records are dead-lettered."""
    stats.received += len(records)
    jobs: list[NewJob] = []
    valid: list[int] = []
    reasons: dict[int, str] = {}
    for index, record in enumerate(records):
        try:
            jobs.append(record_job(app, record))
            valid.append(index)
        except InvalidMessage as exc:
            reasons[index] = exc.reason
    stats.invalid += len(reasons)
    if jobs:
        result = await store.store_jobs(jobs)
        for position, reason in result.refused.items():
            reasons[valid[position]] = f"refused by the store: {reason}"
        stats.refused += len(result.refused)
        created = sum(result.created)
        stats.stored += created
        stats.duplicates += len(jobs) - created - len(result.refused)
    return reasons


async def _settle(
    consumer: AIOKafkaConsumer,
    producer: AIOKafkaProducer,
    invalid_topic: str,
    records: list[ConsumerRecord[Any, Any]],
    reasons: dict[int, str],
    offsets: dict[TopicPartition, int],
) -> None:
    """Dead-letter a stored batch's invalid records (acked by the broker), then commit."""
    sends = []
    for index, reason in reasons.items():
        record = records[index]
        headers = [
            *(record.headers or ()),
            (REASON_HEADER, reason[:1000].encode()),
            ("rota-source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]
        sends.append(
            await producer.send(invalid_topic, value=record.value, key=record.key, headers=headers)
        )
    await asyncio.gather(*sends)  # acked by the broker (acks=all) before the commit
    try:
        await consumer.commit(offsets)
    except CommitFailedError as exc:  # a rebalance took the partitions: read again there
        log.info("commit refused after a rebalance (%s); the new owner re-reads", exc)


async def _update_lag(consumer: AIOKafkaConsumer, stats: IngestStats) -> None:
    lag = 0
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        if high is not None:
            lag += max(0, high - await consumer.position(tp))
    stats.lag = lag


@dataclass
class _Pending:
    offset: int
    job_id: str | None  # None: nothing to wait for (invalid, or done)


class _Results:
    """The ``<group>.results`` consumer: one outcome record per job, keyed by job id."""

    def __init__(
        self,
        app: Rota,
        opts: IngestOptions,
        store: StoreThread,
        stats: IngestStats,
        producer: AIOKafkaProducer,
        bootstrap: str,
    ) -> None:
        self.app, self.opts, self.store, self.stats = app, opts, store, stats
        self.producer, self.bootstrap = producer, bootstrap
        self.pending: dict[TopicPartition, list[_Pending]] = {}

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            self.opts.topic,
            bootstrap_servers=self.bootstrap,
            group_id=f"{self.opts.group}.results",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            while not self.opts.stop.is_set():
                await self._round(consumer)
        finally:
            await consumer.stop()

    async def _round(self, consumer: AIOKafkaConsumer) -> None:
        waiting = sum(len(v) for v in self.pending.values())
        if waiting < self.opts.reply_window:
            timeout = 50 if waiting else 200
            batches = await consumer.getmany(timeout_ms=timeout, max_records=self.opts.batch)
            for tp, part in batches.items():
                entries = self.pending.setdefault(tp, [])
                for record in part:
                    try:
                        entries.append(_Pending(record.offset, record_job(self.app, record).id))
                    except InvalidMessage:
                        entries.append(_Pending(record.offset, None))
        else:
            await asyncio.sleep(0.05)
        assigned = consumer.assignment()
        for tp in [tp for tp in self.pending if tp not in assigned]:
            del self.pending[tp]  # revoked: its new owner starts from the committed offset
        wanted = [e.job_id for v in self.pending.values() for e in v if e.job_id]
        if wanted:
            records = await self.store.call(lambda s: s.get_jobs(wanted))
            final = {r.id: r for r in records if r.state in FINAL_STATES}
            sends = []
            for entries in self.pending.values():
                for entry in entries:
                    record = final.get(entry.job_id or "")
                    if record is not None:
                        key = record.id.encode()
                        value = encode(outcome(record))
                        assert self.opts.result_topic is not None
                        sends.append(
                            await self.producer.send(self.opts.result_topic, value, key=key)
                        )
                        entry.job_id = None
            await asyncio.gather(*sends)
            self.stats.replies += len(sends)
        offsets = {}
        for tp, entries in self.pending.items():
            done = 0
            while done < len(entries) and entries[done].job_id is None:
                done += 1
            if done:
                offsets[tp] = entries[done - 1].offset + 1
                del entries[:done]
        if offsets:
            with contextlib.suppress(CommitFailedError):
                await consumer.commit(offsets)


__all__ = ["KafkaError", "bootstrap_of", "ensure_topics", "run_kafka", "source_key"]
