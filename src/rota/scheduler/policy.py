"""Allocation: placement with fair share, aging, preemption, gangs and backfill (pure).

``allocate`` is the scheduler's placement step with the allocation policies on top, in
the style of Nomad's scheduler (feasibility, then ranking, one decision at a time):

1. **never**: jobs no live node could ever run (``placement.place`` says why);
2. **aging** orders the jobs by effective priority (``rota.scheduler.aging``);
3. **gangs** turn into units placed all at once or not at all (``rota.scheduler.gangs``);
4. **fair share** hands each next unit to the tenant with the lowest weighted dominant
   share, within its hard caps (``rota.scheduler.fairshare``); within a tenant the order
   of step 2 is kept;
5. each unit goes to the best node(s) that fit (``rota.scheduler.fit``) and that do not
   delay an earlier reservation (**backfill**, ``rota.scheduler.backfill``);
6. a unit that does not fit may **preempt** lower-priority preemptible jobs
   (``rota.scheduler.preemption``), else, with backfill, it gets a reservation.

With the defaults (no shares configured, no job with aging or a gang, no preemptible job
running, backfill off) none of this engages and the decisions are exactly
``placement.place``'s (``tests/unit/test_policy.py`` checks it).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rota.core.model import Assignment, NodeRecord, PendingJob, RunningJob
from rota.scheduler.aging import by_effective_priority
from rota.scheduler.backfill import Reservation, Timeline
from rota.scheduler.fairshare import FairShare, Share
from rota.scheduler.fit import SLOTS, Room, demand
from rota.scheduler.gangs import place_gang
from rota.scheduler.placement import Placement, Policy, get_policy, place
from rota.scheduler.preemption import Preemption, PreemptionLog, PreemptionRules, choose_victims

PREEMPTED_ROOM_KEPT = 300.0  # seconds the room a preemption frees is kept for its job


@dataclass(frozen=True, slots=True)
class AllocationConfig:
    """Which allocation policies the scheduler applies (``SchedulerConfig.allocation``)."""

    shares: Mapping[str, Share] = field(default_factory=dict)  # tenant -> weight and caps
    fair_share: bool | None = None  # None: on when ``shares`` has a tenant
    backfill: bool = False  # conservative backfill with reservations
    reservations: int = 4  # blocked jobs (or gangs) given a reservation per cycle
    # "large": a gang, or a job asking for at least this share of some resource of the
    # largest node that could run it; smaller blocked jobs get no reservation
    reserve_min_share: float = 0.5
    preemption: bool = True  # acts only on jobs submitted preemptible=True
    rules: PreemptionRules = field(default_factory=PreemptionRules)

    @property
    def fair(self) -> bool:
        return bool(self.shares) if self.fair_share is None else self.fair_share


@dataclass(slots=True)
class AllocationState:
    """What the leader keeps between cycles: recent preemptions (the per-minute cap) and
    the jobs whose victims are stopping (room kept for them until they run)."""

    log: PreemptionLog = field(default_factory=PreemptionLog)
    preempting: dict[str, tuple[str, float]] = field(default_factory=dict)  # job -> node, since


@dataclass(slots=True)
class Decision:
    """What :func:`allocate` decided."""

    placement: Placement
    preemptions: list[Preemption] = field(default_factory=list)
    reservations: list[Reservation] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # job id -> why it waits
    shares: dict[str, float] = field(default_factory=dict)  # tenant -> dominant share after


def engaged(
    jobs: Sequence[PendingJob], running: Sequence[RunningJob], config: AllocationConfig
) -> bool:
    """Whether any policy can change what ``placement.place`` would decide."""
    if config.fair or config.backfill:
        return True
    if any(j.alloc.aging or j.alloc.gang for j in jobs):
        return True
    return config.preemption and any(r.alloc.preemptible for r in running)


def tenant_of(job: PendingJob | RunningJob, queue: str) -> str:
    return job.alloc.tenant or queue


def allocate(
    jobs: Sequence[PendingJob],
    nodes: Sequence[NodeRecord],
    policy: str | Policy = "least_loaded",
    *,
    running: Sequence[RunningJob] = (),
    now: float = 0.0,
    config: AllocationConfig | None = None,
    state: AllocationState | None = None,
) -> Decision:
    """Decide which of ``jobs`` (the store's order: priority, then FIFO) go where now,
    which running jobs to preempt and which reservations hold. ``running`` is the work
    on the nodes (for shares, backfill and preemption); ``state`` is updated."""
    config = config or AllocationConfig()
    pol = policy if isinstance(policy, Policy) else get_policy(policy)
    if not engaged(jobs, running, config):
        return Decision(place(jobs, nodes, pol))
    return _Allocator(jobs, nodes, pol, running, now, config, state or AllocationState()).run()


class _Allocator:
    def __init__(
        self,
        jobs: Sequence[PendingJob],
        nodes: Sequence[NodeRecord],
        policy: Policy,
        running: Sequence[RunningJob],
        now: float,
        config: AllocationConfig,
        state: AllocationState,
    ) -> None:
        self.config, self.state, self.now = config, state, now
        self.out = Decision(Placement())
        self.out.placement.never = place(jobs, nodes, policy).never
        self.jobs = [j for j in jobs if j.id not in self.out.placement.never]
        self.room = Room(nodes, policy)
        self.timeline = Timeline(self.room, running, now)
        self.timeline_running = running
        self.running: dict[int, list[RunningJob]] = {}
        for r in running:
            i = self.room.index.get(r.node_id)
            if i is not None:
                self.running.setdefault(i, []).append(r)
        capacity: dict[str, float] = {SLOTS: float(sum(self.room.limit))}
        for cap in self.room.capacity:
            for name, qty in cap.items():
                capacity[name] = capacity.get(name, 0.0) + qty
        usage: dict[str, dict[str, float]] = {}
        for r in running:
            held = usage.setdefault(tenant_of(r, r.queue), {})
            for name, qty in {**r.resources, SLOTS: 1.0}.items():
                held[name] = held.get(name, 0.0) + qty
        self.fair = FairShare(capacity, config.shares, usage)
        self.victims: set[str] = set()  # chosen this cycle
        # single jobs that found no node this cycle, by shape: the room only gets fuller
        # and the holds only more, so a job of the same shape will not fit either
        self.failed: set[tuple[object, ...]] = set()

    def run(self) -> Decision:
        queues = self._queues()
        self._keep_preempted_room()
        # jobs whose victims were stopped for them go first, into the room kept for them
        for tenant in list(queues):
            first = [u for u in queues[tenant] if u[0].id in self.state.preempting]
            if first:
                queues[tenant] = deque(u for u in queues[tenant] if u not in first)
                if not queues[tenant]:
                    del queues[tenant]
                for unit in first:
                    self._offer(tenant, unit)
        fair = self.config.fair
        # Once no node has a free slot, nothing more can be placed; unless a unit may
        # preempt or reserve, the rest wait without being offered one by one (a deep
        # window of pending jobs then costs a pass, not a DRF turn per job).
        settles = not self.config.backfill and not (
            self.config.preemption and any(r.alloc.preemptible for r in self.timeline_running)
        )
        placed = self.out.placement.assignments
        fitted = True  # the last unit offered was placed (then no need to look)
        while queues:
            if settles and not fitted and not self._any_slot():
                for tenant, rest in queues.items():
                    for unit in rest:
                        self._settle(tenant, unit)
                break
            tenant = self.fair.lowest(queues) if fair else next(iter(queues))
            unit = queues[tenant].popleft()
            if not queues[tenant]:
                del queues[tenant]
            before = len(placed)
            self._offer(tenant, unit)
            fitted = len(placed) > before
        self.out.reservations = list(self.timeline.reservations)
        if fair:
            self.out.shares = {t: self.fair.dominant(t) for t in self.fair.usage}
        return self.out

    def _queues(self) -> dict[str, deque[list[PendingJob]]]:
        """Units (a job, or a gang's members) per tenant, in effective-priority order."""
        gangs: dict[str, list[PendingJob]] = {}
        units: list[list[PendingJob]] = []
        for job in by_effective_priority(self.jobs, self.now):
            gang = job.alloc.gang
            if gang is None:
                units.append([job])
            elif gang in gangs:
                gangs[gang].append(job)
            else:
                gangs[gang] = [job]
                units.append(gangs[gang])
        queues: dict[str, deque[list[PendingJob]]] = {}
        for unit in units:
            head = unit[0]
            size = head.alloc.gang_size
            if head.alloc.gang is not None and len(unit) < size:
                self._wait(unit, f"gang {head.alloc.gang}: {len(unit)} of {size} members pending")
                continue
            tenant = tenant_of(head, head.queue) if self.config.fair else ""
            queues.setdefault(tenant, deque()).append(unit)
        return queues

    def _any_slot(self) -> bool:
        room = self.room
        return any(room.free_slots(i) > 0 for i in range(len(room)))

    def _settle(self, tenant: str, unit: list[PendingJob]) -> None:
        """A unit that waits because no node has a slot (its tenant's cap, if over it)."""
        capped = None
        if self.config.fair and self.fair.share_of(tenant).limit:
            need: dict[str, float] = {}
            for job in unit:
                for name, qty in demand(job).items():
                    need[name] = need.get(name, 0.0) + qty
            capped = self.fair.over_limit(tenant, need)
        self._wait(unit, capped or "no room now")

    def _keep_preempted_room(self) -> None:
        """Room freed by last cycles' preemptions stays for the jobs it was freed for."""
        by_id = {j.id: j for j in self.jobs}
        for job_id, (node_id, since) in list(self.state.preempting.items()):
            job, i = by_id.get(job_id), self.room.index.get(node_id)
            if job is None or i is None or self.now - since > PREEMPTED_ROOM_KEPT:
                del self.state.preempting[job_id]  # placed, cancelled, node gone, too long
            else:
                self.timeline.hold_now(job, i)

    def _wait(self, unit: list[PendingJob], reason: str) -> None:
        self.out.placement.waiting += len(unit)
        for job in unit:
            self.out.reasons[job.id] = reason

    def _offer(self, tenant: str, unit: list[PendingJob]) -> None:
        need: dict[str, float] = {}
        for job in unit:
            for name, qty in demand(job).items():
                need[name] = need.get(name, 0.0) + qty
        if self.config.fair:
            capped = self.fair.over_limit(tenant, need)
            if capped is not None:
                self._wait(unit, capped)
                return
        owners = frozenset(j.id for j in unit)
        timeline = self.timeline

        def allow(i: int, job: PendingJob) -> bool:
            return timeline.allows(i, job, owners)

        head = unit[0]
        strategy = head.alloc.placement if head.alloc.gang is not None else "pack"
        if len(unit) == 1:
            shape = (
                head.queue,
                tuple(head.labels.items()),
                tuple(head.resources.items()),
                head.timeout,
            )
            owns_room = head.id in self.state.preempting  # room is held for it alone
            best = None
            if owns_room or shape not in self.failed:
                best = self.room.best(head, lambda i: allow(i, head))
            placed = None if best is None else [best]
            if best is not None:
                self.room.take(best, head)
            elif not owns_room:
                self.failed.add(shape)
        else:
            placed = place_gang(unit, self.room, strategy, allow)
        if placed is not None:
            for job, i in zip(unit, placed, strict=True):
                self.out.placement.assignments.append(Assignment(job.id, self.room.ids[i]))
                timeline.started(i, job)
                self.state.preempting.pop(job.id, None)
            if self.config.fair:
                self.fair.add(tenant, need)
            return
        if head.id in self.state.preempting:
            node_id = self.state.preempting[head.id][0]
            self._wait(unit, f"waiting for preempted jobs to stop on {node_id}")
            return
        if len(unit) == 1 and self.config.preemption and self._preempt(head):
            return
        if (
            self.config.backfill
            and len(timeline.reservations) < self.config.reservations
            and self._large(unit)
        ):
            found = timeline.reserve(unit, strategy, self.now)
            if found is not None:
                at = found.start - self.now
                self._wait(unit, f"reserved on {','.join(sorted(set(found.nodes)))} in {at:g} s")
                return
        self._wait(unit, "no room now")

    def _large(self, unit: list[PendingJob]) -> bool:
        """A gang, or a job asking for ``reserve_min_share`` of some resource (or of the
        slots) of the largest node that could run it."""
        if len(unit) > 1:
            return True
        job, room = unit[0], self.room
        nodes = [i for i in room.eligible(job) if room.could_ever(i, job)]
        share = self.config.reserve_min_share
        for name, qty in demand(job).items():
            largest = (
                max(
                    (float(room.limit[i]) if name == SLOTS else room.capacity[i].get(name, 0.0))
                    for i in nodes
                )
                if nodes
                else 0.0
            )
            if largest > 0 and qty >= share * largest:
                return True
        return False

    def _preempt(self, job: PendingJob) -> bool:
        rules = self.config.rules
        budget = self.state.log.budget(self.now, rules.per_minute)
        running = {
            i: [dataclasses.replace(r, stopping=True) if r.id in self.victims else r for r in rs]
            for i, rs in self.running.items()
        }
        found = choose_victims(job, self.room, running, self.now, rules, budget)
        if found is None:
            return False
        self.out.preemptions.append(found)
        self.victims.update(found.victims)
        self.state.log.record(self.now, len(found.victims))
        self.state.preempting[job.id] = (found.node_id, self.now)
        # this cycle: the job takes the victims' room (nobody else may), on paper
        i = self.room.index[found.node_id]
        for r in self.running.get(i, ()):
            if r.id in found.victims:
                self.room.give_back(i, {k: v for k, v in r.resources.items() if v > 0}, 1)
        self.room.take(i, job)
        self._wait([job], f"preempting {len(found.victims)} job(s) on {found.node_id}")
        return True
