"""Kafka ingest against a real Kafka-compatible broker (tansu, memory storage): consumer
group, dead letters in ``<topic>.invalid``, outcomes in the result topic keyed by job id,
and kill -9 while draining (nothing lost, nothing twice)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from rota.ingest.stats import ingest_processes
from rota.ingest.wire import job_id_for
from rota.store import open_store
from tests.ingest.conftest import Procs, wait_for
from tests.stores import store_url

TOPIC = "tasks"


async def produce(bootstrap: str, total: int) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(TOPIC, num_partitions=2, replication_factor=1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sends = [
            await producer.send(TOPIC, orjson.dumps({"task": "ingest.add", "args": [i, 1]}),
                                key=str(i % 7).encode())
            for i in range(total)
        ]  # fmt: skip
        sends.append(await producer.send(TOPIC, b'{"task": "ingest.add"}'))  # invalid
        # The same message twice, with a producer-given id: one job.
        for _ in range(2):
            body = orjson.dumps({"task": "ingest.add", "args": [-1, -1]})
            sends.append(await producer.send(TOPIC, body, headers=[("message_id", b"twice")]))
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, count: int, timeout: float) -> list[Any]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(out) < count and asyncio.get_running_loop().time() < deadline:
            for part in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(part)
    finally:
        await consumer.stop()
    return out


@pytest.mark.timeout(240)
def test_kafka_group_kill_9_dead_letters_and_results(
    kafka_bootstrap: str, tmp_path: Path, procs: Callable[[str], Procs]
) -> None:
    total = 2000
    source = f"kafka://{kafka_bootstrap}"
    args = ("--topic", TOPIC, "--group", "rota", "--batch", "200", "--result-topic", "results")
    with store_url("redis", tmp_path) as url:
        fleet = procs(url)
        store = open_store(url)
        try:
            asyncio.run(produce(kafka_bootstrap, total))

            def stored() -> int:
                return sum(store.count_jobs().values())

            fleet.ingest("ingest-1", source, *args)
            wait_for(lambda: stored() > 0, 90, "the first jobs (a group join can take 20 s)")
            fleet.kill("ingest-1")  # kill -9 mid-drain
            fleet.ingest("ingest-2", source, *args)
            fleet.worker()
            wait_for(lambda: stored() >= total + 1, 120, f"{total + 1} jobs")
            ids = [job_id_for(f"kafka|{TOPIC}|id|twice")]
            for partition in (0, 1):
                ids += [job_id_for(f"kafka|{TOPIC}|{partition}|{o}") for o in range(total + 3)]
            assert len(store.get_jobs(ids)) == stored() == total + 1

            dead = asyncio.run(consume(kafka_bootstrap, f"{TOPIC}.invalid", 1, 30))
            assert len(dead) >= 1  # at least once: a kill between produce and commit repeats it
            reason = dict(dead[0].headers)["rota-reason"].decode()
            assert "missing a required argument" in reason
            results = asyncio.run(consume(kafka_bootstrap, "results", total + 2, 90))
            by_job = {r.key.decode(): orjson.loads(r.value) for r in results}
            assert len(by_job) == total + 1  # every job's outcome, keyed by its id
            assert all(v["state"] == "succeeded" for v in by_job.values())
            assert sorted(v["result"] for v in by_job.values()) == [-2, *range(1, total + 1)]
            entry = wait_for(
                lambda: [
                    e for e in ingest_processes(store, store.now())
                    if e["kind"] == "kafka" and e["lag"] is not None
                ],  # a process still joining the group has no lag figure yet
                60, "the ingest stats",
            )[0]  # fmt: skip
            assert entry["lag"] is not None
        except BaseException:
            print(fleet.logs())
            raise
        finally:
            fleet.close()
            store.close()
