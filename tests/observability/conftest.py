"""Fixtures for the observability tests: an in-memory OpenTelemetry exporter (installed once
per session: the global tracer provider can be set only once), a worker node (with a
scheduler thread) running in this process, and the acceptance ``Fleet`` of real
processes."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rota import Rota
from rota.core.model import JobRecord
from rota.core.states import FINAL_STATES
from rota.scheduler import SchedulerConfig
from rota.worker.node import WorkerConfig, WorkerNode
from tests.acceptance.conftest import fleet, kind, url  # noqa: F401 - the same fixtures


@pytest.fixture(autouse=True)
def _no_ambient_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROTA_STORE", raising=False)
    monkeypatch.delenv("ROTA_TRACING", raising=False)


# ---- OpenTelemetry ---------------------------------------------------------------------------
_EXPORTER: Any = None


@pytest.fixture
def spans() -> Iterator[Any]:
    """The SDK's ``InMemorySpanExporter`` behind the global tracer provider, emptied."""
    global _EXPORTER
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    if _EXPORTER is None:
        _EXPORTER = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


# ---- a worker node in this process ---------------------------------------------------------
class NodeThread:
    """A :class:`WorkerNode` on an event loop of its own thread."""

    def __init__(self, app: Rota, config: WorkerConfig) -> None:
        self.node = WorkerNode(app, config)
        self.loop = asyncio.new_event_loop()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="test-node", daemon=True)

    def _main(self) -> None:
        try:
            self.loop.run_until_complete(self.node.run())
        except BaseException as exc:
            self.error = exc
        finally:
            self.loop.close()

    def start(self, timeout: float = 15.0) -> WorkerNode:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.node.node_id:
            if self.error is not None or not self.thread.is_alive():
                raise AssertionError(f"the worker node did not start: {self.error!r}")
            if time.monotonic() > deadline:
                raise AssertionError("the worker node did not register in time")
            time.sleep(0.01)
        return self.node

    def stop(self, timeout: float = 20.0) -> None:
        if self.thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already closed
                self.loop.call_soon_threadsafe(self.node.request_stop)
            self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker node did not stop"


@contextlib.contextmanager
def node_in_thread(app: Rota, **config: Any) -> Iterator[WorkerNode]:
    """A worker node (leading the scheduler role too) for ``app``, stopped at the end."""
    cfg = WorkerConfig(
        name=config.pop("name", f"t{uuid.uuid4().hex[:4]}"),
        concurrency=config.pop("concurrency", 4),
        processes=config.pop("processes", 2),
        heartbeat_interval=config.pop("heartbeat_interval", 0.2),
        lease_ttl=config.pop("lease_ttl", 3.0),
        shutdown_grace=config.pop("shutdown_grace", 2.0),
        scheduler=SchedulerConfig(failure_timeout=3.0, lease_ttl=3.0, idle_wait=0.02),
        **config,
    )
    runner = NodeThread(app, cfg)
    try:
        yield runner.start()
    finally:
        runner.stop()


def wait_final(app: Rota, ids: list[str], timeout: float = 20.0) -> dict[str, JobRecord]:
    deadline = time.monotonic() + timeout
    while True:
        records = {r.id: r for r in app.store.get_jobs(ids)}
        if len(records) == len(ids) and all(r.state in FINAL_STATES for r in records.values()):
            return records
        if time.monotonic() > deadline:
            states = {i: r.state.value for i, r in records.items()}
            raise AssertionError(f"jobs not final after {timeout} s: {states}")
        time.sleep(0.05)
