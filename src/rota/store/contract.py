"""The store contract: the one interface that knows about storage.

Every method is one atomic operation inside the store (an SQL transaction, a Redis Lua
script), and every time it compares is the store's own clock, never the caller's.
``tests/store/contract`` is the suite every implementation must pass.

:class:`Store` is the ABC one backend class implements (every role together). Each caller
uses a part of it, named here as a protocol: :class:`ProducerStore` (the API: submit, wait,
cancel), :class:`WorkerStore` (a worker node), :class:`SchedulerStore` (the leader loop)
and :class:`OperatorStore` (CLI, dashboard, status). The speed shortcuts are an optional
capability apart (``rota.store.fast_paths``), with a plain fallback.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from rota.core.errors import InvalidOption
from rota.core.model import (
    Assignment,
    AttemptRecord,
    HeartbeatReply,
    JobRecord,
    Lease,
    NewJob,
    NodeRecord,
    NodeSpec,
    NodeState,
    PendingJob,
    ReapReport,
    RunningJob,
    ScheduleRecord,
)
from rota.core.outcomes import Outcome
from rota.core.states import FINAL_STATES, JobState

SCHEDULER_LEASE = "scheduler"
ATTEMPT_HISTORY = 20  # attempts kept per job by default (URL parameter ``attempt_history``)


def attempt_history_param(value: str) -> int:
    """The ``attempt_history`` URL parameter: how many attempts each job keeps (>= 1)."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1 or n > 10_000:
        raise InvalidOption(
            f"attempt_history must be a whole number from 1 to 10000, not {value!r}"
        )
    return n


def split_attempt_history(url: str) -> tuple[str, int]:
    """``(url without attempt_history, the bound it gives)`` (default ``ATTEMPT_HISTORY``)."""
    parts = urlsplit(url)
    kept, bound = [], ATTEMPT_HISTORY
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "attempt_history":
            bound = attempt_history_param(value)
        else:
            kept.append((key, value))
    if len(kept) == len(parse_qsl(parts.query, keep_blank_values=True)):
        return url, bound
    return urlunsplit(parts._replace(query=urlencode(kept))), bound


CLAIM_PREFIX = "claim:"
"""Names of :meth:`Store.put_stats_once` documents that :meth:`Store.prune` removes with age."""


class AsyncClaims(Protocol):
    """A worker's hot path on its own event loop (see :meth:`FastPaths.async_claims
    <rota.store.fast_paths.FastPaths.async_claims>`): the
    same operations as the :class:`Store` methods of the same names, awaited instead of
    run on a thread. Each retries dropped connections itself (replayed requests run once)
    and raises ``StoreError`` when the store stays unreachable."""

    async def complete_and_start(
        self, outcomes: Sequence[Outcome], node_id: str, limit: int, lease_ttl: float
    ) -> tuple[list[bool], list[JobRecord]]: ...

    async def start_jobs(self, node_id: str, limit: int, lease_ttl: float) -> list[JobRecord]: ...

    async def wait_and_start(
        self, node_id: str, limit: int, lease_ttl: float, timeout: float
    ) -> list[JobRecord]:
        """``wait_for_assignments(node_id, timeout)``, then ``start_jobs(node_id, limit,
        lease_ttl)`` in the same round trip as the wake-up."""
        ...

    async def close(self) -> None: ...


class Store(ABC):
    """Durable state of jobs, nodes and leases. Implementations must be safe to use from
    many processes at once; one instance is used by one thread at a time."""

    url: str
    attempt_history: int = ATTEMPT_HISTORY

    # ---- lifecycle and clock -------------------------------------------------------
    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    @abstractmethod
    def now(self) -> float:
        """The store's clock, in unix seconds."""

    def migrate(self) -> list[str]:
        """Apply pending schema migrations; returns their names. Stores whose schema needs
        no migrations return ``[]``."""
        return []

    # ---- producers and operators ---------------------------------------------------
    @abstractmethod
    def submit(self, jobs: Sequence[NewJob]) -> list[str]:
        """Store ``jobs`` in one round trip, all or none; return their ids in order.

        A job with ``depends_on`` starts ``waiting`` (every parent must exist in the store
        or earlier in the same batch, else ``InvalidOption`` and nothing is stored; such a
        job has no ``delay``/``eta``: the API refuses the combination); one
        with ``eta`` or ``delay > 0`` starts ``scheduled``; any other ``pending``.

        A job with a ``unique_key`` is not stored while another job with that key is
        unfinished (and was created less than its ``unique_for`` seconds ago, when set):
        that job's id is returned in its place. Within one batch the first one wins.
        The check and the insert are one atomic step, so concurrent submitters of the same
        key get one job.
        """

    def submit_in_transaction(self, connection: Any, jobs: Sequence[NewJob]) -> list[str]:
        """Write ``jobs`` inside the caller's open transaction on ``connection`` (they exist
        only if it commits). Only stores that share a database with the caller have it."""
        raise InvalidOption(
            f"connection= (transactional enqueue) needs the PostgreSQL store, not {self.url.split(':')[0]}"
        )

    @abstractmethod
    def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord]:
        """The jobs that exist among ``job_ids``, in the order asked."""

    def get_job(self, job_id: str) -> JobRecord | None:
        found = self.get_jobs([job_id])
        return found[0] if found else None

    @abstractmethod
    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        task: str | None = None,
        node_id: str | None = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        """Jobs matching every given filter, most recently submitted first."""

    @abstractmethod
    def count_jobs(self) -> dict[tuple[str, JobState], int]:
        """Number of jobs by ``(queue, state)`` (only non-zero counts)."""

    @abstractmethod
    def job_attempts(self, job_id: str) -> list[AttemptRecord]:
        """The job's attempt history, oldest first: the last ``attempt_history`` attempts
        (URL parameter, default 20). ``start_jobs`` opens an attempt; ``complete``,
        ``reap`` and ``release_jobs`` close it in the same atomic operation that moves the
        job (a cancel of a running job only flags it: its attempt ends when the worker
        reports or the job is taken back). Pruned with the job."""

    @abstractmethod
    def cancel(self, job_id: str) -> JobState | None:
        """Cancel a job: waiting/scheduled/retrying/pending/assigned ones at once; a running
        one is flagged and its node stops it. Returns the job's state after the call (``None``:
        no such job). Final jobs are left as they are."""

    @abstractmethod
    def retry_dead(self, job_ids: Sequence[str]) -> int:
        """Send dead jobs back to pending with a fresh set of attempts; returns how many."""

    def wait_for_results(self, job_ids: Sequence[str], timeout: float) -> list[JobRecord]:
        """Wait until every job in ``job_ids`` is final or ``timeout`` passes; return the
        records of those that are final. The default polls with a growing interval."""
        deadline = time.monotonic() + timeout
        interval = 0.002
        wanted = list(dict.fromkeys(job_ids))
        while True:
            records = self.get_jobs(wanted)
            done = [r for r in records if r.state in FINAL_STATES]
            left = deadline - time.monotonic()
            if len(done) == len(wanted) or left <= 0:
                return done
            time.sleep(min(interval, left))
            interval = min(interval * 1.5, 0.1)

    # ---- worker nodes --------------------------------------------------------------
    @abstractmethod
    def register_node(self, spec: NodeSpec) -> None:
        """Add a live node (heartbeat now)."""

    @abstractmethod
    def heartbeat(
        self, node_id: str, running: Sequence[tuple[str, int]], lease_ttl: float
    ) -> HeartbeatReply:
        """Mark the node alive and extend the leases of its running jobs ``(id, token)``
        to ``now + lease_ttl``. A node declared dead gets ``alive=False``. The reply's
        ``lost`` lists those of ``running`` it no longer holds, ``cancel`` its running jobs
        an operator asked to cancel (a store may leave ``cancel`` empty when ``running``
        is: a node that runs nothing has nothing to stop)."""

    @abstractmethod
    def set_node_state(self, node_id: str, state: NodeState) -> None:
        """Move a node to ``draining`` (takes no new jobs) or ``stopped`` (left cleanly)."""

    @abstractmethod
    def list_nodes(self, states: Sequence[NodeState] | None = None) -> list[NodeRecord]:
        """Nodes (optionally of the given states) with their current load."""

    @abstractmethod
    def start_jobs(self, node_id: str, limit: int, lease_ttl: float) -> list[JobRecord]:
        """Move up to ``limit`` of the node's assigned jobs to running (highest priority,
        then oldest first): count the attempt, stamp ``started_at`` and a lease to
        ``now + lease_ttl``. Returns the started jobs with their fencing tokens."""

    @abstractmethod
    def complete(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Record the end of attempts in one round trip. Each outcome is accepted only if
        its job is running with the same token; returns which were accepted. A failure
        goes to ``retrying`` (after ``retry_delay``) while attempts are left, else
        ``dead``.

        A report is idempotent: one whose attempt (job and token) already ended with the
        same outcome kind (a retry of a report that committed but whose reply was lost) is
        accepted again and changes nothing. Any other outcome for a job that is not
        running with that token is refused."""

    @abstractmethod
    def release_jobs(self, node_id: str, jobs: Sequence[tuple[str, int]]) -> int:
        """Hand jobs ``(id, token)`` held by the node back to pending (graceful shutdown).
        A running job's attempt is not counted. Returns how many were released."""

    @abstractmethod
    def wait_for_assignments(self, node_id: str, timeout: float) -> None:
        """Block up to ``timeout`` seconds, returning early when the node may have new work
        (or a cancellation). Spurious early returns are allowed."""

    # ---- scheduler -----------------------------------------------------------------
    @abstractmethod
    def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        """Take the lease if it is free or expired (a new, higher token) or renew it if
        ``holder`` has it (same token). ``None`` if another holder has it."""

    @abstractmethod
    def release_lease(self, lease: Lease) -> None:
        """Give the lease up if it is still ``lease``."""

    @abstractmethod
    def get_lease(self, name: str) -> Lease | None:
        """The current, unexpired holder of a lease, if any."""

    def adopt_lease(self, name: str, holder: str, token: int, ttl: float) -> Lease | None:
        """Take or renew the lease under a token minted outside the store (ZooKeeper's
        zxid, see ``rota.coord.zookeeper``): taken when ``token`` is higher than the lease's
        token (whoever holds it, expired or not), renewed when ``holder`` holds it with this
        very token; ``None`` otherwise: a token older than the newest the store has seen is
        refused. Fenced writes then check the lease exactly as for ``acquire_lease``."""
        raise InvalidOption(f"the {self.url.split(':')[0]} store cannot adopt external tokens")

    @abstractmethod
    def promote_due(self, lease: Lease, limit: int) -> int:
        """Move up to ``limit`` scheduled/retrying jobs that are due to pending.
        Fenced: raises ``LeaseLost`` unless ``lease`` is current."""

    @abstractmethod
    def reap(self, lease: Lease, failure_timeout: float) -> ReapReport:
        """Declare dead the nodes silent for ``failure_timeout`` seconds and take back
        their jobs (assigned: back to pending untouched; running: the attempt counts, then
        pending or dead); also take back running jobs whose lease expired. Fenced."""

    def reap_nodes(
        self, lease: Lease, node_ids: Sequence[str], failure_timeout: float
    ) -> ReapReport:
        """``reap``, and also declare dead now the nodes ``node_ids`` (their coordinator
        session ended): their jobs are taken back as for a silent node. Fenced: a deposed
        leader is refused by the first ``reap`` before it marks any node."""
        first = self.reap(lease, failure_timeout)
        for node_id in node_ids:
            self.set_node_state(node_id, NodeState.DEAD)
        second = self.reap(lease, failure_timeout)
        return ReapReport(
            tuple(dict.fromkeys((*first.dead_nodes, *node_ids, *second.dead_nodes))),
            first.requeued + second.requeued,
            first.retried + second.retried,
            first.dead_jobs + second.dead_jobs,
        )

    @abstractmethod
    def pending_jobs(self, limit: int, after: tuple[int, int] | None = None) -> list[PendingJob]:
        """Pending jobs by priority (highest first), then FIFO, starting after the cursor
        ``(priority, seq)`` of the last job of the previous page."""

    def running_jobs(self, limit: int = 10_000) -> list[RunningJob]:
        """Up to ``limit`` assigned and running jobs, as the allocation policies see them
        (``rota.scheduler.policy``: per-tenant usage for fair share). The default reads
        them with ``list_jobs``; ``started_at`` is the start (or ``created_at`` while
        only assigned) and ``stopping`` a preemption still pending."""
        found: list[RunningJob] = []
        for state in (JobState.RUNNING, JobState.ASSIGNED):
            for r in self.list_jobs(state=state, limit=limit - len(found)):
                if r.node_id is None:
                    continue
                found.append(
                    RunningJob(
                        r.id,
                        r.node_id,
                        r.priority,
                        r.resources,
                        r.started_at if r.started_at is not None else r.created_at,
                        r.timeout,
                        r.alloc,
                        r.preempted_at,
                        r.cancel_requested
                        and r.preempted_at is not None
                        and r.started_at is not None
                        and r.preempted_at >= r.started_at,
                        r.queue,
                    )
                )
            if len(found) >= limit:
                break
        return found

    @abstractmethod
    def preempt(self, lease: Lease, victims: Sequence[tuple[str, str]]) -> int:
        """Preempt jobs ``(id, reason)`` for higher-priority work. Fenced like ``assign``.
        An assigned job goes back to pending at once; a running one is flagged
        (``cancel_requested``; its node stops it as for a cancel). Both get
        ``preempted_at = now`` and ``error = reason``. When the node then reports the
        attempt ``CANCELLED`` (or ``FAILED``), or hands it back, the job goes back to
        pending **without counting the attempt** (its attempt ends cut short
        ``preempted``), keeping its ``enqueued_at``, with ``preemptions += 1``. A
        preemption is pending while ``cancel_requested`` and ``preempted_at >=
        started_at``; an operator's ``cancel`` meanwhile makes it a plain cancel. Jobs in
        other states are skipped. Returns how many were preempted."""

    @abstractmethod
    def assign(self, lease: Lease, assignments: Sequence[Assignment]) -> int:
        """Place pending jobs on live nodes, each with a new fencing token. Jobs no longer
        pending and nodes no longer live are skipped. Fenced. Returns how many were placed."""

    @abstractmethod
    def wait_for_pending(self, timeout: float) -> None:
        """Block up to ``timeout`` seconds, returning early when there may be placement
        work (a submit, a finished job, a new node). Spurious early returns are allowed."""

    @abstractmethod
    def put_stats(self, name: str, data: dict[str, Any]) -> None:
        """Publish a small JSON document (the scheduler's statistics)."""

    @abstractmethod
    def put_stats_once(self, name: str, data: dict[str, Any]) -> bool:
        """Write the document ``name`` only if it is absent, atomically (several processes
        may race for it). True when the stored document is ``data``: written by this call,
        or by an earlier call with equal ``data`` (so a call retried after a lost reply, or
        repeated by the same claimant, still wins). Callers put something unique to
        themselves in ``data``; exactly one distinct ``data`` ever wins a name. A name that
        starts with :data:`CLAIM_PREFIX` is a claim: :meth:`prune` deletes it once it is
        older than the retention."""

    @abstractmethod
    def get_stats(self, name: str) -> dict[str, Any] | None:
        """Read a document written by :meth:`put_stats` or :meth:`put_stats_once`."""

    # ---- workflows, periodic jobs and flow control --------------------------------
    @abstractmethod
    def resolve_dependencies(self, lease: Lease, limit: int) -> int:
        """Settle up to ``limit`` waiting jobs whose parents allow it (see
        ``rota.core.states.after_parents``): to ``pending`` when every parent succeeded; to
        ``upstream_failed`` (final: ``finished_at`` stamped, ``error`` naming the failed
        parent) as soon as one parent is dead, cancelled or upstream_failed. Jobs whose
        parents are unsettled are left waiting. Fenced. Returns how many moved; a chain
        settles over successive calls."""

    @abstractmethod
    def concurrency_usage(self, keys: Sequence[str]) -> dict[str, int]:
        """How many jobs are assigned or running per concurrency key, for ``keys`` (keys
        with none may be left out)."""

    @abstractmethod
    def put_schedules(self, schedules: Sequence[ScheduleRecord]) -> None:
        """Create or update schedules by name: ``spec`` is replaced; a stored
        ``last_tick`` is kept (the records' own ``last_tick`` is ignored)."""

    @abstractmethod
    def delete_schedules(self, names: Sequence[str]) -> int:
        """Remove schedules by name; returns how many existed."""

    @abstractmethod
    def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule, ordered by name."""

    @abstractmethod
    def fire_schedule(self, lease: Lease, name: str, tick: float, job: NewJob | None) -> bool:
        """Handle one tick of a schedule exactly once. If schedule ``name`` exists and its
        ``last_tick`` is unset or earlier than ``tick``: set ``last_tick = tick`` and, in
        the same atomic step, submit ``job`` (``None``: the tick is skipped); return
        ``True``. Otherwise change nothing and return ``False``. Fenced."""

    @abstractmethod
    def prune(self, older_than: float) -> int:
        """Delete final jobs finished more than ``older_than`` seconds ago, nodes gone
        (dead or stopped) for that long, and claims (:meth:`put_stats_once` documents named
        ``CLAIM_PREFIX...``) written that long ago. Returns how many jobs were deleted."""


# ---- the part of the contract each caller uses ----------------------------------------
class ProducerStore(Protocol):
    """What the API (``Rota``, ``JobHandle``, workflows) uses: submit, read, wait, cancel."""

    url: str

    def submit(self, jobs: Sequence[NewJob]) -> list[str]: ...
    def submit_in_transaction(self, connection: Any, jobs: Sequence[NewJob]) -> list[str]: ...
    def get_job(self, job_id: str) -> JobRecord | None: ...
    def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord]: ...
    def wait_for_results(self, job_ids: Sequence[str], timeout: float) -> list[JobRecord]: ...
    def cancel(self, job_id: str) -> JobState | None: ...
    def put_schedules(self, schedules: Sequence[ScheduleRecord]) -> None: ...
    def close(self) -> None: ...


class WorkerStore(Protocol):
    """What a worker node uses (``rota.worker.node``); its claims may also take the fast
    paths (``complete_and_start``, ``async_claims``)."""

    def register_node(self, spec: NodeSpec) -> None: ...
    def heartbeat(
        self, node_id: str, running: Sequence[tuple[str, int]], lease_ttl: float
    ) -> HeartbeatReply: ...
    def set_node_state(self, node_id: str, state: NodeState) -> None: ...
    def start_jobs(self, node_id: str, limit: int, lease_ttl: float) -> list[JobRecord]: ...
    def complete(self, outcomes: Sequence[Outcome]) -> list[bool]: ...
    def release_jobs(self, node_id: str, jobs: Sequence[tuple[str, int]]) -> int: ...
    def wait_for_assignments(self, node_id: str, timeout: float) -> None: ...
    def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord]: ...
    def close(self) -> None: ...


class SchedulerStore(Protocol):
    """What the scheduler leader uses (``rota.scheduler``); each cycle may also take the
    fast paths (``placement_snapshot``, ``wait_for_pending_snapshot``, ``reserve_slots``)."""

    def now(self) -> float: ...
    def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None: ...
    def release_lease(self, lease: Lease) -> None: ...
    def promote_due(self, lease: Lease, limit: int) -> int: ...
    def reap(self, lease: Lease, failure_timeout: float) -> ReapReport: ...
    def list_nodes(self, states: Sequence[NodeState] | None = None) -> list[NodeRecord]: ...
    def pending_jobs(
        self, limit: int, after: tuple[int, int] | None = None
    ) -> list[PendingJob]: ...
    def assign(self, lease: Lease, assignments: Sequence[Assignment]) -> int: ...
    def running_jobs(self, limit: int = 10_000) -> list[RunningJob]: ...
    def preempt(self, lease: Lease, victims: Sequence[tuple[str, str]]) -> int: ...
    def wait_for_pending(self, timeout: float) -> None: ...
    def resolve_dependencies(self, lease: Lease, limit: int) -> int: ...
    def concurrency_usage(self, keys: Sequence[str]) -> dict[str, int]: ...
    def list_schedules(self) -> list[ScheduleRecord]: ...
    def fire_schedule(self, lease: Lease, name: str, tick: float, job: NewJob | None) -> bool: ...
    def put_stats(self, name: str, data: dict[str, Any]) -> None: ...
    def get_stats(self, name: str) -> dict[str, Any] | None: ...
    def prune(self, older_than: float) -> int: ...
    def close(self) -> None: ...


class OperatorStore(Protocol):
    """What an operator's tools use (``rota.cli``, ``rota.status``, ``rota.dashboard``)."""

    url: str

    def now(self) -> float: ...
    def migrate(self) -> list[str]: ...
    def get_job(self, job_id: str) -> JobRecord | None: ...
    def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord]: ...
    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        task: str | None = None,
        node_id: str | None = None,
        limit: int = 100,
    ) -> list[JobRecord]: ...
    def count_jobs(self) -> dict[tuple[str, JobState], int]: ...
    def job_attempts(self, job_id: str) -> list[AttemptRecord]: ...
    def cancel(self, job_id: str) -> JobState | None: ...
    def retry_dead(self, job_ids: Sequence[str]) -> int: ...
    def wait_for_results(self, job_ids: Sequence[str], timeout: float) -> list[JobRecord]: ...
    def list_nodes(self, states: Sequence[NodeState] | None = None) -> list[NodeRecord]: ...
    def get_lease(self, name: str) -> Lease | None: ...
    def get_stats(self, name: str) -> dict[str, Any] | None: ...
    def list_schedules(self) -> list[ScheduleRecord]: ...
    def close(self) -> None: ...
