"""A worker node's claim loop: starting the jobs the scheduler assigned to it as slots free up,
reporting the outcomes gathered so far in the same round trip, and waiting in the store (or on
its asyncio client) while nothing is assigned."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar, cast

from rota.core.model import JobRecord
from rota.store import Store, open_store
from rota.store import fast_paths as fast
from rota.worker.liveness import Liveness

if TYPE_CHECKING:
    from rota.store.contract import AsyncClaims

log = logging.getLogger("rota.worker")
T = TypeVar("T")
GATHER = 0.002  # longest a finished job's outcome waits for others to share its round trip
P = ParamSpec("P")


class Claims(Liveness):
    """Mixin of :class:`rota.worker.node.WorkerNode`: its claim loop."""

    # Set by WorkerNode.__init__.
    _waiter: ThreadPoolExecutor  # the thread that blocks in wait_for_assignments
    _wait_store: Store | None  # its connection
    _claims: AsyncClaims | None  # the store's asyncio client, if it has one
    _waiting: asyncio.Future[None] | None  # its wait for assignments
    _reserved: int  # slots that wait may fill (it starts jobs as it wakes up)

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
