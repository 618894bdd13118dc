"""Connection loss on Redis: reconnection after CLIENT KILL and after a Redis restart (sync
store and asyncio claims), StoreError when Redis stays unreachable."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from rota.core.errors import StoreError
from rota.core.model import (
    Assignment,
    NewJob,
    NodeSpec,
)
from rota.core.states import JobState
from tests.stores import skip_or_fail

pytest.importorskip("redis")

import redis

from rota.store.redis.store import RedisStore
from tests.store.redis.helpers import TTL, job, leader, node


# ---- connection loss -------------------------------------------------------------------------
def _kill_clients(r: redis.Redis, name: str) -> int:
    killed = 0
    for c in r.client_list():
        if c.get("name") == name:
            killed += int(r.execute_command("CLIENT", "KILL", "ID", c["id"]))  # type: ignore[no-untyped-call]
    return killed


def test_reconnects_after_client_kill(
    store: RedisStore,
    connect: Callable[..., RedisStore],
    raw: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rota.store.redis")
    a = job()
    store.submit([a])
    name = f"rota:{store.prefix}:{os.getpid()}"
    assert _kill_clients(raw, name) >= 1
    b = job()
    store.submit([b])  # an idle killed connection is replaced as it is taken from the pool
    assert {r.id for r in store.get_jobs([a.id, b.id])} == {a.id, b.id}
    assert store.count_jobs() == {("default", JobState.PENDING): 2}

    # a blocked wait survives its connection being killed and still wakes up
    producer = connect()
    store.wait_for_pending(0)  # take the wake-up the submits left
    woke: list[float] = []

    def waiter() -> None:
        store.wait_for_pending(5)
        woke.append(time.monotonic())

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.2)
    _kill_clients(raw, name)  # kills the waiter's and the producer's connections too
    time.sleep(0.3)
    start = time.monotonic()
    producer.submit([job()])
    t.join(5)
    assert woke and woke[0] - start < 1.0
    # the blocked command saw its connection die: one warning, then one line when back
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert len([m for lvl, m in messages if "lost the connection" in m]) == 1
    assert len([m for lvl, m in messages if "reconnected" in m]) == 1


def test_loading_the_library_again_is_refused_cheaply_not_recompiled(
    store: RedisStore, raw: redis.Redis
) -> None:
    """A reconnecting client loads the library without REPLACE: Redis refuses it as already
    there (before compiling it), and the client takes that refusal as success."""
    store.submit([job()])  # the library is loaded by now
    before = raw.info("commandstats").get("cmdstat_function|load", {})
    store._load_library()  # what a second client racing the first sees
    after = raw.info("commandstats")["cmdstat_function|load"]
    assert after["calls"] - before.get("calls", 0) == 1
    assert after["failed_calls"] - before.get("failed_calls", 0) == 1  # "already exists"
    store.submit([job()])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def private_redis() -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Start (and restart) a throw-away redis-server on a free loopback port."""
    binary = shutil.which("redis-server")
    if binary is None:
        skip_or_fail("redis-server is not installed")
    port = _free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        args = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        proc = subprocess.Popen(
            [*args, "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        procs.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return proc
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    start.port = port  # type: ignore[attr-defined]
    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_store_survives_a_redis_restart(
    private_redis: Callable[[], subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rota.store.redis")
    proc = private_redis()
    port = private_redis.port  # type: ignore[attr-defined]
    store = RedisStore(f"redis://127.0.0.1:{port}/0?prefix=restart")
    try:
        store.submit([job()])
        assert store.count_jobs() == {("default", JobState.PENDING): 1}
        failures: list[float] = []
        original = store._failed

        def counting(error: Exception) -> None:
            failures.append(time.monotonic())
            original(error)

        store._failed = counting  # type: ignore[method-assign]
        proc.kill()
        proc.wait(5)
        restarted: list[float] = []

        def restart() -> None:
            time.sleep(1.0)  # Redis is away for a second
            private_redis()
            restarted.append(time.monotonic())

        t = threading.Thread(target=restart)
        t.start()
        j = job()
        start = time.monotonic()
        assert store.submit([j]) == [j.id]  # blocks through the outage, then succeeds
        t.join(10)
        took = time.monotonic() - start
        assert restarted and 0.9 < took < 8
        # the data was not persisted; the library was loaded again ("Function not found") by itself
        assert store.count_jobs() == {("default", JobState.PENDING): 1}
        assert store.get_job(j.id) is not None
        assert 1 <= len(failures) <= 10  # backoff, not a busy loop
        messages = [r.getMessage() for r in caplog.records if r.name == "rota.store.redis"]
        assert len([m for m in messages if "lost the connection" in m]) == 1
        assert len([m for m in messages if "reconnected" in m]) == 1
    finally:
        store.close()


def test_async_claims_survive_a_redis_restart(
    private_redis: Callable[[], subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    """The worker's asyncio client reconnects with backoff and loads the scripts again
    ("Function not found") after a restart, like the store's own connection."""
    caplog.set_level(logging.INFO, logger="rota.store.redis")
    proc = private_redis()
    port = private_redis.port  # type: ignore[attr-defined]
    store = RedisStore(f"redis://127.0.0.1:{port}/0?prefix=arestart")
    claims = store.async_claims()

    def place(n: int) -> tuple[NodeSpec, list[NewJob]]:
        spec = node()
        store.register_node(spec)
        jobs = [job(i) for i in range(n)]
        store.submit(jobs)
        store.assign(leader(store), [Assignment(j.id, spec.id) for j in jobs])
        return spec, jobs

    async def run() -> None:
        spec, jobs = place(3)
        started = await claims.start_jobs(spec.id, 2, TTL)
        assert [r.id for r in started] == [j.id for j in jobs[:2]]
        proc.kill()
        proc.wait(5)

        def restart() -> None:
            time.sleep(0.8)
            private_redis()

        t = threading.Thread(target=restart)
        t.start()
        start = time.monotonic()
        # blocks through the outage; the new Redis knows neither the node nor the scripts
        assert await claims.wait_and_start(spec.id, 2, TTL, 0.1) == []
        assert 0.7 < time.monotonic() - start < 8
        t.join(10)
        spec, jobs = place(1)
        accepted, got = await claims.complete_and_start([], spec.id, 5, TTL)
        assert accepted == [] and [r.id for r in got] == [jobs[0].id]
        await claims.close()

    try:
        asyncio.run(run())
        # one line each way per client: the asyncio one, and the store's own pool when the
        # test uses it after the restart
        messages = [r.getMessage() for r in caplog.records if r.name == "rota.store.redis"]
        assert 1 <= len([m for m in messages if "lost the connection" in m]) <= 2
        assert 1 <= len([m for m in messages if "reconnected" in m]) <= 2
    finally:
        store.close()


def test_unreachable_redis_raises_store_error_after_backoff() -> None:
    port = _free_port()  # nothing listens there
    store = RedisStore(f"redis://127.0.0.1:{port}/0?prefix=nowhere", retries=3)
    start = time.monotonic()
    with pytest.raises(StoreError, match="unreachable"):
        store.count_jobs()
    assert 0.5 < time.monotonic() - start < 5  # 0.1 + 0.2 + 0.4 s of backoff
    store.close()
