"""A worker node: registers its capacity, heartbeats, starts the jobs the scheduler assigned
to it, runs them (async tasks on the event loop, sync tasks in threads or a process pool),
and reports
their outcomes in batches, fenced by each job's token."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast

from rota.app import Isolation, Rota, Task
from rota.coord import open_coordinator
from rota.core.backoff import retry_delay
from rota.core.errors import CorruptPayload, RotaError
from rota.core.model import JobRecord, NodeSpec, NodeState
from rota.core.outcomes import ExecKind, ExecResult, Outcome, OutcomeKind, OutcomeLabel
from rota.core.payload import decode_arguments
from rota.core.resources import Resources
from rota.scheduler import Scheduler, SchedulerConfig
from rota.store import Store, open_store
from rota.store import fast_paths as fast
from rota.telemetry import tracing
from rota.telemetry.logs import job_context, job_log_fields
from rota.worker.pool import ProcessPool
from rota.worker.runner import run_async
from rota.worker.threads import ThreadRunner
from rota.workflow import with_parent_results

if TYPE_CHECKING:
    from rota.store.contract import AsyncClaims
    from rota.worker.metrics import LeaseLossReason, WorkerMetrics

log = logging.getLogger("rota.worker")
T = TypeVar("T")
GATHER = 0.002  # longest a finished job's outcome waits for others to share its round trip
P = ParamSpec("P")


@dataclass(slots=True)
class WorkerConfig:
    """How a worker node presents itself and behaves. Durations are seconds."""

    name: str = ""
    concurrency: int = 8  # slots: jobs running at once
    prefetch: int | None = (
        None  # extra jobs the scheduler may assign ahead (default concurrency // 2)
    )
    processes: int | None = None  # pool processes for process-isolated sync tasks
    isolation: Isolation = "thread"  # where sync tasks without their own choice run
    threads: int | None = None  # threads for thread-isolated sync tasks (default: concurrency)
    resources: Resources = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    queues: tuple[str, ...] = ("default",)
    heartbeat_interval: float = 1.0
    lease_ttl: float = 5.0  # how long a running job's lease lasts without a heartbeat
    shutdown_grace: float = 10.0
    cancel_grace: float = 5.0  # a cancelled sync job's time to stop before it is killed
    scheduler: SchedulerConfig | None = None  # also stand for the scheduler role
    metrics_port: int | None = None  # serve Prometheus metrics here (0: any free port)
    metrics_host: str = "127.0.0.1"
    coordinator: str | None = None  # who decides liveness/leadership (default: the app's)

    def spec(self, node_id: str) -> NodeSpec:
        prefetch = self.prefetch if self.prefetch is not None else max(1, self.concurrency // 2)
        return NodeSpec(
            id=node_id,
            name=self.name or socket.gethostname(),
            slots=self.concurrency,
            prefetch=prefetch,
            resources=dict(self.resources),
            labels=dict(self.labels),
            queues=tuple(self.queues),
            host=socket.gethostname(),
            pid=os.getpid(),
        )


@dataclass(slots=True)
class _Running:
    job: JobRecord
    task: asyncio.Task[None]
    abandoned: bool = False  # lease lost: its outcome is dropped, not reported


class WorkerNode:
    """One worker node process. ``run()`` until SIGTERM/SIGINT or ``request_stop()``."""

    def __init__(self, app: Rota, config: WorkerConfig | None = None) -> None:
        self.app = app
        self.config = config or WorkerConfig()
        self.node_id = ""
        self.running: dict[str, _Running] = {}
        self.outcomes: list[Outcome] = []
        self.stats = {"started": 0, "succeeded": 0, "failed": 0, "refused": 0}
        self._stopping = False
        self._io = ThreadPoolExecutor(1, thread_name_prefix="rota-io")
        self._waiter = ThreadPoolExecutor(1, thread_name_prefix="rota-wait")
        self._io_store: Store | None = None
        self._wait_store: Store | None = None
        self._claims: AsyncClaims | None = None  # the store's asyncio client, if it has one
        self._waiting: asyncio.Future[None] | None = None  # its wait for assignments
        self._reserved = 0  # slots that wait may fill (it starts jobs as it wakes up)
        self._pool: ProcessPool | None = None
        self._threads: ThreadRunner | None = None
        self._wake: asyncio.Event | None = None
        self._flush_needed: asyncio.Event | None = None
        self._scheduler: Scheduler | None = None
        self._scheduler_thread: threading.Thread | None = None
        self._claiming = False  # the claim loop runs (and reports outcomes itself)
        self._tracing = app.tracing  # OpenTelemetry spans (rota.telemetry.tracing)
        self.metrics: WorkerMetrics | None = None  # set by run() when metrics_port is set
        # Outcomes on their way to the store, by (job id, token): the job and its metric.
        self._reporting: dict[tuple[str, int], tuple[JobRecord, OutcomeLabel]] = {}
        # Proof of life: store heartbeats, or a ZooKeeper session (rota.coord).
        self.coordinator = self.config.coordinator or app.coordinator
        self.membership = open_coordinator(self.coordinator).membership()
        self._proven = True  # last answer of membership.can_take_work (logged on change)

    # ---- store access off the event loop ----------------------------------------------
    async def _call(
        self, fn: Callable[Concatenate[Store, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """Run the :class:`Store` method ``fn`` (``Store.start_jobs``) or the function of a
        store ``fn`` (``fast_paths.complete_and_start``) with ``args`` on the I/O thread,
        which owns this node's connection. A method is looked up on the store instance: the
        base-class function is the abstract one."""
        name = fn.__name__
        is_method = getattr(Store, name, None) is fn

        def run() -> T:
            if self._io_store is None:
                self._io_store = open_store(self.app.store_url)
            if not is_method:
                return fn(self._io_store, *args, **kw)
            method = cast("Callable[P, T]", getattr(self._io_store, name))
            return method(*args, **kw)

        return await asyncio.get_running_loop().run_in_executor(self._io, run)

    async def _retrying(
        self, what: str, fn: Callable[Concatenate[Store, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """``_call`` that waits out store outages with backoff (never a busy loop)."""
        delay = 0.1
        while True:
            try:
                return await self._call(fn, *args, **kw)
            except Exception as exc:
                log.warning("%s failed, retrying in %.1f s: %s", what, delay, exc)
                self._reset_io_store()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _reset_io_store(self) -> None:
        def reset() -> None:
            if self._io_store is not None:
                with contextlib.suppress(Exception):
                    self._io_store.close()
                self._io_store = None

        self._io.submit(reset)

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

    def _may_start(self) -> bool:
        """Whether this node can prove it is alive (else it starts no new job; running
        ones finish and report). Logged once per change."""
        proven = self.membership.can_take_work()
        if proven != self._proven:
            self._proven = proven
            if proven:
                log.warning("node %s: proof of life is back: taking new work", self.node_id)
            else:
                log.warning(
                    "node %s cannot prove it is alive (coordinator session %s): no new work; "
                    "%d running jobs go on and report",
                    self.node_id,
                    self.membership.session().get("state"),
                    len(self.running),
                )
        return proven

    async def _join(self, spec: NodeSpec) -> None:
        """Announce the node to the coordinator (before the store: see rota.coord)."""
        delay = 0.1
        loop = asyncio.get_running_loop()
        while True:
            try:
                return await loop.run_in_executor(None, self.membership.join, spec)
            except Exception as exc:
                log.warning("announcing the node failed, retrying in %.1f s: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _load(self) -> str:
        if self._stopping:
            return "draining"
        busy = len(self.running)
        return "idle" if busy == 0 else "full" if busy >= self.config.concurrency else "busy"

    async def _register(self) -> None:
        self.node_id = f"{self.config.name or socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        spec = self.config.spec(self.node_id)
        await self._join(spec)
        await self._retrying("registering", Store.register_node, spec)
        if self.metrics is not None:
            self.metrics.set_node(spec.id, spec.name)
        log.info(
            "node %s registered: %d slots (+%d prefetch), resources %s, labels %s, queues %s",
            spec.id,
            spec.slots,
            spec.prefetch,
            spec.resources or "{}",
            spec.labels or "{}",
            ",".join(spec.queues),
        )

    def _start_scheduler(self, config: SchedulerConfig) -> None:
        self._scheduler = Scheduler(
            self.app.store_url, config, f"{self.node_id}:scheduler", self.coordinator
        )
        self._scheduler_thread = threading.Thread(
            target=self._scheduler.run, name="rota-scheduler", daemon=True
        )
        self._scheduler_thread.start()

    # ---- claiming ----------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        """Start assigned jobs as slots free up. Every job that ends wakes this loop, which
        reports the outcomes gathered so far together with its next start (one store
        transaction where the store offers ``complete_and_start``)."""
        assert self._wake is not None and self._flush_needed is not None
        self._claiming = True
        try:
            await self._claim()
        finally:
            self._claiming = False
            self._flush_needed.set()  # whatever is left is the flush loop's now

    async def _claim(self) -> None:
        # Claims go through the store's asyncio client when it has one (Redis): no thread
        # hop, and the loop runs jobs while a claim is on its way.
        self._claims = await self._call(fast.async_claims)
        try:
            await self._claim_rounds()
        finally:
            if self._waiting is not None:  # it may have started jobs: let it hand them over
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._waiting, 5.0)
            if self._claims is not None:
                with contextlib.suppress(Exception):
                    await self._claims.close()
                self._claims = None

    async def _claim_call(
        self, what: str, fn: Callable[Concatenate[Store, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """``fn`` on the store's asyncio client if there is one, else (or when it gives up
        on an outage) on the I/O thread, retried until it succeeds."""
        if self._claims is not None:
            try:
                return cast(T, await getattr(self._claims, fn.__name__)(*args, **kw))
            except Exception as exc:
                log.warning("%s failed, retrying through the I/O thread: %s", what, exc)
        return await self._retrying(what, fn, *args, **kw)

    async def _wait_async(self, claims: AsyncClaims, node_id: str, limit: int) -> None:
        """Wait for assignments and start up to ``limit`` of them in the same round trip
        (those slots are reserved meanwhile); launch what was started."""
        jobs: list[JobRecord] = []
        try:
            jobs = await claims.wait_and_start(node_id, limit, self.config.lease_ttl, 0.5)
        except Exception as exc:
            log.warning("waiting for work failed: %s", exc)
            await asyncio.sleep(0.5)
        finally:
            self._reserved = 0
        for job in jobs:
            self._launch(job)

    async def _claim_rounds(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        cfg = self.config
        waiter: asyncio.Future[None] | None = None
        gathering: float | None = None  # when the first outcome of this batch came in
        while not self._stopping:
            self._wake.clear()
            free = cfg.concurrency - len(self.running) - self._reserved
            if not self._may_start():
                free = min(free, 0)
            if free <= 0 and not self.outcomes:
                await self._wake.wait()  # a slot frees up
                continue
            # Jobs ending one at a time (a process pool behind many slots) while plenty are
            # still queued here: let a few outcomes gather (at most GATHER seconds) so that
            # one round trip reports them and claims their successors together.
            if (
                self.outcomes
                and len(self.outcomes) < max(1, cfg.concurrency // 4)
                and len(self.running) > cfg.concurrency // 2
            ):
                now = loop.time()
                gathering = now if gathering is None else gathering
                if now - gathering < GATHER:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), gathering + GATHER - now)
                    continue
            gathering = None
            node_id = self.node_id
            free = max(free, 0)
            if self.outcomes:
                batch, self.outcomes = self.outcomes, []
                accepted, jobs = await self._claim_call(
                    "reporting outcomes and starting jobs",
                    fast.complete_and_start,
                    batch,
                    node_id,
                    free,
                    cfg.lease_ttl,
                )
                self._count_refused(batch, accepted)
            else:
                jobs = await self._claim_call(
                    "starting jobs", Store.start_jobs, node_id, free, cfg.lease_ttl
                )
            for job in jobs:
                self._launch(job)
            if jobs:
                continue
            # Nothing assigned: block in the store until the scheduler gives us work.
            if waiter is None or waiter.done():
                if self._claims is not None:
                    self._reserved = free
                    waiter = self._waiting = asyncio.ensure_future(
                        self._wait_async(self._claims, node_id, free)
                    )
                else:
                    waiter = loop.run_in_executor(self._waiter, self._wait_for_work, node_id)
            wake: asyncio.Future[bool] = asyncio.ensure_future(self._wake.wait())
            started = time.monotonic()
            await asyncio.wait((waiter, wake), return_when=asyncio.FIRST_COMPLETED)
            wake.cancel()
            if time.monotonic() - started < 0.0005 and not self._wake.is_set():
                await asyncio.sleep(0.005)  # e.g. our node was declared dead: no hot loop

    def _wait_for_work(self, node_id: str) -> None:
        try:
            if self._wait_store is None:
                self._wait_store = open_store(self.app.store_url)
            self._wait_store.wait_for_assignments(node_id, 0.5)
        except Exception as exc:
            log.warning("waiting for work failed: %s", exc)
            if self._wait_store is not None:
                with contextlib.suppress(Exception):
                    self._wait_store.close()
            self._wait_store = None
            time.sleep(0.5)

    def _launch(self, job: JobRecord) -> None:
        self.stats["started"] += 1
        if self.metrics is not None:
            self.metrics.job_started(job.task, job.queue)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("job %s started", job.id, extra=job_log_fields(job, self.node_id))
        task = asyncio.create_task(self._execute(job), name=f"job-{job.id}")
        self.running[job.id] = _Running(job, task)

    async def _execute(self, job: JobRecord) -> None:
        started = time.monotonic()
        if self._tracing:
            result = await tracing.traced_run(self._attempt, job, self.node_id)
        else:
            result = await self._attempt(job)
        entry = self.running.pop(job.id, None)
        if entry is not None and not entry.abandoned:
            if self.metrics is not None:
                self.metrics.job_ran(job.task, job.queue, time.monotonic() - started)
            # Queue the outcome before waking the claim loop: the flush then reaches the
            # I/O thread ahead of the next start, and the scheduler sees the room sooner.
            self._record(job, result)
        if self._wake is not None:
            self._wake.set()

    async def _attempt(self, job: JobRecord) -> ExecResult:
        """Run one attempt of ``job``; whatever is logged meanwhile in its context (the
        task's own lines too) carries the job's fields (``rota.telemetry.logs.job_context``)."""
        fields = job_log_fields(job, self.node_id)
        with job_context(fields):
            try:
                return await self._run_job(job, fields)
            except asyncio.CancelledError:
                return ExecResult(ExecKind.CANCELLED, error="cancelled")
            except Exception as exc:  # never let a job take the node down
                log.exception("job %s: internal error", job.id, extra=fields)
                return ExecResult(ExecKind.ERROR, error=f"internal error: {exc!r}")

    async def _run_job(self, job: JobRecord, fields: dict[str, Any]) -> ExecResult:
        task = self.app.tasks.get(job.task)
        if task is None:
            return ExecResult(
                ExecKind.ERROR, error=f"task {job.task!r} is not registered on node {self.node_id}"
            )
        payload = job.payload
        try:
            if job.pass_results and job.depends_on:  # a workflow step: parents' results first
                parents = await self._call(Store.get_jobs, list(job.depends_on))
                payload = with_parent_results(payload, job.depends_on, parents)
            if task.is_async:
                args, kwargs = decode_arguments(payload)
                return await run_async(task, args, kwargs, job.timeout)
        except CorruptPayload as exc:
            return ExecResult(ExecKind.ERROR, error=f"corrupt payload: {exc}", fatal=True)
        if self._tracing:  # the task's own spans (thread or pool process) nest under rota.run
            payload = tracing.with_current_context(payload)
        runner = self._pool if self._isolation(task) == "process" else self._threads
        assert runner is not None
        return await runner.run(job.id, job.task, payload, job.timeout, fields)

    def _isolation(self, task: Task[Any, Any]) -> Isolation:
        return task.isolation or self.config.isolation

    def _record(self, job: JobRecord, res: ExecResult) -> None:
        kind = res.outcome_kind()
        if kind is OutcomeKind.SUCCEEDED:
            outcome = Outcome(job.id, job.token, kind, result=res.result)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("job %s succeeded", job.id, extra=job_log_fields(job, self.node_id))
        elif kind is OutcomeKind.CANCELLED:
            outcome = Outcome(
                job.id, job.token, kind, error=res.error or "cancelled", cut_short=res.cut_short()
            )
            log.info("job %s cancelled", job.id, extra=job_log_fields(job, self.node_id))
        else:
            if res.kind is ExecKind.RETRY and res.retry_delay is not None:
                delay = res.retry_delay
            else:
                delay = retry_delay(max(job.attempts, 1), job.backoff_base, job.backoff_max)
            outcome = Outcome(
                job.id,
                job.token,
                kind,
                error=res.error,
                traceback=res.traceback,
                retry_delay=delay,
                cut_short=res.cut_short(),
            )
            last = kind is OutcomeKind.FATAL or job.attempts >= job.max_attempts
            log.info(
                "job %s attempt %d/%d failed (%s): %s; %s",
                job.id,
                job.attempts,
                job.max_attempts,
                res.kind,
                res.error,
                "no attempt left" if last else f"next attempt in {delay:.3g} s",
                extra=job_log_fields(job, self.node_id),
            )
        label = OutcomeLabel.of(res, attempts_left=job.attempts < job.max_attempts)
        self._reporting[(job.id, job.token)] = (job, label)
        self.outcomes.append(outcome)
        if self._flush_needed is not None:
            self._flush_needed.set()

    # ---- reporting -------------------------------------------------------------------
    async def _flush_loop(self) -> None:
        """Report outcomes while the claim loop does not (it reports them with its starts
        while it runs: every job that ends wakes it)."""
        assert self._flush_needed is not None
        while True:
            await self._flush_needed.wait()
            self._flush_needed.clear()
            if not self._claiming:
                await self._flush()

    async def _flush(self) -> None:
        """Send every outcome gathered so far in one store round trip."""
        while self.outcomes:
            batch, self.outcomes = self.outcomes, []
            accepted = await self._retrying("reporting outcomes", Store.complete, batch)
            self._count_refused(batch, accepted)

    def _count_refused(self, batch: list[Outcome], accepted: list[bool]) -> None:
        """Count each reported outcome once the store answered: accepted ones (a retried
        report of one that had committed is accepted too) as succeeded / failed, refused
        ones as lease losses."""
        metrics = self.metrics
        for outcome, ok in zip(batch, accepted, strict=True):
            reported = self._reporting.pop((outcome.job_id, outcome.token), None)
            if ok:
                if outcome.kind is OutcomeKind.SUCCEEDED:
                    self.stats["succeeded"] += 1
                elif outcome.kind is not OutcomeKind.CANCELLED:
                    self.stats["failed"] += 1
                if metrics is not None and reported is not None:
                    job, label = reported
                    metrics.job_ended(job.task, job.queue, label)
                continue
            self.stats["refused"] += 1
            log.warning(
                "job %s: outcome %s refused: lease lost (token %d is no longer current)",
                outcome.job_id,
                outcome.kind.value,
                outcome.token,
                extra=job_log_fields(reported[0], self.node_id)
                if reported is not None
                else {"job": outcome.job_id, "node": self.node_id},
            )
            if metrics is not None and reported is not None:
                metrics.lease_lost(reported[0].task, reported[0].queue, "refused")

    async def _heartbeat_loop(self) -> None:
        cfg = self.config
        while True:
            await asyncio.sleep(cfg.heartbeat_interval)
            with contextlib.suppress(Exception):  # re-announce after a new session, load
                await asyncio.get_running_loop().run_in_executor(
                    None, self.membership.refresh, self._load()
                )
            held = [(r.job.id, r.job.token) for r in self.running.values() if not r.abandoned]
            node_id = self.node_id
            try:
                reply = await self._call(Store.heartbeat, node_id, held, cfg.lease_ttl)
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)
                self._reset_io_store()
                continue
            if not reply.alive:
                log.error(
                    "node %s was declared dead (missed heartbeats); abandoning %d running jobs "
                    "and registering again",
                    node_id,
                    len(self.running),
                )
                for job_id in list(self.running):
                    self._lease_lost(job_id, "node_dead")
                    await self._abandon(job_id)
                await self._register()
                continue
            for job_id in reply.lost:
                self._lease_lost(job_id, "heartbeat")
                await self._abandon(job_id)
            for job_id in reply.cancel:
                await self._cancel(job_id)

    def _lease_lost(self, job_id: str, reason: LeaseLossReason) -> None:
        entry = self.running.get(job_id)
        if entry is None or entry.abandoned:
            return
        job = entry.job
        if reason == "heartbeat":
            log.warning(
                "job %s: lease lost; stopping it", job_id, extra=job_log_fields(job, self.node_id)
            )
        if self.metrics is not None:
            self.metrics.lease_lost(job.task, job.queue, reason)

    async def _abandon(self, job_id: str) -> None:
        entry = self.running.get(job_id)
        if entry is None:
            return
        entry.abandoned = True
        await self._stop_job(entry)

    async def _cancel(self, job_id: str) -> None:
        entry = self.running.get(job_id)
        if entry is not None:
            log.info(
                "job %s: cancel requested", job_id, extra=job_log_fields(entry.job, self.node_id)
            )
            await self._stop_job(entry)

    async def _stop_job(self, entry: _Running) -> None:
        task = self.app.tasks.get(entry.job.task)
        runner = None
        if task is not None and not task.is_async:
            runner = self._pool if self._isolation(task) == "process" else self._threads
        if runner is not None:
            await runner.cancel(entry.job.id, grace=self.config.cancel_grace)
        else:
            entry.task.cancel()

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
