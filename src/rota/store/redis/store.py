"""The Redis store: every state change is one Lua script (``lua/*.lua``; ``lua/lib.lua``'s
header documents the key layout), run with Redis' own clock (``TIME``). The scripts are
one Redis function library (Redis 7 or newer, see ``library.py``), loaded once and called
with ``FCALL``. This module is the store class, its methods grouped by the role that calls
them; ``connection.py`` (URL, connection, retries), ``codec.py`` (rows <-> records) and
``async_claims.py`` (a worker's claims on its event loop) do the rest.

URL: ``redis://[user:password@]host:port/db?prefix=NAME&result_ttl=SECONDS`` (also
``rediss://`` and ``unix://``). ``prefix`` (default ``rota``) namespaces every key as
``NAME:{NAME}:...`` so several apps share one Redis and each app's keys share one cluster
hash slot. ``result_ttl`` (default 7 days, ``0``: never) is how long a final job is kept
(Redis expires its hash; the scheduler's ``reap`` drops its index entries): every process
of an app should use the same value, which it does when they share the store URL. Both are
removed from the URL before connecting; other query parameters go to redis-py.

A dropped connection or a restarted Redis is retried with exponential backoff (one log
line on ``rota.store.redis`` when the connection is lost, one when it is back); scripts
are loaded again after a restart ("Function not found"). Replies of non-idempotent scripts are
memoized for two minutes under a request id, so a command replayed after its reply was
lost does not run twice.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import orjson

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
    PlacementSnapshot,
    ReapReport,
    ScheduleRecord,
)
from rota.core.outcomes import Outcome
from rota.core.states import FINAL_STATES, JobState
from rota.store.contract import AsyncClaims, Store
from rota.store.redis.async_claims import RedisAsyncClaims
from rota.store.redis.codec import (
    attempt_from_json,
    float_or_none,
    grant_args,
    job_from_hash,
    lease_from_reply,
    node_records,
    num_arg,
    outcome_rows,
    pairs_to_dict,
    pending_from_members,
    pending_rank,
    reserve_args,
    started_jobs,
    submit_args,
)
from rota.store.redis.connection import (
    MEMBERS_KEPT,
    PRUNE_BATCH,
    PURGE_PER_REAP,
    WAIT_CHUNK,
    WATCH_GRACE,
    RedisConnection,
)

FINAL_VALUES = frozenset(s.value for s in FINAL_STATES)


class RedisStore(RedisConnection, Store):
    """Store in Redis (``redis://host:port/db?prefix=NAME``): the scripts of ``lua/``,
    grouped here by the role that calls them."""

    def now(self) -> float:
        sec, usec = self._call(self.redis.time)
        return float(sec) + float(usec) / 1e6

    # ---- producers and operators ---------------------------------------------------
    def submit(self, jobs: Sequence[NewJob]) -> list[str]:
        if not jobs:
            return []
        reply = self._run("submit", list(submit_args(jobs)), memo=True)
        self._durable.confirm(self._conn, self._where)
        if isinstance(reply, list):  # a unique key gave some job an existing id
            return [str(x) for x in reply]
        return [j.id for j in jobs]

    def _hashes(self, job_ids: Sequence[str]) -> list[dict[str, str]]:
        def fetch() -> list[dict[str, str]]:
            pipe = self.redis.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.hgetall(self.key("job", job_id))
            return pipe.execute()

        return self._call(fetch) if job_ids else []

    def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord]:
        ids = list(job_ids)
        return [job_from_hash(i, h) for i, h in zip(ids, self._hashes(ids), strict=True) if h]

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        task: str | None = None,
        node_id: str | None = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        if limit <= 0:
            return []
        if state in (JobState.ASSIGNED, JobState.RUNNING):
            # no index by seq: these are bounded by the fleet's capacity
            assert state is not None
            ids = self._run("active_ids", [state.value])
            found = [
                r
                for r in self.get_jobs(ids)
                if r.state is state
                and (queue is None or r.queue == queue)
                and (task is None or r.task == task)
                and (node_id is None or r.node_id == node_id)
            ]
            found.sort(key=lambda r: r.seq, reverse=True)
            return found[:limit]
        index = self.key("state", state.value) if state else self.key("jobs")
        filtered = queue is not None or task is not None or node_id is not None
        page = max(limit, 500) if filtered else limit
        out: list[JobRecord] = []
        top = "+inf"
        while len(out) < limit:
            # newest first: ids with their seq, a page at a time from the top seq down
            pairs: list[Any]
            if state is JobState.PENDING:  # no index by seq: read "pending" band by band
                bound = "" if top == "+inf" else top[1:]  # "(seq": below seq
                flat = self._run("pending_newest", [bound, page])
                pairs = [(flat[i], int(flat[i + 1])) for i in range(0, len(flat), 2)]
            else:
                pairs = self._call(
                    partial(
                        self.redis.zrevrangebyscore,
                        index,
                        top,
                        "-inf",
                        start=0,
                        num=page,
                        withscores=True,
                    )
                )
            if not pairs:
                break
            for rec in self.get_jobs([p[0] for p in pairs]):
                if (
                    (state is None or rec.state is state)
                    and (queue is None or rec.queue == queue)
                    and (task is None or rec.task == task)
                    and (node_id is None or rec.node_id == node_id)
                ):
                    out.append(rec)
            if len(pairs) < page:
                break
            top = f"({int(pairs[-1][1])}"
        return out[:limit]

    def job_attempts(self, job_id: str) -> list[AttemptRecord]:
        return [attempt_from_json(job_id, text) for text in self._run("job_attempts", [job_id])]

    def count_jobs(self) -> dict[tuple[str, JobState], int]:
        raw: dict[Any, Any] = self._call(partial(self.redis.hgetall, self.key("counts")))
        out: dict[tuple[str, JobState], int] = {}
        for field, value in raw.items():
            state, _, queue = field.partition(":")
            n = int(value)
            if n > 0:
                out[(queue, JobState(state))] = n
        return out

    def cancel(self, job_id: str) -> JobState | None:
        state = self._run("cancel", [job_id])
        self._durable.confirm(self._conn, self._where)
        return JobState(state) if state else None

    def retry_dead(self, job_ids: Sequence[str]) -> int:
        if not job_ids:
            return 0
        return int(self._run("retry_dead", list(job_ids), memo=True))

    def _is_final(self, job_id: str) -> bool:
        state = self._call(partial(self.redis.hget, self.key("job", job_id), "state"))
        return state in FINAL_VALUES

    def wait_for_results(self, job_ids: Sequence[str], timeout: float) -> list[JobRecord]:
        """Mark the jobs watched and read their states (one round trip), then block on
        each unfinished job's ``done:<id>`` list in turn: a watched job pushes it when it
        becomes final, and ``BLMOVE`` from the list to itself leaves the element for the
        job's other waiters. One round trip per job; its state is read again whenever a
        blocking chunk times out."""
        wanted = list(dict.fromkeys(job_ids))
        deadline = time.monotonic() + timeout

        def watch_and_read() -> list[str | None]:
            # watch first, then read: a job that becomes final after the read signals
            watch_ms = int((max(timeout, 0.0) + WATCH_GRACE) * 1000)
            pipe = self.redis.pipeline(transaction=False)
            for job_id in wanted:
                pipe.set(self.key("watch", job_id), 1, px=watch_ms)
            for job_id in wanted:
                pipe.hget(self.key("job", job_id), "state")
            return pipe.execute()[len(wanted) :]

        if wanted:
            states = self._call(watch_and_read)
            for job_id, state in zip(wanted, states, strict=True):
                if state in FINAL_VALUES:
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._block(
                    partial(self._blmove_same, self.key("done", job_id)),
                    left,
                    partial(self._is_final, job_id),
                )
        return [r for r in self.get_jobs(wanted) if r.state in FINAL_STATES]

    # ---- worker nodes --------------------------------------------------------------
    def register_node(self, spec: NodeSpec) -> None:
        dumps = orjson.dumps
        self._run(
            "register_node",
            [
                spec.id,
                spec.name,
                spec.slots,
                spec.prefetch,
                dumps(spec.resources).decode(),
                dumps(spec.labels).decode(),
                dumps(list(spec.queues)).decode(),
                spec.host,
                spec.pid,
            ],
        )

    def heartbeat(
        self, node_id: str, running: Sequence[tuple[str, int]], lease_ttl: float
    ) -> HeartbeatReply:
        args: list[Any] = [node_id, num_arg(lease_ttl)]
        for job_id, token in running:
            args += (job_id, token)
        alive, lost, cancel = self._run("heartbeat", args)
        return HeartbeatReply(alive=bool(alive), lost=tuple(lost), cancel=tuple(cancel))

    def set_node_state(self, node_id: str, state: NodeState) -> None:
        self._run("set_node_state", [node_id, NodeState(state).value])

    def list_nodes(self, states: Sequence[NodeState] | None = None) -> list[NodeRecord]:
        return node_records(self._run("list_nodes", []), states)

    def start_jobs(self, node_id: str, limit: int, lease_ttl: float) -> list[JobRecord]:
        if limit <= 0:
            return []
        started = started_jobs(
            self._run(
                "start_jobs",
                [node_id, limit, num_arg(lease_ttl), self.attempt_history],
                memo=True,
            )
        )
        if started:
            self.saw_tokens([r.token for r in started])
            self._durable.confirm(self._conn, self._where)
        return started

    def complete(self, outcomes: Sequence[Outcome]) -> list[bool]:
        if not outcomes:
            return []
        accepted = self._run("complete", [outcome_rows(outcomes)], memo=True)
        self._durable.confirm(self._conn, self._where)
        return [bool(a) for a in accepted]

    def complete_and_start(
        self, outcomes: Sequence[Outcome], node_id: str, limit: int, lease_ttl: float
    ) -> tuple[list[bool], list[JobRecord]]:
        """Both in one script (one round trip, one pass of Redis' event loop)."""
        if not outcomes:
            return [], self.start_jobs(node_id, limit, lease_ttl)
        if limit <= 0:
            return self.complete(outcomes), []
        args = [outcome_rows(outcomes), node_id, limit, num_arg(lease_ttl), self.attempt_history]
        accepted, reply = self._run("complete_and_start", args, memo=True)
        started = started_jobs(reply)
        self.saw_tokens([r.token for r in started])
        self._durable.confirm(self._conn, self._where)
        return [bool(a) for a in accepted], started

    def async_claims(self) -> AsyncClaims:
        return RedisAsyncClaims(self)

    def release_jobs(self, node_id: str, jobs: Sequence[tuple[str, int]]) -> int:
        if not jobs:
            return 0
        args: list[Any] = [node_id]
        for job_id, token in jobs:
            args += (job_id, token)
        return int(self._run("release_jobs", args, memo=True))

    def wait_for_assignments(self, node_id: str, timeout: float) -> None:
        wake = self.key("wake", "node", node_id)

        def check() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zcard(self.key("nassigned", node_id))
            pipe.lpop(wake)
            return pipe.execute()

        assigned, woken = self._call(check)
        if assigned or woken is not None or timeout <= 0:
            return
        self._block(partial(self._blpop, wake), timeout)

    # ---- scheduler -----------------------------------------------------------------
    def _lease_args(self, lease: Lease) -> list[Any]:
        return [lease.name, lease.holder, lease.token]

    def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        lease = lease_from_reply(name, self._run("acquire_lease", [name, holder, num_arg(ttl)]))
        if lease is not None:
            self.saw_tokens(lease=(name, lease.token))
        self._durable.confirm(self._conn, self._where)
        return lease

    def adopt_lease(self, name: str, holder: str, token: int, ttl: float) -> Lease | None:
        reply = self._run("adopt_lease", [name, holder, int(token), num_arg(ttl)])
        self._durable.confirm(self._conn, self._where)
        return lease_from_reply(name, reply)

    def release_lease(self, lease: Lease) -> None:
        self._run("release_lease", self._lease_args(lease))

    def get_lease(self, name: str) -> Lease | None:
        return lease_from_reply(name, self._run("get_lease", [name]))

    def promote_due(self, lease: Lease, limit: int) -> int:
        return int(self._run("promote_due", [*self._lease_args(lease), limit], memo=True))

    def reap(self, lease: Lease, failure_timeout: float) -> ReapReport:
        args = [*self._lease_args(lease), num_arg(failure_timeout), PURGE_PER_REAP]
        dead_nodes, requeued, retried, dead_jobs = self._run("reap", args, memo=True)
        return ReapReport(tuple(dead_nodes), int(requeued), int(retried), int(dead_jobs))

    def pending_jobs(self, limit: int, after: tuple[int, int] | None = None) -> list[PendingJob]:
        if limit <= 0:
            return []
        # the smallest key after the cursor: same priority, next seq
        start = "-" if after is None else "[" + pending_rank(after[0], after[1] + 1)
        return pending_from_members(self._run("pending_jobs", [start, limit]), self._members)

    def placement_snapshot(
        self, lease: Lease, promote_limit: int, page: int, min_page: int, census: bool
    ) -> PlacementSnapshot:
        """:meth:`FastPaths.placement_snapshot` in one script (one round trip)."""
        args = [*self._lease_args(lease), promote_limit, page, min_page, 1 if census else 0]
        return self._snapshot(self._run("placement_snapshot", args))

    def _snapshot(self, reply: Any) -> PlacementSnapshot:
        promoted, nodes, members, size = reply
        self._members = {}  # a new cycle: forget the members read by the last one
        pending = pending_from_members(members, self._members)
        live = self._node_specs.live_records(nodes, partial(self._run, "list_nodes", []))
        return PlacementSnapshot(int(promoted), live, pending, int(size))

    def wait_for_pending_snapshot(
        self,
        timeout: float,
        lease: Lease,
        promote_limit: int,
        page: int,
        min_page: int,
        reserve: Mapping[str, Sequence[str]] | None = None,
    ) -> PlacementSnapshot | None:
        """``reserve_slots``, the ``BLPOP`` on ``wake:sched`` and ``placement_snapshot``
        pipelined: Redis takes the snapshot the moment the wait ends, woken or not (one
        round trip from a submit to the scheduler's placement, not two)."""
        if timeout <= 0 or timeout > WAIT_CHUNK:
            if reserve:
                self.reserve_slots(lease, reserve)
            self.wait_for_pending(timeout)
            return None
        commands: list[tuple[Any, ...]] = []
        lease_args = self._lease_args(lease)
        if reserve:  # a lost lease or a missing library only costs this reservation
            args = [*lease_args, *reserve_args(reserve)]
            commands.append(self._fcall_command("reserve_slots", args))
        commands.append(("BLPOP", self.key("wake", "sched"), timeout))
        args = [*lease_args, promote_limit, page, min_page, 0]
        commands.append(self._fcall_command("placement_snapshot", args))

        def both() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)  # type: ignore[no-untyped-call]
            return pipe.execute(raise_on_error=False)

        reply = self._call(both)[-1]
        if isinstance(reply, Exception):  # a missing script, a lost lease...: the next
            return None  # cycle takes its own snapshot (and raises what it must)
        return self._snapshot(reply)

    reserves_slots = True

    def reserve_slots(self, lease: Lease, slots: Mapping[str, Sequence[str]]) -> None:
        self._run("reserve_slots", [*self._lease_args(lease), *reserve_args(slots)])

    grants_claims = True

    def grant_claims(self, lease: Lease, grants: Mapping[str, Sequence[str]]) -> None:
        self._run("grant_claims", [*self._lease_args(lease), *grant_args(grants)])

    def assign(self, lease: Lease, assignments: Sequence[Assignment]) -> int:
        """Each job goes with its ``pending`` member as last read here (``pending_jobs``,
        ``placement_snapshot``), so the script need not read the job's hash; a job not read
        here (or read in another form) has its member rebuilt by the script."""
        args = self._lease_args(lease)
        members = self._members
        for a in assignments:
            args += (a.job_id, a.node_id, members.pop(a.job_id, ""))
        if len(members) > MEMBERS_KEPT:
            members.clear()
        return int(self._run("assign", args, memo=True))

    def wait_for_pending(self, timeout: float) -> None:
        wake = self.key("wake", "sched")
        if timeout <= 0:
            self._call(partial(self.redis.lpop, wake))  # just take a pending wake-up
            return
        self._block(partial(self._blpop, wake), timeout)

    def put_stats(self, name: str, data: dict[str, Any]) -> None:
        text = orjson.dumps(data)
        self._call(lambda: self.redis.set(self.key("stats", name), text))

    def put_stats_once(self, name: str, data: dict[str, Any]) -> bool:
        key, text = self.key("stats", name), orjson.dumps(data)
        if self._call(lambda: self.redis.set(key, text, nx=True)):
            return True
        held = self._call(lambda: self.redis.get(key))  # a retried call finds its own data
        return held is not None and bool(orjson.loads(held) == data)

    def get_stats(self, name: str) -> dict[str, Any] | None:
        text = self._call(lambda: self.redis.get(self.key("stats", name)))
        if text is None:
            return None
        data: dict[str, Any] = orjson.loads(text)
        return data

    # ---- workflows, periodic jobs and flow control --------------------------------
    def resolve_dependencies(self, lease: Lease, limit: int) -> int:
        if limit <= 0:
            return 0
        return int(self._run("resolve_dependencies", [*self._lease_args(lease), limit], memo=True))

    def concurrency_usage(self, keys: Sequence[str]) -> dict[str, int]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        counts: list[Any] = self._call(partial(self.redis.hmget, self.key("concurrency"), wanted))
        return {k: int(n) for k, n in zip(wanted, counts, strict=True) if n and int(n) > 0}

    def put_schedules(self, schedules: Sequence[ScheduleRecord]) -> None:
        if not schedules:
            return
        args: list[Any] = []
        for s in schedules:
            args += (s.name, s.spec)
        self._run("put_schedules", args)

    def delete_schedules(self, names: Sequence[str]) -> int:
        if not names:
            return 0
        return int(self._run("delete_schedules", list(names), memo=True))

    def list_schedules(self) -> list[ScheduleRecord]:
        specs, ticks = self._run("list_schedules", [])
        last = pairs_to_dict(ticks)
        return [
            ScheduleRecord(name, spec, float_or_none(last.get(name)))
            for name, spec in sorted(pairs_to_dict(specs).items())
        ]

    def fire_schedule(self, lease: Lease, name: str, tick: float, job: NewJob | None) -> bool:
        rows, specials = submit_args([job]) if job is not None else (b"", "")
        args = [*self._lease_args(lease), name, num_arg(tick), rows, specials]
        return bool(self._run("fire_schedule", args, memo=True))

    def prune(self, older_than: float) -> int:
        total = 0
        while True:
            deleted, more = self._run("prune", [num_arg(older_than), PRUNE_BATCH], memo=True)
            total += int(deleted)
            if not more:
                return total
