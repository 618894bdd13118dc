"""The scheduler: holds the leader lease, promotes due jobs, reaps dead nodes and places
pending jobs onto live nodes. Any number may run; one leads, the others stand by."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from rota.coord import Leadership, open_coordinator, resolve_coordinator
from rota.core.errors import LeaseLost, StoreError
from rota.core.model import (
    Assignment,
    Lease,
    NodeRecord,
    PendingJob,
    PlacementSnapshot,
    RunningJob,
)
from rota.scheduler.config import STATS_NAME, SchedulerConfig
from rota.scheduler.fairshare import SHARES_NAME, Share, shares_from_doc
from rota.scheduler.limits import RateGate, admit, fair_order, record_placed
from rota.scheduler.periodic import PeriodicRunner
from rota.scheduler.placement import Placement, get_policy, place, placeable
from rota.scheduler.policy import AllocationConfig, AllocationState, allocate, tenant_of
from rota.scheduler.preemption import Preemption
from rota.scheduler.reservations import grants, reserve
from rota.store import Store, open_store
from rota.store import fast_paths as fast

log = logging.getLogger("rota.scheduler")
RATES_NAME = "rate_limits"  # the rate-limit state, handed from leader to leader
RATE_CYCLE = 0.02  # longest idle wait while jobs are held by a rate limit
AGING_MEMORY = 60.0  # seconds the leader keeps the aging window after it last saw aging
REASONS_KEPT = 100  # per-job wait reasons published (rota job <id>)
PROBE_EVERY = 10.0  # seconds between census cycles that read the whole allocation window
# Seconds the leader keeps looking for preemptions (once a stats cycle, reading the
# running jobs) after it last saw a preemptible job, pending or running.
PREEMPTIBLE_MEMORY = 600.0
CLOCK_EVERY = 10.0  # the store's clock is read again after this long (placeable nodes)
REAP_DUE_EVERY = 0.02  # shortest time between reaps while a node is past the timeout


@dataclass(slots=True)
class _Window:
    """Placement decisions over the last few seconds, for a rate."""

    span: float = 10.0
    events: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, now: float, count: int) -> None:
        self.events.append((now, count))
        while self.events and self.events[0][0] < now - self.span:
            self.events.popleft()

    def rate(self, now: float) -> float:
        while self.events and self.events[0][0] < now - self.span:
            self.events.popleft()
        return sum(c for _, c in self.events) / self.span


class Scheduler:
    """One scheduler process (or thread). ``run()`` blocks until ``stop`` is set."""

    def __init__(
        self,
        store_url: str,
        config: SchedulerConfig | None = None,
        holder: str | None = None,
        coordinator: str | None = None,
    ) -> None:
        self.config = config or SchedulerConfig()
        self.policy = get_policy(self.config.policy)
        self.store_url = store_url
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # Who leads and who is alive: the store's leases, or ZooKeeper (rota.coord).
        self.coordinator = resolve_coordinator(coordinator)
        self.leadership: Leadership = open_coordinator(self.coordinator).leadership(self.holder)
        self.stop = threading.Event()
        self.lease: Lease | None = None
        self.placed_total = 0
        self.cycles = 0
        self.unplaceable: Counter[str] = Counter()
        self.waiting = 0
        # Cumulative across leaders: a new leader carries on from the published stats.
        self.totals: Counter[str] = Counter(
            {
                "leader_changes": 0,
                "nodes_reaped": 0,
                "lease_expiries": 0,
                "jobs_requeued": 0,
                "preemptions": 0,  # jobs preempted (sent back to pending)
                "preempted_work_s": 0,  # run time those jobs lost, seconds
            }
        )
        self._window = _Window()
        self._renewed = 0.0
        self._reaped = 0.0
        self._pruned = 0.0
        self._published = 0.0
        self._census = 0.0
        self._clock: tuple[float, float] | None = None  # (read at, store clock - monotonic)
        self._resolved = 0.0
        self._rate_held = False
        self._placed_all = False
        # The claim grant last published, and under which lease token.
        self._granted: tuple[int, dict[str, tuple[str, ...]]] | None = None
        # A snapshot taken by the store as the last wait woke up (and under which lease).
        self._woken: tuple[int, PlacementSnapshot] | None = None
        self.held: Counter[str] = Counter()  # jobs held back by concurrency or rate limits
        self.rates = RateGate()
        self._rates_saved: dict[str, float] = {}
        self.periodic = PeriodicRunner()
        self.allocation = AllocationState()  # preemptions in flight, per-minute cap
        # The allocation policies live now (config + the shares published in the store;
        # backfill and gangs are not carried out by the leader yet).
        self.alloc_config = self._live_allocation({})
        self._alloc_read = 0.0  # when the shares were last read
        self._aging_at = -AGING_MEMORY  # monotonic time a pending job with aging was seen
        self._preemptible_at = -PREEMPTIBLE_MEMORY  # ... a preemptible job was seen
        self._probed = -PROBE_EVERY  # last census that read the whole window
        self._running: list[RunningJob] | None = None  # this cycle's, read once when needed
        self.tenants: dict[str, dict[str, Any]] = {}
        self.reasons: dict[str, str] = {}

    # ---- loop ------------------------------------------------------------------------
    def run(self) -> None:
        """Lead or stand by until ``self.stop`` is set; reconnects after store errors."""
        store: Store | None = None
        backoff = 0.1
        while not self.stop.is_set():
            try:
                if store is None:
                    store = open_store(self.store_url)
                self.cycle(store)
                backoff = 0.1
            except StoreError as exc:
                log.warning("store error, retrying in %.1f s: %s", backoff, exc)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:  # a bad row must not kill the loop (stores raise StoreError)
                log.exception("scheduler cycle failed, retrying in %.1f s", backoff)
                if store is not None:
                    with contextlib.suppress(Exception):
                        store.close()
                    store = None
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        if store is not None:
            if self.lease is not None:
                with contextlib.suppress(Exception):
                    self.leadership.release(store, self.lease)
                    log.info("gave up leadership (token %d)", self.lease.token)
            store.close()
        self.leadership.close()

    def cycle(self, store: Store) -> None:
        """One pass: keep or take the lease; if leading, promote, reap, place, publish."""
        cfg = self.config
        mono = time.monotonic()
        if self.lease is not None and not self.leadership.holds(self.lease):
            log.warning("lost leadership (token %d): coordinator session", self.lease.token)
            self.lease = None  # no placements until elected again
        if self.lease is None or mono - self._renewed >= cfg.lease_ttl / 3:
            lease = self.leadership.lead(store, cfg.lease_ttl)
            if lease is None:
                if self.lease is not None:
                    log.warning("lost leadership (token %d)", self.lease.token)
                self.lease = None
                self.stop.wait(min(cfg.lease_ttl / 4, 0.5))
                return
            if self.lease is None or lease.token != self.lease.token:
                log.info("became leader (token %d, holder %s)", lease.token, self.holder)
                prior = store.get_stats(STATS_NAME) or {}
                for key in self.totals:
                    self.totals[key] = max(self.totals[key], int(prior.get(key) or 0))
                self.totals["leader_changes"] += 1
                self._take_over(store)
            self.lease = lease
            self._renewed = mono
        lease = self.lease
        try:
            # Place first (what is pending now), then reap: a cycle woken by a submit or a
            # finished job answers it before the periodic bookkeeping.
            if mono - self._alloc_read >= cfg.stats_every:
                self._refresh_allocation(store)
                self._alloc_read = mono
            census = self._census_due()
            woken, self._woken = self._woken, None
            if woken is not None and woken[0] == lease.token and not census:
                snapshot = woken[1]
            else:
                # A census reads a full page even with no room: cfg.page, not max_page.
                most = cfg.page if census else max(cfg.page, cfg.max_page)
                snapshot = fast.placement_snapshot(store, lease, 10000, most, cfg.min_page, census)
            nodes = snapshot.nodes
            self._grant(store, lease, nodes)
            # No new job (nor reserved slot) for a node about to be declared dead.
            store_now = self._store_now(store)
            nodes_due = any(n.heartbeat_at + cfg.failure_timeout <= store_now for n in nodes)
            nodes = placeable(nodes, store_now, cfg.failure_timeout)
            placed = self.place_pending(
                store, lease, nodes, snapshot.pending, snapshot.page_size, census
            )
            did = snapshot.promoted + placed
            if mono - self._resolved >= cfg.resolve_every:
                moved = store.resolve_dependencies(lease, cfg.page)
                # Moved jobs may have children of their own: look again at once.
                self._resolved = 0.0 if moved else mono
                did += moved
            did += self.periodic.run_due(store, lease, cfg)
            # Every reap_every, and as soon as a live node of the snapshot is past the
            # failure timeout (not up to reap_every later): its jobs go elsewhere sooner.
            since = mono - self._reaped
            if since >= cfg.reap_every or (nodes_due and since >= REAP_DUE_EVERY):
                gone = self.leadership.gone(store)  # coordinator sessions that ended
                if gone:
                    log.warning("nodes dead (coordinator session ended): %s", ", ".join(gone))
                    report = store.reap_nodes(lease, gone, cfg.failure_timeout)
                else:
                    report = store.reap(lease, cfg.failure_timeout)
                self._reaped = mono
                self.totals["nodes_reaped"] += len(report.dead_nodes)
                self.totals["lease_expiries"] += report.retried + report.dead_jobs
                self.totals["jobs_requeued"] += report.requeued
                if report.dead_nodes:
                    log.warning(
                        "nodes dead (missed heartbeats for %.1f s): %s; requeued %d assigned, "
                        "retried %d running, %d out of attempts",
                        cfg.failure_timeout,
                        ", ".join(report.dead_nodes),
                        report.requeued,
                        report.retried,
                        report.dead_jobs,
                    )
                did += report.requeued + report.retried
            if mono - self._pruned >= cfg.prune_every:
                pruned = store.prune(cfg.retention)
                self._pruned = mono
                if pruned:
                    log.info("pruned %d finished jobs older than %.0f s", pruned, cfg.retention)
            if mono - self._published >= cfg.stats_every:
                store.put_stats(STATS_NAME, self.stats())
                self._save_rates(store)
                self._published = mono
        except LeaseLost:
            log.warning("lost leadership (token %d): fenced out", lease.token)
            self.lease = None
            return
        self.cycles += 1
        # Having placed every pending job is no reason to look again at once: whatever
        # arrives next wakes the wait below.
        if not did or (did == placed and self._placed_all):
            wait = min(
                cfg.idle_wait, max(0.0, cfg.lease_ttl / 3 - (time.monotonic() - self._renewed))
            )
            if self._rate_held:  # rate-limited jobs wait: cycle often enough to meet the rate
                wait = min(wait, RATE_CYCLE)
                self._rate_held = False
            # Nothing left pending: reserve free slots for plain jobs in the store.
            slots = None
            if (
                self._placed_all
                and cfg.reserve_slots > 0
                and not self._allocating()
                and fast.reserves_slots(store)
            ):
                slots = reserve(nodes, self.policy, cfg.reserve_slots)
            # The store may take the next cycle's snapshot as it wakes (one round trip less).
            taken = fast.wait_for_pending_snapshot(
                store, wait, lease, 10000, max(cfg.page, cfg.max_page), cfg.min_page, reserve=slots
            )
            self._woken = None if taken is None else (lease.token, taken)

    # ---- placement ----------------------------------------------------------------------
    def _store_now(self, store: Store) -> float:
        """The store's clock (heartbeats are stamped by it), from its offset to this
        process's monotonic clock, read again every ``CLOCK_EVERY`` s (one round trip)."""
        mono = time.monotonic()
        if self._clock is None or mono - self._clock[0] >= CLOCK_EVERY:
            self._clock = (mono, store.now() - time.monotonic())
        return time.monotonic() + self._clock[1]

    def _grant(self, store: Store, lease: Lease, nodes: list[NodeRecord]) -> None:
        """Publish the claim grant when the live nodes or their queues change (and at the
        start of a leadership: a grant is current only under its own lease token)."""
        if not self.config.claim_grants or not fast.grants_claims(store):
            return
        # Fair share, aging and backfill decide between plain jobs too (shares, caps, aged
        # priority, reserved room): under them every job waits for a placement cycle (an
        # empty grant).
        grant = {} if self._allocating() or self.config.allocation.backfill else grants(nodes)
        if self._granted != (lease.token, grant):
            fast.grant_claims(store, lease, grant)
            self._granted = (lease.token, grant)

    def _census_due(self) -> bool:
        mono = time.monotonic()
        if mono - self._census >= self.config.stats_every:
            self._census = mono
            return True
        return False

    def place_pending(
        self,
        store: Store,
        lease: Lease,
        nodes: list[NodeRecord],
        first: list[PendingJob],
        first_size: int,
        census: bool,
    ) -> int:
        """Place as many pending jobs as fit, page by page; returns how many were placed.

        Pages start at the free capacity (at least ``min_page``, at most ``max_page``) and
        double up to ``page`` (or the free capacity left, up to ``max_page``) while jobs do
        not fit, so a cycle that can place a few jobs reads a few rows, not a thousand, and
        one with room for many reads them in one page.
        Once per ``stats_every`` a census cycle also reads a full page when there is no
        room, to count the jobs that wait for room and those no node could ever run; the
        ``waiting``/``unplaceable`` statistics come from census cycles only.
        """
        cfg = self.config
        pending: list[PendingJob] | None = first
        free = sum(max(0, n.spec.slots + n.spec.prefetch - n.in_flight) for n in nodes)
        unplaceable: Counter[str] = Counter()
        waiting = 0
        placed = 0
        after: tuple[int, int] | None = None
        scanned = 0
        size = min(max(cfg.page, cfg.max_page), max(cfg.min_page, free))
        by_node = {n.id: n for n in nodes}
        usage: dict[str, int] = {}  # concurrency keys: assigned + running, this cycle
        held: Counter[str] = Counter()
        reasons: dict[str, str] = {}
        self._placed_all = False  # every pending job seen and placed
        self._running = None
        # Fair share and aging weigh a deep window of pending jobs at once; a census every
        # PROBE_EVERY seconds looks that deep too, to notice jobs with aging (or preemptible
        # ones) behind a long queue. (A 5000-job read costs tens of milliseconds.)
        mono = time.monotonic()
        probe = census and mono - self._probed >= PROBE_EVERY
        if probe:
            self._probed = mono
        deep = probe or self._allocating()
        while scanned < cfg.max_scan:
            if free <= 0 or not nodes:
                if not census:
                    break
                size = cfg.page
            if pending is not None:  # the snapshot's page: read with the nodes
                page, size, pending = pending, first_size, None
            else:
                page = store.pending_jobs(size, after)
            shallow = len(page)  # the page as read (the statistics count it alone)
            if deep and page and len(page) >= size:
                page, size = self._deepen(store, page)
            if any(j.alloc.aging for j in page):
                self._aging_at = time.monotonic()
            if any(j.alloc.preemptible for j in page):
                self._preemptible_at = time.monotonic()
            if not page:
                self._placed_all = placed == scanned
                break
            scanned += len(page)
            after = (page[-1].priority, page[-1].seq)
            if free <= 0 or not nodes:
                # Nothing can be placed now; still tell operators what could never run.
                result = place(page[:shallow], nodes, self.policy)
                unplaceable.update(result.never.values())
                waiting += shallow - len(result.never) - len(result.assignments)
                if result.assignments:  # cannot happen with no room, but never drop work
                    placed += self._assign(store, lease, result.assignments, page, by_node)
                if census and nodes and self._preempting():
                    # no room: a job may still run if lower-priority preemptible work yields
                    admitted = self._admit(store, page, usage, held)
                    self._allocate(store, lease, admitted, nodes, held, reasons, preempt=True)
                break
            admitted = self._admit(store, page, usage, held)
            preempt = census and self._preempting()
            result = self._allocate(store, lease, admitted, nodes, held, reasons, preempt)
            unplaceable.update(result.never.values())
            waiting += result.waiting
            if result.assignments:
                n = self._assign(store, lease, result.assignments, admitted, by_node)
                placed += n
                free -= n
                if admitted is not page:  # some jobs have limits: count these placements
                    chosen = {a.job_id for a in result.assignments}
                    now = time.monotonic()
                    record_placed([j for j in admitted if j.id in chosen], usage, self.rates, now)
            if len(page) < size:
                self._placed_all = placed == scanned
                break
            size = min(max(cfg.page, min(cfg.max_page, free)), size * 2)
        if census:
            self.unplaceable = unplaceable
            self.waiting = waiting
            self.held = held
            specific = [(i, r) for i, r in reasons.items() if r != "no room now"]
            self.reasons = dict(specific[:REASONS_KEPT])
            if not self.alloc_config.fair:
                self.tenants = {}
        if placed:
            self.placed_total += placed
            self._window.add(time.monotonic(), placed)
        return placed

    def _allocate(
        self,
        store: Store,
        lease: Lease,
        jobs: list[PendingJob],
        nodes: list[NodeRecord],
        held: Counter[str],
        reasons: dict[str, str],
        preempt: bool = False,
    ) -> Placement:
        """``place`` with the allocation policies (rota.scheduler.policy); exactly ``place``
        while no job or setting asks for them. Fair share, and preemption (``preempt``:
        census cycles while preemptible work is about), count the work on the nodes
        (``Store.running_jobs``, read once per cycle); aging reads the store's clock.
        Preemptions are carried out at once (``Store.preempt``). Gangs are placed as
        single jobs until the stores keep gangs whole."""
        config = self.alloc_config
        if not preempt and config.preemption:
            config = dataclasses.replace(config, preemption=False)
        if any(j.alloc.gang is not None for j in jobs):
            jobs = [
                dataclasses.replace(j, alloc=dataclasses.replace(j.alloc, gang=None, gang_size=0))
                if j.alloc.gang is not None
                else j
                for j in jobs
            ]
        running: list[RunningJob] = []
        if config.fair or preempt:
            if self._running is None:
                self._running = store.running_jobs()
                if any(r.alloc.preemptible for r in self._running):
                    self._preemptible_at = time.monotonic()
            running = self._running
        decision = allocate(
            jobs,
            nodes,
            self.policy,
            running=running,
            now=self._store_now(store),
            config=config,
            state=self.allocation,
        )
        if decision.preemptions:
            self._carry_out(store, lease, decision.preemptions, jobs, running)
        held.update(r for r in decision.reasons.values() if r != "no room now")
        reasons.update(decision.reasons)
        if config.fair:
            self._count_tenants(jobs, running, decision.placement, decision.shares)
        return decision.placement

    def _carry_out(
        self,
        store: Store,
        lease: Lease,
        preemptions: list[Preemption],
        jobs: list[PendingJob],
        running: list[RunningJob],
    ) -> None:
        """Preempt the victims chosen (``Store.preempt``: they go back to pending without
        counting an attempt) and count them, with the run time they lose."""
        priority = {j.id: j.priority for j in jobs}
        victims = [
            (victim, p.reason(priority.get(p.job_id, 0)))
            for p in preemptions
            for victim in p.victims
        ]
        done = store.preempt(lease, victims)
        now = self._store_now(store)
        started = {r.id: r.started_at for r in running}
        lost = sum(max(0.0, now - started.get(v, now)) for v, _ in victims)
        self.totals["preemptions"] += done
        self.totals["preempted_work_s"] += round(lost)
        self._running = None  # read again: the victims are stopping
        for p in preemptions:
            log.info("%s: %s", p.reason(priority.get(p.job_id, 0)), ", ".join(p.victims))

    def _preempting(self) -> bool:
        """Whether to look for preemptions (a preemptible job was seen lately)."""
        return (
            self.alloc_config.preemption
            and time.monotonic() - self._preemptible_at < PREEMPTIBLE_MEMORY
        )

    def _live_allocation(self, shares: dict[str, Share]) -> AllocationConfig:
        """The configured policies with ``shares`` (published by ``Rota.sync_shares``)
        over the configured ones; backfill stays off in the leader until the stores carry
        every job's timeout (docs/allocation-phase2.md)."""
        base = self.config.allocation
        return dataclasses.replace(base, shares={**base.shares, **shares}, backfill=False)

    def _refresh_allocation(self, store: Store) -> None:
        """Re-read the published shares (once a stats cycle)."""
        self.alloc_config = self._live_allocation(shares_from_doc(store.get_stats(SHARES_NAME)))

    def _allocating(self) -> bool:
        """Whether fair share or aging is in use: the leader then orders every pending job
        (no claim grants, no reserved slots) and reads a deep window of them."""
        return self.alloc_config.fair or time.monotonic() - self._aging_at < AGING_MEMORY

    def _deepen(self, store: Store, page: list[PendingJob]) -> tuple[list[PendingJob], int]:
        """``page`` followed by the next pending jobs, up to ``alloc_window`` in all; and
        the page size to compare with (larger than the jobs when the queue ended)."""
        cfg = self.config
        jobs = list(page)
        while len(jobs) < cfg.alloc_window:
            want = min(max(cfg.page, cfg.max_page), cfg.alloc_window - len(jobs))
            more = store.pending_jobs(want, (jobs[-1].priority, jobs[-1].seq))
            jobs += more
            if len(more) < want:
                return jobs, len(jobs) + 1
        return jobs, len(jobs)

    def _count_tenants(
        self,
        jobs: list[PendingJob],
        running: list[RunningJob],
        placement: Placement,
        shares: dict[str, float],
    ) -> None:
        """Per-tenant weight, dominant share, running and pending jobs (for status)."""
        placed = {a.job_id for a in placement.assignments}
        table: dict[str, dict[str, Any]] = {}

        def row(tenant: str) -> dict[str, Any]:
            if tenant not in table:
                share = self.alloc_config.shares.get(tenant, Share())
                table[tenant] = {
                    "weight": share.weight,
                    "limit": dict(share.limit),
                    "dominant_share": round(shares.get(tenant, 0.0), 4),
                    "running": 0,
                    "pending": 0,
                }
            return table[tenant]

        for r in running:
            row(tenant_of(r, r.queue))["running"] += 1
        for j in jobs:
            row(tenant_of(j, j.queue))["running" if j.id in placed else "pending"] += 1
        for tenant in self.alloc_config.shares:
            row(tenant)
        self.tenants = table

    def _admit(
        self, store: Store, page: list[PendingJob], usage: dict[str, int], held: Counter[str]
    ) -> list[PendingJob]:
        """The jobs of ``page`` their concurrency and rate limits allow, keyed jobs taking
        fair turns (see ``rota.scheduler.limits``); ``page`` itself when no job has a limit."""
        if all(j.concurrency_key is None and j.rate_limit is None for j in page):
            return page
        ordered = fair_order(page)
        unknown = sorted(
            {
                j.concurrency_key
                for j in ordered
                if j.concurrency_key is not None
                and j.concurrency_limit > 0
                and j.concurrency_key not in usage
            }
        )
        if unknown:
            usage.update(dict.fromkeys(unknown, 0))
            usage.update(store.concurrency_usage(unknown))
        admission = admit(ordered, usage, self.rates, time.monotonic())
        held.update(admission.held)
        if any(j.rate_limit is not None for j in ordered) and len(admission.jobs) < len(page):
            self._rate_held = True  # look again soon: the next job is due within tau
        return admission.jobs

    def _take_over(self, store: Store) -> None:
        """A new leadership: pick up the rate-limit state the last leader left and forget
        what this process knew of schedules."""
        saved = store.get_stats(RATES_NAME) or {}
        offsets = saved.get("offsets")
        self.rates = RateGate.restore(
            offsets if isinstance(offsets, dict) else {}, time.monotonic()
        )
        self.periodic = PeriodicRunner()

    def _save_rates(self, store: Store) -> None:
        offsets = self.rates.export(time.monotonic())
        if offsets or self._rates_saved:
            store.put_stats(RATES_NAME, {"offsets": offsets})
            self._rates_saved = offsets

    def _assign(
        self,
        store: Store,
        lease: Lease,
        assignments: list[Assignment],
        page: list[PendingJob],
        by_node: dict[str, NodeRecord],
    ) -> int:
        placed = store.assign(lease, assignments)
        by_id = {j.id: j for j in page}
        for a in assignments:  # later pages see the load this page added
            node, job = by_node[a.node_id], by_id[a.job_id]
            node.assigned += 1
            for name, qty in job.resources.items():
                node.used[name] = node.used.get(name, 0.0) + qty
        return placed

    def stats(self) -> dict[str, Any]:
        """What the scheduler publishes for ``rota status`` and the dashboard."""
        lease = self.lease
        return {
            "leader": self.holder,
            "token": lease.token if lease else None,
            "since": lease.acquired_at if lease else None,
            "policy": self.config.policy,
            "decisions_per_s": round(self._window.rate(time.monotonic()), 1),
            "placed_total": self.placed_total,
            "cycles": self.cycles,
            "waiting": self.waiting,
            **self.totals,  # leader_changes, nodes_reaped, lease_expiries, jobs_requeued
            "unplaceable": [
                {"reason": reason, "jobs": count}
                for reason, count in self.unplaceable.most_common(20)
            ],
            "held": [
                {"reason": reason, "jobs": count} for reason, count in self.held.most_common(20)
            ],
            "schedules": self.periodic.summary(),
            "allocation": {
                "fair_share": self.alloc_config.fair,
                "aging": time.monotonic() - self._aging_at < AGING_MEMORY,  # jobs age
                "preemption": self._preempting(),
                "backfill": False,
                "gangs": False,
            },
            "tenants": [{"tenant": t, **row} for t, row in sorted(self.tenants.items())],
            "reasons": self.reasons,
            "coordinator": {"url": self.coordinator, **self.leadership.session()},
        }
