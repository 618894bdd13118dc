"""RabbitMQ ingest against the real server: a Node producer (amqplib), RPC replies for
every final outcome, dead letters with their reason, operators' view, and kill -9 of the
ingest process while it drains (nothing lost, nothing twice)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from rota.core.states import JobState
from rota.ingest.amqp import vhost_of
from rota.ingest.stats import ingest_processes
from rota.ingest.wire import job_id_for
from rota.store import Store, open_store
from tests.ingest.conftest import Procs, wait_for
from tests.stores import store_url


def ingest_connected(store: Store, count: int = 1) -> bool:
    entries = ingest_processes(store, store.now())
    return sum(1 for e in entries if e["connected"] and not e["stale"]) >= count


async def publish(url: str, messages: list[tuple[str, dict[str, Any]]], **props: Any) -> None:
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()  # publisher confirms on
        exchange = await channel.get_exchange("rota")
        for message_id, body in messages:
            await exchange.publish(
                aio_pika.Message(orjson.dumps(body), message_id=message_id, **props),
                routing_key="default",
            )


async def read_queue(url: str, name: str, count: int, timeout: float) -> list[Any]:
    """``count`` messages from queue ``name`` (acked), or fewer when ``timeout`` passes."""
    import aio_pika

    out: list[Any] = []
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            message = await queue.get(fail=False)
            if message is None:
                await asyncio.sleep(0.1)
                continue
            await message.ack()
            out.append(message)
    return out


@pytest.mark.timeout(150)
def test_node_producer_replies_dead_letters_and_status(
    amqp_url: str, tmp_path: Path, procs: Callable[[str], Procs], node_amqplib: Path
) -> None:
    import aio_pika

    with store_url("redis", tmp_path) as url:
        fleet = procs(url)
        store = open_store(url)
        fleet.worker()
        fleet.ingest("ingest", amqp_url, "--processes", "1")  # the figures of one process
        try:
            wait_for(lambda: ingest_connected(store), 60, "the ingest process to connect")
            node = subprocess.run(
                ["node", str(node_amqplib / "producer.js"), amqp_url, "20", "n"],
                capture_output=True, text=True, timeout=90,
            )  # fmt: skip
            assert node.returncode == 0, node.stderr
            lines = node.stdout.splitlines()
            assert lines[-1] == "done"
            replies = {r["correlation_id"]: r for r in map(json.loads, lines[:-1])}
            assert len(lines) - 1 == len(replies) == 21  # each reply once
            vhost = vhost_of(amqp_url)
            for i in range(20):
                reply = replies[f"corr-n-{i}"]
                assert reply["state"] == "succeeded" and reply["result"] == i + 1000
                assert reply["job_id"] == job_id_for(f"amqp|{vhost}|n-{i}")
            invalid = replies["corr-n-invalid"]
            assert (
                invalid["state"] == "invalid" and "missing a required argument" in invalid["error"]
            )

            # Dead and cancelled jobs get their outcome too (a Python client's RPC).
            async def rpc() -> dict[str, Any]:
                connection = await aio_pika.connect(amqp_url)
                async with connection:
                    channel = await connection.channel()
                    callback = await channel.declare_queue("", exclusive=True)
                    exchange = await channel.get_exchange("rota")
                    for mid, body in (
                        ("p-fail", {"task": "ingest.fail", "args": ["boom"]}),
                        ("p-nap", {"task": "ingest.nap", "args": [60000]}),
                    ):
                        await exchange.publish(
                            aio_pika.Message(
                                orjson.dumps(body), message_id=mid, correlation_id=mid,
                                reply_to=callback.name,
                            ),
                            routing_key="default",
                        )  # fmt: skip
                    nap = job_id_for(f"amqp|{vhost}|p-nap")
                    wait_for(
                        lambda: (j := store.get_job(nap)) and j.state == JobState.RUNNING,
                        60, "the nap job to run",
                    )  # fmt: skip
                    store.cancel(nap)
                    got: dict[str, Any] = {}
                    async with callback.iterator(timeout=60) as messages:
                        async for message in messages:
                            await message.ack()
                            got[message.correlation_id or ""] = orjson.loads(message.body)
                            if len(got) == 2:
                                break
                    return got

            outcomes = asyncio.run(rpc())
            assert outcomes["p-fail"]["state"] == "dead" and "boom" in outcomes["p-fail"]["error"]
            assert outcomes["p-nap"]["state"] == "cancelled"

            # The invalid message is in rota.invalid, its reason attached.
            dead = asyncio.run(read_queue(amqp_url, "rota.invalid", 1, 30))
            assert len(dead) == 1 and dead[0].message_id == "n-invalid"
            assert "missing a required argument" in str(dead[0].headers["x-rota-reason"])

            # Operators: rota status --json shows the process with its figures.
            def figures() -> dict[str, Any] | None:
                entries = ingest_processes(store, store.now())
                e = entries[0] if entries else None
                return e if e and e["stored"] >= 22 and e["replies"] >= 22 else None

            entry = wait_for(figures, 30, "the ingest stats")
            assert entry["invalid"] == 1 and entry["kind"] == "amqp" and "***" in entry["source"]
            status = subprocess.run(
                [fleet.python, "-m", "rota", "status", "--json"],
                capture_output=True, text=True, timeout=60, env=fleet.env(),
            )  # fmt: skip
            assert json.loads(status.stdout)["ingest"][0]["id"] == entry["id"]
        except BaseException:
            print(fleet.logs())
            raise
        finally:
            fleet.close()
            store.close()


@pytest.mark.timeout(180)
def test_kill_9_while_draining_loses_and_duplicates_nothing(
    amqp_url: str, tmp_path: Path, procs: Callable[[str], Procs]
) -> None:
    total = 3000
    with store_url("redis", tmp_path) as url:
        fleet = procs(url)
        store = open_store(url)
        try:
            first = fleet.ingest("ingest-0", amqp_url)  # declares the topology
            wait_for(lambda: ingest_connected(store), 60, "the ingest process to connect")
            fleet.kill("ingest-0")
            assert first.returncode is not None
            messages = [(f"k-{i}", {"task": "ingest.noop", "args": [i]}) for i in range(total)]
            asyncio.run(publish(amqp_url, messages))
            asyncio.run(publish(amqp_url, messages[:100]))  # a producer that sent twice

            def stored() -> int:
                return sum(store.count_jobs().values())

            for kill in range(3):  # kill -9 mid-drain, three times
                before = stored()
                fleet.ingest(f"ingest-{kill + 1}", amqp_url, "--batch", "100", "--prefetch", "300")

                def grew(than: int = before) -> bool:
                    return stored() > than

                wait_for(grew, 60, "the ingest process to store jobs", 0.02)
                fleet.kill(f"ingest-{kill + 1}")
            fleet.ingest("ingest-a", amqp_url)  # two processes share the rest
            fleet.ingest("ingest-b", amqp_url)
            wait_for(lambda: stored() >= total, 90, f"{total} jobs")
            time.sleep(1.0)  # anything extra would show now
            assert stored() == total
            vhost = vhost_of(amqp_url)
            ids = [job_id_for(f"amqp|{vhost}|k-{i}") for i in range(total)]
            assert len(store.get_jobs(ids)) == total
            entries = wait_for(
                lambda: [e for e in ingest_processes(store, store.now()) if e["received"]],
                30, "stats of the last ingest processes",
            )  # fmt: skip
            assert all(e["invalid"] == 0 for e in entries)
        except BaseException:
            print(fleet.logs())
            raise
        finally:
            fleet.close()
            store.close()


async def take_back(url: str, count: int) -> None:
    """Receive ``count`` messages of ``rota.default`` and close without acking: the broker
    redelivers them (``redelivered`` set), as after an ingest process died."""
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("rota.default", passive=True)
        taken = 0
        deadline = time.monotonic() + 30
        while taken < count and time.monotonic() < deadline:
            if await queue.get(fail=False, no_ack=False) is None:
                await asyncio.sleep(0.05)
            else:
                taken += 1
        assert taken == count


@pytest.mark.timeout(120)
def test_dead_letter_repeats_counts_redelivered_dead_letters_apart(
    amqp_url: str, tmp_path: Path, procs: Callable[[str], Procs]
) -> None:
    from rota.dashboard.metrics import ingest_metrics

    with store_url("redis", tmp_path) as url:
        fleet = procs(url)
        store = open_store(url)
        try:
            fleet.ingest("declare", amqp_url, "--processes", "1")  # declares the topology
            wait_for(lambda: ingest_connected(store), 60, "the ingest process to connect")
            fleet.kill("declare")
            # One invalid message delivered before (redelivered now), then a fresh one.
            asyncio.run(publish(amqp_url, [("again", {"task": "no.such.task"})]))
            asyncio.run(take_back(amqp_url, 1))
            asyncio.run(publish(amqp_url, [("fresh", {"task": "no.such.task"})]))
            asyncio.run(publish(amqp_url, [("ok", {"task": "ingest.noop", "args": [1]})]))
            fleet.ingest("ingest", amqp_url, "--processes", "1")

            def figures() -> dict[str, Any] | None:
                entries = [e for e in ingest_processes(store, store.now()) if e["received"]]
                done = ("invalid", "dead_letter_repeats", "stored")
                return entries[0] if entries and sum(entries[0][k] for k in done) >= 3 else None

            entry = wait_for(figures, 60, "the ingest stats")
            assert (entry["invalid"], entry["dead_letter_repeats"], entry["stored"]) == (1, 1, 1)
            dead = asyncio.run(read_queue(amqp_url, "rota.invalid", 3, 10))
            assert sorted(m.message_id for m in dead) == ["again", "fresh"]
            gauges = {m.name: m for m in ingest_metrics([entry])}
            (sample,) = gauges["rota_ingest_dead_letter_repeats"].samples
            assert sample.value == 1.0
        except BaseException:
            print(fleet.logs())
            raise
        finally:
            fleet.close()
            store.close()


def queue_messages(url: str, name: str) -> int:
    """Messages in queue ``name``, ready or unacknowledged (``rabbitmqctl list_queues``)."""
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost_of(url), "name", "messages"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == name:
            return int(parts[1])
    raise AssertionError(f"no queue {name!r} in {listing!r}")


async def publish_owed(url: str, records: list[dict[str, Any]]) -> None:
    """Put "reply owed" records into ``rota.replies`` as ingest processes do."""
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue("client.replies", durable=True)
        for record in records:
            await channel.default_exchange.publish(
                aio_pika.Message(orjson.dumps(record), delivery_mode=2), routing_key="rota.replies"
            )


@pytest.mark.timeout(150)
def test_several_records_owing_one_reply_publish_it_once(
    amqp_url: str, tmp_path: Path, procs: Callable[[str], Procs]
) -> None:
    # A redelivered message leaves a second "reply owed" record, maybe in another process:
    # the records claim the reply (put_stats_once) and only the winner publishes it.
    with store_url("redis", tmp_path) as url:
        fleet = procs(url)
        store = open_store(url)
        fleet.ingest("ingest", amqp_url, "--processes", "2")
        try:
            wait_for(lambda: ingest_connected(store, 2), 60, "two ingest processes")
            job_id = job_id_for(f"amqp|{vhost_of(amqp_url)}|m-1")
            owed = {"job_id": job_id, "reply_to": "client.replies", "correlation_id": "c-1"}
            asyncio.run(publish_owed(amqp_url, []))  # declares client.replies
            asyncio.run(
                publish(
                    amqp_url,
                    [("m-1", {"task": "ingest.add", "args": [2, 3]})],
                    reply_to="client.replies",
                    correlation_id="c-1",
                )
            )
            extra = [{**owed, "record": f"extra-{i}"} for i in range(4)]
            asyncio.run(publish_owed(amqp_url, extra))
            fleet.worker()
            replies = asyncio.run(read_queue(amqp_url, "client.replies", 5, 20))
            assert [(m.correlation_id, m.message_id) for m in replies] == [("c-1", job_id)]
            assert orjson.loads(replies[0].body)["result"] == 5
            wait_for(lambda: queue_messages(amqp_url, "rota.replies") == 0, 30, "records acked")
            # The winning record, redelivered (its process died before the ack), wins again:
            # the reply is sent again rather than lost.
            claim = store.get_stats(f"ingest.reply:{job_id}:c-1")
            assert claim is not None
            asyncio.run(publish_owed(amqp_url, [{**owed, "record": claim["record"]}]))
            again = asyncio.run(read_queue(amqp_url, "client.replies", 2, 10))
            assert [m.correlation_id for m in again] == ["c-1"]
        except BaseException:
            print(fleet.logs())
            raise
        finally:
            fleet.close()
            store.close()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.timeout(150)
def test_processes_share_the_queue_and_stop_without_their_parent(
    amqp_url: str, tmp_path: Path, procs: Callable[[str], Procs]
) -> None:
    total = 2000
    with store_url("redis", tmp_path) as url:
        fleet = procs(url)
        store = open_store(url)
        try:
            parent = fleet.ingest("ingest", amqp_url, "--processes", "2", "--batch", "50")
            wait_for(lambda: ingest_connected(store, 2), 60, "two connected ingest processes")
            messages = [(f"p-{i}", {"task": "ingest.noop", "args": [i]}) for i in range(total)]
            asyncio.run(publish(amqp_url, messages))

            def stored() -> int:
                return sum(store.count_jobs().values())

            wait_for(lambda: stored() >= total, 90, f"{total} jobs")
            vhost = vhost_of(amqp_url)
            ids = [job_id_for(f"amqp|{vhost}|p-{i}") for i in range(total)]
            assert len(store.get_jobs(ids)) == total
            entries = wait_for(
                lambda: (e := [x for x in ingest_processes(store, store.now()) if x["connected"]])
                and sum(x["received"] for x in e) >= total and e,
                30, "the figures of both processes",
            )  # fmt: skip
            pids = {e["pid"] for e in entries}
            assert len(pids) == 2 and parent.pid not in pids
            assert sum(e["stored"] for e in entries) == total
            os.kill(parent.pid, signal.SIGKILL)  # the parent only: its children stop by themselves
            parent.wait(30)
            wait_for(lambda: not any(_alive(pid) for pid in pids), 60, "the children to stop")
            time.sleep(1.0)
            assert stored() == total
        except BaseException:
            print(fleet.logs())
            raise
        finally:
            fleet.close()
            store.close()
