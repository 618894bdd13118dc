"""A worker node's outcomes: recording how each attempt ended, reporting them to the store in
batches, and counting them (stats, metrics) once the store accepted or refused them."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from rota.core.backoff import retry_delay
from rota.core.model import JobRecord
from rota.core.outcomes import ExecKind, ExecResult, Outcome, OutcomeKind, OutcomeLabel
from rota.store import Store
from rota.telemetry.logs import job_log_fields
from rota.worker.store_calls import StoreCalls

if TYPE_CHECKING:
    from rota.worker.metrics import WorkerMetrics

log = logging.getLogger("rota.worker")


class Reporting(StoreCalls):
    """Mixin of :class:`rota.worker.node.WorkerNode`: its outcomes, recorded and reported."""

    # Set by WorkerNode.__init__ (run() sets metrics and the event).
    node_id: str
    outcomes: list[Outcome]  # recorded, not yet sent
    stats: dict[str, int]
    metrics: WorkerMetrics | None
    # Outcomes on their way to the store, by (job id, token): the job and its metric.
    _reporting: dict[tuple[str, int], tuple[JobRecord, OutcomeLabel]]
    _flush_needed: asyncio.Event | None
    _claiming: bool  # the claim loop runs (and reports outcomes itself)

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
