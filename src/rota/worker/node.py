"""A worker node: registers its capacity, heartbeats, starts the jobs the scheduler assigned
to it, runs them (async tasks on the event loop, sync tasks in threads or a process pool),
and reports their outcomes in batches, fenced by each job's token.

This module keeps the node's lifecycle and wiring; each part of its work is a mixin of one
module, each built on the one before: ``store_calls`` (store access off the event loop, with
retries) < ``reporting`` (outcomes: recorded, reported in batches, counted) < ``execution``
(launching, running and stopping jobs) < ``liveness`` (coordinator membership, registration,
heartbeats, lease loss) < ``claims`` (the claim loop)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from rota.app import Rota
from rota.coord import open_coordinator
from rota.core.errors import RotaError
from rota.core.model import NodeState
from rota.core.outcomes import OutcomeLabel
from rota.scheduler import Scheduler, SchedulerConfig
from rota.store import Store
from rota.telemetry.logs import job_log_fields
from rota.worker.claims import Claims
from rota.worker.config import WorkerConfig
from rota.worker.pool import ProcessPool
from rota.worker.threads import ThreadRunner

__all__ = ["WorkerConfig", "WorkerNode", "run_worker"]

log = logging.getLogger("rota.worker")


class WorkerNode(Claims):
    """One worker node process. ``run()`` until SIGTERM/SIGINT or ``request_stop()``."""

    def __init__(self, app: Rota, config: WorkerConfig | None = None) -> None:
        # The state every part works on (each mixin declares what it uses, with its type).
        self.app = app
        self.config = config or WorkerConfig()
        self.node_id = ""
        self.running = {}
        self.outcomes = []
        self.stats = {"started": 0, "succeeded": 0, "failed": 0, "refused": 0}
        self._stopping = False
        self._io = ThreadPoolExecutor(1, thread_name_prefix="rota-io")
        self._waiter = ThreadPoolExecutor(1, thread_name_prefix="rota-wait")
        self._io_store = None
        self._wait_store = None
        self._claims = None
        self._waiting = None
        self._reserved = 0
        self._pool = None
        self._threads = None
        self._wake = None
        self._flush_needed = None
        self._scheduler: Scheduler | None = None
        self._scheduler_thread: threading.Thread | None = None
        self._claiming = False
        self._tracing = app.tracing
        self.metrics = None  # set by run() when metrics_port is set
        self._reporting = {}
        self.coordinator = self.config.coordinator or app.coordinator
        self.membership = open_coordinator(self.coordinator).membership()
        self._proven = True

    # ---- lifecycle -------------------------------------------------------------------
    def request_stop(self) -> None:
        """Drain and stop (what SIGTERM does)."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._flush_needed = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)
        if self.config.metrics_port is not None:
            self._start_metrics(self.config.metrics_port, self.config.metrics_host)
        sync = [t for t in self.app.tasks.values() if not t.is_async]
        if any(self._isolation(t) == "process" for t in sync):
            size = self.config.processes or self.config.concurrency
            fd = self.metrics.fileno() if self.metrics is not None else None
            self._pool = ProcessPool(self.app, size, close_fds=() if fd is None else (fd,))
            await self._pool.start()
        if any(self._isolation(t) == "thread" for t in sync):
            self._threads = ThreadRunner(self.app, self.config.threads or self.config.concurrency)
            await self._threads.start()
        self.membership.on_change(lambda: self._wake_threadsafe(loop))
        await self._register()
        if self.config.scheduler is not None:
            self._start_scheduler(self.config.scheduler)
        helpers = [
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._flush_loop(), name="flush"),
        ]
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            for h in helpers:
                h.cancel()
            for h in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await h
            await self._flush()
            await self._retrying("leaving", Store.set_node_state, self.node_id, NodeState.STOPPED)
            await loop.run_in_executor(None, self.membership.close)
            log.info(
                "node %s stopped: %d started, %d succeeded, %d failed, %d completions refused",
                self.node_id,
                self.stats["started"],
                self.stats["succeeded"],
                self.stats["failed"],
                self.stats["refused"],
            )
            if self._scheduler is not None and self._scheduler_thread is not None:
                self._scheduler.stop.set()
                await loop.run_in_executor(None, self._scheduler_thread.join, 10)
            if self._pool is not None:
                await self._pool.close(0)
            if self._threads is not None:
                await self._threads.close(0)
            await self._call(Store.close)
            if self.metrics is not None:
                await loop.run_in_executor(None, self.metrics.close)
            self._io.shutdown(wait=False)
            self._waiter.shutdown(wait=False, cancel_futures=True)

    def _start_metrics(self, port: int, host: str) -> None:
        try:
            from rota.worker.metrics import WorkerMetrics
        except ImportError as exc:
            raise RotaError(
                f"worker metrics need prometheus-client: pip install rota[metrics] ({exc})"
            ) from None
        metrics = WorkerMetrics()
        metrics.track_in_flight(lambda: len(self.running))
        try:
            bound = metrics.serve(port, host)
        except OSError as exc:
            raise RotaError(f"cannot serve worker metrics on {host}:{port}: {exc}") from None
        self.metrics = metrics
        log.info("serving Prometheus metrics on http://%s:%d/metrics", host, bound)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stopping:
            log.warning("second %s: stopping now", sig.name)
            self.config.shutdown_grace = 0
        else:
            log.info("%s: draining (grace %.1f s)", sig.name, self.config.shutdown_grace)
        self.request_stop()

    def _wake_threadsafe(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(self._wake.set)

    def _start_scheduler(self, config: SchedulerConfig) -> None:
        self._scheduler = Scheduler(
            self.app.store_url, config, f"{self.node_id}:scheduler", self.coordinator
        )
        self._scheduler_thread = threading.Thread(
            target=self._scheduler.run, name="rota-scheduler", daemon=True
        )
        self._scheduler_thread.start()

    async def _drain(self) -> None:
        """Graceful stop: take no new work, let running jobs finish within the grace period,
        then hand the rest back (their attempt is not counted)."""
        await self._retrying("draining", Store.set_node_state, self.node_id, NodeState.DRAINING)
        deadline = time.monotonic() + self.config.shutdown_grace
        while self.running and time.monotonic() < deadline:
            await asyncio.wait(
                [r.task for r in self.running.values()],
                timeout=max(0.0, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        left = list(self.running.values())
        if left:
            log.warning("grace period over: handing %d running jobs back", len(left))
            for entry in left:
                log.info(
                    "job %s: handed back unfinished (grace period over)",
                    entry.job.id,
                    extra=job_log_fields(entry.job, self.node_id),
                )
                if self.metrics is not None:
                    self.metrics.job_ended(entry.job.task, entry.job.queue, OutcomeLabel.RELEASED)
                await self._abandon(entry.job.id)
            handed = [(e.job.id, e.job.token) for e in left]
            node_id = self.node_id
            await self._flush()
            await self._retrying("handing jobs back", Store.release_jobs, node_id, handed)


def run_worker(app: Rota, config: WorkerConfig) -> None:
    """Run a worker node in this process until it is told to stop."""
    asyncio.run(WorkerNode(app, config).run())
