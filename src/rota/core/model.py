"""Plain records exchanged between the API, the runtime and the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from rota.core.payload import decode_arguments, loads
from rota.core.resources import Resources
from rota.core.states import JobState

GANG_PLACEMENTS = ("pack", "spread", "strict_pack", "strict_spread")  # Ray's strategies


@dataclass(frozen=True, slots=True)
class AllocSpec:
    """How the scheduler shares the fleet for one job (``rota.scheduler.policy``).

    Travels as one JSON text (``to_json``; ``None`` when everything is the default) so a
    store keeps it in a single column and hands it back untouched (``from_json``).
    """

    tenant: str | None = None  # fair-share tenant; None: the job's queue
    preemptible: bool = False  # may be stopped for a job >= preempt_gap levels higher
    aging: float | None = None  # seconds of wait that add one priority level; None: off
    gang: str | None = None  # gang id: all members placed at once or none
    gang_size: int = 0  # members in the gang
    placement: str = "pack"  # the gang's strategy, one of GANG_PLACEMENTS
    gang_restart: bool = False  # a member's node dies: stop and re-place the whole gang

    def to_dict(self) -> dict[str, Any]:
        """The fields that differ from the defaults."""
        return {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if getattr(self, name) != getattr(NO_ALLOC, name)
        }

    def to_json(self) -> str | None:
        """The non-default fields as compact JSON, or ``None`` when all are defaults."""
        values = self.to_dict()
        return orjson.dumps(values).decode() if values else None

    @classmethod
    def from_dict(cls, data: object) -> AllocSpec:
        """The inverse of :meth:`to_dict` (unknown keys ignored; not a dict: defaults)."""
        if not isinstance(data, dict) or not data:
            return NO_ALLOC
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @classmethod
    def from_json(cls, text: str | bytes | None) -> AllocSpec:
        """The inverse of :meth:`to_json` (``None`` or empty: defaults)."""
        return cls.from_dict(orjson.loads(text)) if text else NO_ALLOC


NO_ALLOC = AllocSpec()


@dataclass(slots=True)
class NewJob:
    """A validated job as a producer hands it to the store."""

    id: str
    task: str
    queue: str
    payload: str  # JSON text: {"args": [...], "kwargs": {...}}
    priority: int = 0
    max_attempts: int = 1
    timeout: float | None = None
    resources: Resources = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # required node labels
    affinity: dict[str, str] = field(default_factory=dict)  # preferred node labels
    delay: float = 0.0  # seconds from the store's now; > 0 means state "scheduled"
    eta: float | None = None  # absolute unix time (store clock); wins over delay
    backoff_base: float = 1.0
    backoff_max: float = 300.0
    # Workflows: parents (ids, possibly earlier in the same submit) that must succeed
    # first; the job starts ``waiting``. With ``pass_results`` the worker passes the
    # parents' results as the first argument (one parent: its result; several: a list).
    depends_on: tuple[str, ...] = ()
    pass_results: bool = False
    workflow_id: str | None = None
    # Uniqueness: while a job with this key is unfinished (and younger than
    # ``unique_for`` seconds, when given), submit returns its id instead of a new job.
    unique_key: str | None = None
    unique_for: float | None = None
    # Flow control, enforced by the scheduler at placement.
    concurrency_key: str | None = None
    concurrency_limit: int = 0  # > 0 with a key: at most this many assigned+running
    rate_limit: str | None = None  # "<count>/<seconds>", per task, fleet-wide
    alloc: AllocSpec = NO_ALLOC  # tenant, preemption, aging, gang (one JSON column)

    @property
    def uses_flow(self) -> bool:
        """Whether the job sets a workflow, uniqueness or flow-control field (the stores
        write those columns only for a batch that has such a job)."""
        return bool(
            self.depends_on
            or self.unique_key is not None
            or self.concurrency_key is not None
            or self.concurrency_limit
            or self.rate_limit is not None
            or self.workflow_id is not None
            or self.pass_results
        )


@dataclass(slots=True)
class JobRecord:
    """A job as stored. Times are unix seconds by the store's clock."""

    id: str
    task: str
    queue: str
    payload: str
    priority: int
    state: JobState
    attempts: int
    max_attempts: int
    timeout: float | None
    resources: Resources
    labels: dict[str, str]
    affinity: dict[str, str]
    backoff_base: float
    backoff_max: float
    created_at: float
    scheduled_at: float | None = None
    node_id: str | None = None
    token: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    lease_expires_at: float | None = None
    result: str | None = None  # JSON text
    error: str | None = None
    traceback: str | None = None
    cancel_requested: bool = False
    seq: int = 0
    depends_on: tuple[str, ...] = ()
    pass_results: bool = False
    workflow_id: str | None = None
    unique_key: str | None = None
    concurrency_key: str | None = None
    concurrency_limit: int = 0
    rate_limit: str | None = None
    alloc: AllocSpec = NO_ALLOC
    preempted_at: float | None = None  # last time the job was preempted (store clock)
    preemptions: int = 0  # times it was preempted (not counted as attempts)

    def arguments(self) -> tuple[list[Any], dict[str, Any]]:
        """Decoded ``(args, kwargs)``; raises ``CorruptPayload`` if the row is damaged."""
        return decode_arguments(self.payload)

    def result_value(self) -> Any:
        """The decoded return value (``None`` if there is none)."""
        return None if self.result is None else loads(self.result, "result")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (arguments decoded when possible)."""
        try:
            args, kwargs = self.arguments()
        except Exception:
            args, kwargs = [], {}
        return {
            "id": self.id,
            "task": self.task,
            "queue": self.queue,
            "args": args,
            "kwargs": kwargs,
            "priority": self.priority,
            "state": self.state.value,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "timeout": self.timeout,
            "resources": self.resources,
            "labels": self.labels,
            "affinity": self.affinity,
            "created_at": self.created_at,
            "scheduled_at": self.scheduled_at,
            "node_id": self.node_id,
            "token": self.token,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "lease_expires_at": self.lease_expires_at,
            "result": self.result_value() if self.result is not None else None,
            "error": self.error,
            "traceback": self.traceback,
            "cancel_requested": self.cancel_requested,
            "depends_on": list(self.depends_on),
            "pass_results": self.pass_results,
            "workflow_id": self.workflow_id,
            "unique_key": self.unique_key,
            "concurrency_key": self.concurrency_key,
            "concurrency_limit": self.concurrency_limit,
            "rate_limit": self.rate_limit,
            "alloc": self.alloc.to_dict(),
            "preempted_at": self.preempted_at,
            "preemptions": self.preemptions,
        }


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt of a job, as its history keeps it (``Store.job_attempts``). Times are
    the store's clock; ``outcome`` is an ``AttemptEnd`` value (``None`` while it runs) and
    ``cut_short`` a ``CutShort`` value when it did not run to its end."""

    job_id: str
    token: int  # the assignment's fencing token: one attempt per token
    attempt: int  # the job's attempt number (counted again from 1 after retry_dead)
    node_id: str | None
    started_at: float
    ended_at: float | None = None
    outcome: str | None = None
    cut_short: str | None = None
    error: str | None = None
    traceback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "token": self.token,
            "attempt": self.attempt,
            "node_id": self.node_id,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "outcome": self.outcome,
            "cut_short": self.cut_short,
            "error": self.error,
            "traceback": self.traceback,
        }


class NodeState(StrEnum):
    LIVE = "live"
    DRAINING = "draining"  # finishing its work, takes no new jobs
    DEAD = "dead"  # missed heartbeats past the failure-detection timeout
    STOPPED = "stopped"  # left cleanly


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """What a worker node registers: identity, capacity, labels and queues."""

    id: str
    name: str
    slots: int
    prefetch: int
    resources: Resources = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    queues: tuple[str, ...] = ("default",)
    host: str = ""
    pid: int = 0


@dataclass(slots=True)
class NodeRecord:
    """A node as stored, with its current load (jobs assigned or running on it)."""

    spec: NodeSpec
    state: NodeState
    registered_at: float
    heartbeat_at: float
    assigned: int = 0
    running: int = 0
    used: Resources = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def in_flight(self) -> int:
        return self.assigned + self.running


@dataclass(frozen=True, slots=True)
class HeartbeatReply:
    """What the store tells a node when it heartbeats."""

    alive: bool  # False: the node was declared dead; it must re-register
    lost: tuple[str, ...] = ()  # running jobs whose lease this node no longer holds
    cancel: tuple[str, ...] = ()  # running jobs an operator asked to cancel


@dataclass(frozen=True, slots=True)
class Lease:
    """A named lease (the scheduler's leadership) with its fencing token."""

    name: str
    holder: str
    token: int
    expires_at: float
    acquired_at: float


@dataclass(frozen=True, slots=True)
class Assignment:
    job_id: str
    node_id: str


@dataclass(frozen=True, slots=True)
class PendingJob:
    """The part of a pending job that placement needs."""

    id: str
    queue: str
    priority: int
    seq: int
    resources: Resources
    labels: dict[str, str]
    affinity: dict[str, str]
    task: str = ""
    concurrency_key: str | None = None
    concurrency_limit: int = 0
    rate_limit: str | None = None
    alloc: AllocSpec = NO_ALLOC
    timeout: float | None = None  # worst-case run time (backfill)
    # when it became pending, store clock (aging); kept for jobs with an alloc spec at
    # least (Redis: 0 for the others)
    enqueued_at: float = 0.0


@dataclass(frozen=True, slots=True)
class RunningJob:
    """A job assigned or running on a node, as the allocation policies see it."""

    id: str
    node_id: str
    priority: int
    resources: Resources
    started_at: float  # store clock
    timeout: float | None = None  # worst-case run time: ends by started_at + timeout
    alloc: AllocSpec = NO_ALLOC
    preempted_at: float | None = None  # last preemption (anti-thrash protection)
    stopping: bool = False  # a cancel (preemption) was asked and it has not stopped yet
    queue: str = "default"


@dataclass(frozen=True, slots=True)
class ReapReport:
    """What one pass of dead-node detection and lease expiry did."""

    dead_nodes: tuple[str, ...] = ()
    requeued: int = 0  # assigned jobs handed back to pending untouched
    retried: int = 0  # running jobs whose attempt was counted and that go again
    dead_jobs: int = 0  # running jobs that had no attempts left


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A periodic job's schedule as stored. ``spec`` is JSON text the store does not read
    (see ``rota.core.periodic.ScheduleSpec``); ``last_tick`` is the last tick handled (fired
    or skipped), by the store's clock, or ``None`` before the first."""

    name: str
    spec: str
    last_tick: float | None = None


@dataclass(frozen=True, slots=True)
class PlacementSnapshot:
    """What a scheduler cycle starts from (``FastPaths.placement_snapshot`` in ``rota.store.fast_paths``)."""

    promoted: int  # jobs moved from scheduled/retrying to pending
    nodes: list[NodeRecord]  # the live nodes
    pending: list[PendingJob]  # the first page of pending jobs
    page_size: int  # the size that page was asked with (0: none was read)
