"""Shared helpers of the PostgreSQL store tests: records to submit, a store of a URL, wake-up
latencies."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")

from rota.core.model import (  # noqa: E402
    NewJob,
    NodeSpec,
)

PAYLOAD = '{"args":[],"kwargs":{}}'


def new_job(**kw: Any) -> NewJob:
    kw.setdefault("id", uuid.uuid4().hex)
    kw.setdefault("task", "tests.noop")
    kw.setdefault("queue", "default")
    kw.setdefault("payload", PAYLOAD)
    return NewJob(**kw)


def node_spec(node_id: str, **kw: Any) -> NodeSpec:
    kw.setdefault("slots", 4)
    kw.setdefault("prefetch", 4)
    return NodeSpec(id=node_id, name=node_id, **kw)


def open_store(url: str) -> Any:
    from rota.store.postgres.store import PostgresStore

    return PostgresStore(url)


def latencies(wait: Any, act: Any, rounds: int = 5) -> list[float]:
    """How long after ``act()`` starts a ``wait()`` blocked in another thread returns."""
    out = []
    for _ in range(rounds):
        woke: list[float] = []

        def run(woke: list[float] = woke) -> None:
            wait()
            woke.append(time.perf_counter())

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(0.1)
        assert not woke, "the wait returned before anything happened"
        t0 = time.perf_counter()
        act()
        thread.join(10)
        out.append(woke[0] - t0)
    return out


def assert_fast(latencies: list[float]) -> None:
    assert statistics.median(latencies) < 0.05, latencies
    assert max(latencies) < 0.2, latencies
