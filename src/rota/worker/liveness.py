"""A worker node's proof of life: coordinator membership, registering with the store,
heartbeats that keep its jobs' leases, and what it does when a lease (or the node) is lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
from typing import TYPE_CHECKING

from rota.coord.base import Membership
from rota.core.model import NodeSpec
from rota.store import Store
from rota.telemetry.logs import job_log_fields
from rota.worker.execution import Execution

if TYPE_CHECKING:
    from rota.worker.metrics import LeaseLossReason

log = logging.getLogger("rota.worker")


class Liveness(Execution):
    """Mixin of :class:`rota.worker.node.WorkerNode`: membership, registration, heartbeats."""

    # Set by WorkerNode.__init__.
    membership: Membership  # store heartbeats, or a ZooKeeper session (rota.coord)
    _proven: bool  # last answer of membership.can_take_work (logged on change)
    _stopping: bool

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
