"""A worker node's running jobs: launching each as an asyncio task, running it (async tasks
on the event loop, sync tasks in threads or the process pool), recording how it ended, and
stopping it early (cancel, lease lost)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from rota.app import Isolation, Task
from rota.core.errors import CorruptPayload
from rota.core.model import JobRecord
from rota.core.outcomes import ExecKind, ExecResult
from rota.core.payload import decode_arguments
from rota.store import Store
from rota.telemetry import tracing
from rota.telemetry.logs import job_context, job_log_fields
from rota.worker.config import WorkerConfig
from rota.worker.pool import ProcessPool
from rota.worker.reporting import Reporting
from rota.worker.runner import run_async
from rota.worker.threads import ThreadRunner
from rota.workflow import with_parent_results

log = logging.getLogger("rota.worker")


@dataclass(slots=True)
class RunningJob:
    job: JobRecord
    task: asyncio.Task[None]
    abandoned: bool = False  # lease lost: its outcome is dropped, not reported


class Execution(Reporting):
    """Mixin of :class:`rota.worker.node.WorkerNode`: the jobs it runs."""

    # Set by WorkerNode.__init__ (run() sets the runners and the event).
    config: WorkerConfig
    running: dict[str, RunningJob]
    _tracing: bool  # OpenTelemetry spans (rota.telemetry.tracing)
    _pool: ProcessPool | None
    _threads: ThreadRunner | None
    _wake: asyncio.Event | None  # wakes the claim loop

    def _launch(self, job: JobRecord) -> None:
        self.stats["started"] += 1
        if self.metrics is not None:
            self.metrics.job_started(job.task, job.queue)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("job %s started", job.id, extra=job_log_fields(job, self.node_id))
        task = asyncio.create_task(self._execute(job), name=f"job-{job.id}")
        self.running[job.id] = RunningJob(job, task)

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

    async def _stop_job(self, entry: RunningJob) -> None:
        task = self.app.tasks.get(entry.job.task)
        runner = None
        if task is not None and not task.is_async:
            runner = self._pool if self._isolation(task) == "process" else self._threads
        if runner is not None:
            await runner.cancel(entry.job.id, grace=self.config.cancel_grace)
        else:
            entry.task.cancel()
