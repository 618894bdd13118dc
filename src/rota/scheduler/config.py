"""How a scheduler behaves (``SchedulerConfig``) and the name its statistics are kept under."""

from __future__ import annotations

from dataclasses import dataclass, field

from rota.scheduler.policy import AllocationConfig

STATS_NAME = "scheduler"


@dataclass(slots=True)
class SchedulerConfig:
    """How a scheduler behaves. Durations are seconds."""

    policy: str = "least_loaded"
    lease_ttl: float = 5.0  # leadership lease; a standby takes over within this
    failure_timeout: float = 5.0  # a node silent this long is dead (store's clock)
    idle_wait: float = 0.1  # longest sleep between cycles with nothing to do
    reap_every: float = 0.25
    page: int = 1000  # pending jobs read per page at most (unless max_page allows more)
    # A page sized by the nodes' free room may hold up to this many jobs: with a large
    # backlog and room for it, one read, one placement and one assign instead of many.
    max_page: int = 10000
    min_page: int = 64  # pending jobs read in a cycle's first page at least
    max_scan: int = 20000  # pending jobs considered per cycle at most
    retention: float = 7 * 86400.0  # finished jobs older than this are pruned
    prune_every: float = 60.0
    stats_every: float = 1.0
    resolve_every: float = 0.02  # workflow steps whose parents finished are released
    periodic_every: float = 0.1  # due periodic ticks are fired
    schedules_every: float = 2.0  # the schedule list is re-read from the store
    # Free slots per queue handed to the store for plain jobs once nothing is pending, so
    # such a job submitted to an idle fleet is placed in the submit itself (stores that
    # can: Redis; see rota.scheduler.reservations). 0 turns it off.
    reserve_slots: int = 8
    # Let live nodes claim plain pending jobs themselves, from the head of the queue, while
    # this leader's lease is current (stores that can: Redis, PostgreSQL, SQLite; see
    # rota.scheduler.reservations.grants; never under fair share or backfill). Off: every
    # job waits for a placement cycle.
    claim_grants: bool = True
    # Fair share, backfill and preemption rules (rota.scheduler.policy). The defaults
    # change nothing until jobs ask for it (aging, gangs, preemptible) or shares are set.
    allocation: AllocationConfig = field(default_factory=AllocationConfig)
