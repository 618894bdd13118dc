"""Rows of the Redis store's scripts <-> rota records, and the scripts' arguments."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from rota.core.backoff import DEFAULT_BASE, DEFAULT_MAX
from rota.core.model import (
    AllocSpec,
    AttemptRecord,
    JobRecord,
    Lease,
    NewJob,
    NodeRecord,
    NodeSpec,
    NodeState,
    PendingJob,
)
from rota.core.outcomes import Outcome
from rota.core.states import JobState


def float_or_none(text: str | None) -> float | None:
    return None if text is None else float(text)


def json_or_empty(text: str | None) -> Any:
    return orjson.loads(text) if text else {}


def reserve_args(slots: Mapping[str, Sequence[str]]) -> list[str]:
    """``reserve_slots``' queue, node ids pairs (ids joined by NUL; empty lists left out)."""
    out: list[str] = []
    for queue, nodes in slots.items():
        if nodes:
            out += (queue, "\0".join(nodes))
    return out


def grant_args(grants: Mapping[str, Sequence[str]]) -> list[str]:
    """``grant_claims``' node id, queues pairs (queues as "\\0q1\\0q2\\0")."""
    out: list[str] = []
    for node, queues in grants.items():
        if queues:
            out += (node, "\0" + "".join(f"{q}\0" for q in queues))
    return out


def num_arg(x: float) -> str:
    return repr(float(x))


def pairs_to_dict(flat: Sequence[str]) -> dict[str, str]:
    it = iter(flat)
    return dict(zip(it, it, strict=True))


def attempt_from_json(job_id: str, text: str) -> AttemptRecord:
    """An ``AttemptRecord`` from an entry of ``attempts:<id>`` (times stored as text)."""
    a = orjson.loads(text)
    ended = a.get("ended_at")
    return AttemptRecord(
        job_id=job_id,
        token=int(a.get("token", 0)),
        attempt=int(a.get("attempt", 0)),
        node_id=a.get("node_id"),
        started_at=float(a["started_at"]),
        ended_at=None if ended is None else float(ended),
        outcome=a.get("outcome"),
        cut_short=a.get("cut_short"),
        error=a.get("error"),
        traceback=a.get("traceback"),
    )


def outcome_rows(outcomes: Sequence[Outcome]) -> bytes:
    """``complete``'s argument: JSON rows [id, token, kind, result, error, traceback,
    retry_delay, cut_short] ("" = none)."""
    return orjson.dumps(
        [
            [
                o.job_id,
                o.token,
                o.kind.value,
                o.result or "",
                o.error or "",
                o.traceback or "",
                num_arg(o.retry_delay),
                o.cut_short or "",
            ]
            for o in outcomes
        ]
    )


def node_records(rows: Any, states: Sequence[NodeState] | None) -> list[NodeRecord]:
    """``NodeRecord``s from ``list_nodes`` rows, optionally only those in ``states``."""
    wanted = None if states is None else {NodeState(s) for s in states}
    out = []
    for node_id, flat, assigned, running, used in rows:
        h = pairs_to_dict(flat)
        state = NodeState(h["state"])
        if wanted is not None and state not in wanted:
            continue
        spec = NodeSpec(
            id=node_id,
            name=h["name"],
            slots=int(h["slots"]),
            prefetch=int(h["prefetch"]),
            resources=json_or_empty(h.get("resources")),
            labels=json_or_empty(h.get("labels")),
            queues=tuple(orjson.loads(h.get("queues") or "[]")),
            host=h.get("host", ""),
            pid=int(h.get("pid") or 0),
        )
        out.append(
            NodeRecord(
                spec=spec,
                state=state,
                registered_at=float(h["registered_at"]),
                heartbeat_at=float(h["heartbeat_at"]),
                assigned=int(assigned),
                running=int(running),
                used=used_of(used),
            )
        )
    out.sort(key=lambda n: (n.registered_at, n.id))
    return out


def used_of(flat: Sequence[str]) -> dict[str, float]:
    """A node's resources in use from ``HGETALL nused:<id>`` (rounding noise dropped)."""
    usage = {k: round(float(v), 9) for k, v in pairs_to_dict(flat).items()}
    return {k: v for k, v in usage.items() if v > 1e-9}


class NodeSpecs:
    """The specs of the nodes a scheduler has seen, by id and registration time. A node's
    spec changes only when it registers again, which sets a new ``registered_at``, so a
    placement snapshot reads each live node's state and load (``live_loads`` rows) and
    the whole node only when one is new or registered again (``list_nodes``)."""

    def __init__(self) -> None:
        self._specs: dict[str, tuple[float, NodeSpec]] = {}

    def live_records(self, rows: Any, read_all: Callable[[], Any]) -> list[NodeRecord]:
        """``NodeRecord``s (as ``node_records(list_nodes, [LIVE])``) from ``live_loads``
        rows {id, registered_at, heartbeat_at, #assigned, #running, HGETALL used}; calls
        ``read_all()`` (``list_nodes`` rows) first if a spec is missing or out of date."""
        specs = self._specs
        rows = [(r[0], float(r[1]), *r[2:]) for r in rows]
        if any(specs.get(r[0], (None,))[0] != r[1] for r in rows):
            specs = self._specs = {
                n.id: (n.registered_at, n.spec) for n in node_records(read_all(), None)
            }
        out = []
        for node_id, registered_at, heartbeat_at, assigned, running, used in rows:
            known = specs.get(node_id)
            if known is None:  # gone between the two reads: as if the snapshot were later
                continue
            out.append(
                NodeRecord(
                    spec=known[1],
                    state=NodeState.LIVE,
                    registered_at=registered_at,
                    heartbeat_at=float(heartbeat_at),
                    assigned=int(assigned),
                    running=int(running),
                    used=used_of(used),
                )
            )
        out.sort(key=lambda n: (n.registered_at, n.id))
        return out


_MAX_RANK = 2**31 - 1


def pending_from_members(members: Any, seen: dict[str, str]) -> list[PendingJob]:
    """``PendingJob``s from members of the ``pending`` sorted set: ``rank`` (8 hex digits of
    2^31-1-priority, 12 of seq), then ``id``, ``queue``, ``x`` and ``task`` separated by NUL, where ``x`` is "" or the
    JSON list [resources, labels, affinity, concurrency_key, concurrency_limit, rate_limit]
    and, for a job with an alloc spec, [alloc, timeout, enqueued_at] (see lua/lib.lua).
    Other jobs' ``enqueued_at`` is 0 (only aging reads it) and ``timeout`` None. Each member is also put in ``seen`` by id, for ``assign``."""
    out: list[PendingJob] = []
    append = out.append
    for m in members:
        job_id, queue, x, task = m[20:].split("\0", 3)
        seen[job_id] = m
        if x:
            res, labels, affinity, ckey, climit, rlimit, *more = orjson.loads(x)
            alloc, timeout, enqueued = more if more else (None, None, None)
            append(
                PendingJob(
                    job_id,
                    queue,
                    _MAX_RANK - int(m[:8], 16),
                    int(m[8:20], 16),
                    res or {},
                    labels or {},
                    affinity or {},
                    task,
                    ckey,
                    int(climit or 0),
                    rlimit,
                    AllocSpec.from_dict(alloc),
                    None if timeout is None else float(timeout),
                    float(enqueued or 0.0),
                )
            )
        else:
            append(
                PendingJob(
                    job_id, queue, _MAX_RANK - int(m[:8], 16), int(m[8:20], 16), {}, {}, {}, task
                )
            )
    return out


def started_jobs(flat: Any) -> list[JobRecord]:
    """``JobRecord``s from ``start_jobs`` rows {id, HGETALL job}..."""
    return [job_from_hash(flat[i], pairs_to_dict(flat[i + 1])) for i in range(0, len(flat), 2)]


_STATES = {s.value: s for s in JobState}


def job_from_hash(job_id: str, h: dict[str, str]) -> JobRecord:
    """A ``JobRecord`` from the fields of a ``job:<id>`` hash (missing: the default)."""
    get = h.get
    loads = orjson.loads
    created_at = float(h["created_at"])
    return JobRecord(
        id=job_id,
        task=h["task"],
        queue=h["queue"],
        payload=h["payload"],
        priority=int(get("priority", 0)),
        state=_STATES[h["state"]],
        attempts=int(get("attempts", 0)),
        max_attempts=int(get("max_attempts", 1)),
        timeout=None if (v := get("timeout")) is None else float(v),
        resources=loads(v) if (v := get("resources")) else {},
        labels=loads(v) if (v := get("labels")) else {},
        affinity=loads(v) if (v := get("affinity")) else {},
        backoff_base=float(get("backoff_base", DEFAULT_BASE)),
        backoff_max=float(get("backoff_max", DEFAULT_MAX)),
        created_at=created_at,
        scheduled_at=created_at if (v := get("scheduled_at")) is None else float(v),
        node_id=get("node_id"),
        token=int(get("token", 0)),
        started_at=None if (v := get("started_at")) is None else float(v),
        finished_at=None if (v := get("finished_at")) is None else float(v),
        lease_expires_at=None if (v := get("lease_expires_at")) is None else float(v),
        result=get("result"),
        error=get("error"),
        traceback=get("traceback"),
        cancel_requested=get("cancel_requested") == "1",
        seq=int(h["seq"]),
        depends_on=tuple(loads(v)) if (v := get("depends_on")) is not None else (),
        pass_results=get("pass_results") == "1",
        workflow_id=get("workflow_id"),
        unique_key=get("unique_key"),
        concurrency_key=get("concurrency_key"),
        concurrency_limit=int(get("concurrency_limit", 0)),
        rate_limit=get("rate_limit"),
        alloc=AllocSpec.from_json(get("alloc")),
        preempted_at=None if (v := get("preempted_at")) is None else float(v),
        preemptions=int(get("preemptions", 0)),
    )


def submit_args(jobs: Sequence[NewJob]) -> tuple[bytes, bytes | str]:
    """``submit``'s arguments: the rows [id, task, queue, payload, priority, delay, eta,
    then the fields that differ from their default as name, value], and the specials
    [index (1-based), parents, unique key, unique_for] of the jobs with ``depends_on`` or a
    ``unique_key`` ("" when there are none), as JSON."""
    dumps = orjson.dumps
    rows = []
    specials: list[list[Any]] = []
    for i, j in enumerate(jobs, 1):
        row: list[Any] = [
            j.id,
            j.task,
            j.queue,
            j.payload,
            j.priority,
            num_arg(j.delay) if j.delay else "",
            "" if j.eta is None else num_arg(j.eta),
        ]
        if j.max_attempts != 1:
            row += ("max_attempts", j.max_attempts)
        if j.timeout is not None:
            row += ("timeout", num_arg(j.timeout))
        if j.resources:
            row += ("resources", dumps(j.resources).decode())
        if j.labels:
            row += ("labels", dumps(j.labels).decode())
        if j.affinity:
            row += ("affinity", dumps(j.affinity).decode())
        if j.backoff_base != DEFAULT_BASE:
            row += ("backoff_base", num_arg(j.backoff_base))
        if j.backoff_max != DEFAULT_MAX:
            row += ("backoff_max", num_arg(j.backoff_max))
        if j.concurrency_key is not None:
            row += ("concurrency_key", j.concurrency_key)
        if j.concurrency_limit:
            row += ("concurrency_limit", j.concurrency_limit)
        if j.rate_limit is not None:
            row += ("rate_limit", j.rate_limit)
        if j.pass_results:
            row += ("pass_results", "1")
        if j.workflow_id is not None:
            row += ("workflow_id", j.workflow_id)
        if j.unique_key is not None:
            row += ("unique_key", j.unique_key)
        alloc = j.alloc.to_json()
        if alloc is not None:
            row += ("alloc", alloc)
        if j.depends_on or j.unique_key is not None:
            unique_for = "" if j.unique_for is None else num_arg(j.unique_for)
            specials.append([i, list(j.depends_on), j.unique_key or "", unique_for])
        rows.append(row)
    return dumps(rows), dumps(specials) if specials else ""


def lease_from_reply(name: str, reply: Any) -> Lease | None:
    if not reply:
        return None
    holder, token, expires, acquired = reply
    return Lease(name, holder, int(token), float(expires), float(acquired))


def pending_rank(priority: int, seq: int) -> str:
    """The sort key of a job in the ``pending`` sorted set (see lua/lib.lua)."""
    p = min(max(priority, -(2**31)), 2**31 - 1)
    return f"{2**31 - 1 - p:08x}{seq:012x}"
