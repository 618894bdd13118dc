"""The embedded SQLite store: WAL mode, ``BEGIN IMMEDIATE`` for every write, statements in
``queries/*.sql``. Many processes on one machine share one database file. This module is
the store class by role; ``connection.py`` opens the file, runs write transactions, waits
for other connections' commits and turns sqlite3 errors into ``StoreError``; ``codec.py``
converts rows and records."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from rota.core.errors import InvalidOption, LeaseLost, SubmitError
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
    ScheduleRecord,
)
from rota.core.outcomes import Outcome, OutcomeKind
from rota.core.states import FAILED_STATES, FINAL_STATES, JobState, after_parents
from rota.store.contract import Store
from rota.store.fast_paths import PlainFastPaths
from rota.store.sqlite.codec import (
    job_from_row,
    job_insert_params,
    json_text,
    node_spec_from_json,
    node_spec_to_json,
    pending_from_row,
    started_jobs,
)
from rota.store.sqlite.connection import QUERIES, SQLiteConnection, raises_store_errors

SPEC_CACHE = 16384  # decoded node specs kept for list_nodes


@raises_store_errors
class SQLiteStore(SQLiteConnection, PlainFastPaths, Store):
    """Store in one SQLite file (``sqlite:///path``)."""

    # ---- producers and operators ---------------------------------------------------
    def submit(self, jobs: Sequence[NewJob]) -> list[str]:
        with self._write() as cur:
            return self._insert(cur, self._now(cur), jobs)

    def _insert(self, cur: sqlite3.Cursor, now: float, jobs: Sequence[NewJob]) -> list[str]:
        """Store ``jobs`` inside the caller's write transaction (see ``submit``)."""
        if any(job.uses_flow for job in jobs):
            return self._insert_flow(cur, now, jobs)
        rows = [job_insert_params(job, now, None) for job in jobs]
        self._insert_rows(cur, QUERIES["insert_job"], rows)
        return [job.id for job in jobs]

    def _insert_rows(self, cur: sqlite3.Cursor, query: str, rows: list[dict[str, Any]]) -> None:
        try:
            cur.executemany(query, rows)
        except sqlite3.IntegrityError as exc:  # the caller rolls back: nothing is stored
            raise SubmitError(f"a job with one of these ids is already stored ({exc})") from None

    def _insert_flow(self, cur: sqlite3.Cursor, now: float, jobs: Sequence[NewJob]) -> list[str]:
        """Submit with uniqueness and dependencies: a job whose unique key is held by an
        unfinished job gives that job's id instead (a child naming it then depends on that
        job); a child's parents must be stored or earlier in the batch; edges go to
        ``job_deps`` and parents are flagged ``has_children = 1`` (one final already is
        then picked up by the next ``resolve_dependencies``)."""
        returned: list[str] = []
        rows: list[dict[str, Any]] = []
        batch: set[str] = set()  # ids stored by this batch so far
        instead: dict[str, str] = {}  # id of a job not stored (unique) -> the id returned
        keys: dict[str, str] = {}  # unique keys taken by this batch -> job id
        known: dict[str, bool] = {}  # whether a parent not in the batch is stored
        taken: list[dict[str, Any]] = []
        edges: list[tuple[str, str]] = []
        for job in jobs:
            key = job.unique_key
            if key is not None:
                holder = keys.get(key)
                if holder is None:
                    holder = self._unique_holder(cur, now, key)
                if holder is not None:
                    returned.append(holder)
                    instead[job.id] = holder
                    continue
                keys[key] = job.id
                expires = None if job.unique_for is None else now + job.unique_for
                taken.append({"key": key, "job_id": job.id, "expires_at": expires})
            parents = tuple(dict.fromkeys(instead.get(p, p) for p in job.depends_on))
            for parent in parents:
                if parent not in batch:
                    if parent not in known:
                        known[parent] = cur.execute(QUERIES["job_exists"], (parent,)).fetchone()[0]
                    if not known[parent]:
                        raise InvalidOption(
                            f"job {job.id} depends on unknown job {parent!r}: a parent must "
                            "be stored already or come earlier in the same submit"
                        )
                edges.append((parent, job.id))
            rows.append(job_insert_params(job, now, parents))
            batch.add(job.id)
            returned.append(job.id)
        self._insert_rows(cur, QUERIES["insert_flow_job"], rows)
        if taken:
            cur.executemany(QUERIES["take_unique"], taken)
        if edges:
            cur.executemany(QUERIES["insert_edge"], edges)
            cur.executemany(
                QUERIES["mark_parent"], [(p,) for p in dict.fromkeys(p for p, _ in edges)]
            )
        return returned

    def _unique_holder(self, cur: sqlite3.Cursor, now: float, key: str) -> str | None:
        """The unfinished, unexpired job holding ``key``, if any."""
        row = cur.execute(QUERIES["unique_holder"], (key,)).fetchone()
        if row is None or row[1] is None or JobState(row[1]) in FINAL_STATES:
            return None
        if row[2] is not None and now >= row[2]:
            return None
        holder: str = row[0]
        return holder

    def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord]:
        ids = list(job_ids)
        rows = self.db.execute(QUERIES["get_jobs"], (json_text(ids),))
        found = {row[0]: job_from_row(row) for row in rows}
        return [found[i] for i in ids if i in found]

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        task: str | None = None,
        node_id: str | None = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        params = {
            "state": state.value if state else None,
            "queue": queue,
            "task": task,
            "node_id": node_id,
            "limit": limit,
        }
        return [job_from_row(r) for r in self.db.execute(QUERIES["list_jobs"], params)]

    def count_jobs(self) -> dict[tuple[str, JobState], int]:
        return {(q, JobState(s)): n for q, s, n in self.db.execute(QUERIES["count_jobs"])}

    def job_attempts(self, job_id: str) -> list[AttemptRecord]:
        return [AttemptRecord(*row) for row in self.db.execute(QUERIES["job_attempts"], (job_id,))]

    def cancel(self, job_id: str) -> JobState | None:
        with self._write() as cur:
            now = self._now(cur)
            cur.execute(QUERIES["cancel_waiting"], {"id": job_id, "now": now})
            cur.execute(QUERIES["cancel_running"], {"id": job_id})
            row = cur.execute(QUERIES["job_state"], (job_id,)).fetchone()
        return JobState(row[0]) if row else None

    def retry_dead(self, job_ids: Sequence[str]) -> int:
        with self._write() as cur:
            now = self._now(cur)
            cur.executemany(QUERIES["retry_dead"], [{"id": i, "now": now} for i in job_ids])
            return max(cur.rowcount, 0)

    # ---- worker nodes --------------------------------------------------------------
    def register_node(self, spec: NodeSpec) -> None:
        with self._write() as cur:
            now = self._now(cur)
            params = {"id": spec.id, "name": spec.name, "spec": node_spec_to_json(spec), "now": now}
            cur.execute(QUERIES["register_node"], params)

    def heartbeat(
        self, node_id: str, running: Sequence[tuple[str, int]], lease_ttl: float
    ) -> HeartbeatReply:
        with self._write() as cur:
            now = self._now(cur)
            row = cur.execute(QUERIES["node_state"], (node_id,)).fetchone()
            if row is None or row[0] == NodeState.DEAD:
                return HeartbeatReply(alive=False, lost=tuple(i for i, _ in running))
            cur.execute(QUERIES["touch_node"], {"id": node_id, "now": now})
            lost = []
            for job_id, token in running:
                params = {
                    "id": job_id,
                    "token": token,
                    "node_id": node_id,
                    "expires": now + lease_ttl,
                }
                if cur.execute(QUERIES["extend_lease"], params).rowcount == 0:
                    lost.append(job_id)
            cancel = tuple(r[0] for r in cur.execute(QUERIES["cancel_requested"], (node_id,)))
        return HeartbeatReply(alive=True, lost=tuple(lost), cancel=cancel)

    def set_node_state(self, node_id: str, state: NodeState) -> None:
        with self._write() as cur:
            now = self._now(cur)
            cur.execute(
                QUERIES["set_node_state"], {"id": node_id, "state": state.value, "now": now}
            )

    def list_nodes(self, states: Sequence[NodeState] | None = None) -> list[NodeRecord]:
        cur = self.db.cursor()
        cur.execute("BEGIN")  # one consistent snapshot of nodes and their load
        try:
            nodes = {
                r[0]: NodeRecord(
                    spec=self._node_spec(r[0], r[1]),
                    state=NodeState(r[2]),
                    registered_at=r[3],
                    heartbeat_at=r[4],
                )
                for r in cur.execute(QUERIES["list_nodes"])
                if states is None or r[2] in states
            }
            for node_id, state, count in cur.execute(QUERIES["node_counts"]):
                node = nodes.get(node_id)
                if node is not None:
                    if state == "assigned":
                        node.assigned = count
                    else:
                        node.running = count
            for node_id, name, total in cur.execute(QUERIES["node_usage"]):
                node = nodes.get(node_id)
                if node is not None:
                    node.used[name] = total
        finally:
            cur.execute("COMMIT")
        return list(nodes.values())

    def _node_spec(self, node_id: str, text: str) -> NodeSpec:
        """The decoded spec of a node, cached while its stored text stays the same (a
        scheduler lists every node each cycle; a spec only changes on registration)."""
        cached = self._specs.get(node_id)
        if cached is not None and cached[0] == text:
            return cached[1]
        spec = node_spec_from_json(text)
        if len(self._specs) >= SPEC_CACHE:  # nodes come and go: forget old ones
            self._specs.clear()
        self._specs[node_id] = (text, spec)
        return spec

    def start_jobs(self, node_id: str, limit: int, lease_ttl: float) -> list[JobRecord]:
        if limit <= 0 or not (
            self.db.execute(QUERIES["has_assigned"], (node_id,)).fetchone()[0]
            or self._claimable(self.db.cursor(), node_id, 1)
        ):
            return []  # nothing to start: no write transaction
        with self._write() as cur:
            rows = self._start(cur, self._now(cur), node_id, limit, lease_ttl)
        return started_jobs(rows)

    def complete(self, outcomes: Sequence[Outcome]) -> list[bool]:
        with self._write() as cur:
            return self._complete(cur, self._now(cur), outcomes)

    def complete_and_start(
        self, outcomes: Sequence[Outcome], node_id: str, limit: int, lease_ttl: float
    ) -> tuple[list[bool], list[JobRecord]]:
        """``complete(outcomes)``, then ``start_jobs(node_id, limit, lease_ttl)``, in one
        write transaction: a worker's report of finished jobs and its claim of the next ones
        cost one commit, and one wake-up of every waiter, instead of two."""
        if not outcomes:
            return [], self.start_jobs(node_id, limit, lease_ttl)
        with self._write() as cur:
            now = self._now(cur)
            accepted = self._complete(cur, now, outcomes)
            rows = self._start(cur, now, node_id, limit, lease_ttl) if limit > 0 else []
        return accepted, started_jobs(rows)

    def _start(
        self, cur: sqlite3.Cursor, now: float, node_id: str, limit: int, lease_ttl: float
    ) -> list[Any]:
        row = cur.execute(QUERIES["node_state"], (node_id,)).fetchone()
        if row is None or row[0] not in (NodeState.LIVE, NodeState.DRAINING):
            return []
        params = {"node_id": node_id, "limit": limit, "now": now, "expires": now + lease_ttl}
        rows = cur.execute(QUERIES["start_jobs"], params).fetchall()
        if len(rows) < limit and row[0] == NodeState.LIVE:  # then claims, under a grant
            seqs = self._claimable(cur, node_id, limit - len(rows), now)
            if seqs:
                rows += cur.execute(QUERIES["claim_jobs"], {**params, "seqs": json_text(seqs)})
        if rows:  # open each attempt (columns: id 0, attempts 6, node_id 16, token 17)
            keep = self.attempt_history
            opened = [
                {"id": r[0], "token": r[17], "attempt": r[6], "node_id": r[16], "now": now}
                for r in rows
            ]
            cur.executemany(QUERIES["open_attempt"], opened)
            old = [
                {"id": a["id"], "token": a["token"], "keep": keep}
                for a in opened
                if a["token"] > keep
            ]
            if old:
                cur.executemany(QUERIES["trim_attempts"], old)
        return rows

    def _claimable(
        self, cur: sqlite3.Cursor, node_id: str, want: int, now: float | None = None
    ) -> list[int]:
        """The seqs of up to ``want`` pending jobs the node may claim under a current grant:
        the head of the pending jobs in placement order, up to the first that is not plain
        or not of a granted queue (so no claim overtakes a job that needs placement)."""
        when = self._now(cur) if now is None else now
        grant = cur.execute(QUERIES["granted_queues"], {"node_id": node_id, "now": when})
        row = grant.fetchone()
        if row is None:
            return []
        queues = set(orjson.loads(row[0]))
        seqs = []
        for seq, queue, plain in cur.execute(QUERIES["pending_head"], {"limit": want}):
            if not plain or queue not in queues:
                break
            seqs.append(seq)
        return seqs

    def _complete(self, cur: sqlite3.Cursor, now: float, outcomes: Sequence[Outcome]) -> list[bool]:
        accepted = []
        execute = cur.execute
        succeeded = QUERIES["complete_succeeded"]
        for o in outcomes:
            if o.kind is OutcomeKind.SUCCEEDED:
                params = {"id": o.job_id, "token": o.token, "now": now, "result": o.result}
                execute(succeeded, params)
            elif o.kind is OutcomeKind.FAILED:
                params = {
                    "id": o.job_id,
                    "token": o.token,
                    "now": now,
                    "delay": max(o.retry_delay, 0.0),
                    "error": o.error,
                    "traceback": o.traceback,
                }
                execute(QUERIES["complete_failed"], params)
            else:
                state = JobState.DEAD if o.kind is OutcomeKind.FATAL else JobState.CANCELLED
                params = {
                    "id": o.job_id,
                    "token": o.token,
                    "now": now,
                    "state": state.value,
                    "error": o.error,
                    "traceback": o.traceback,
                }
                execute(QUERIES["complete_final"], params)
            ended = {"id": o.job_id, "token": o.token, "outcome": o.kind.value}
            if cur.rowcount == 1:
                ended.update(now=now, cut_short=o.cut_short, error=o.error, traceback=o.traceback)
                execute(QUERIES["close_attempt"], ended)
                accepted.append(True)
            else:  # a report retried after it committed is accepted again
                accepted.append(bool(execute(QUERIES["attempt_ended_as"], ended).fetchone()[0]))
        return accepted

    def release_jobs(self, node_id: str, jobs: Sequence[tuple[str, int]]) -> int:
        with self._write() as cur:
            now = self._now(cur)
            rows = [{"id": i, "token": t, "node_id": node_id, "now": now} for i, t in jobs]
            cur.executemany(QUERIES["close_released_attempt"], rows)
            cur.executemany(QUERIES["release_job"], rows)
            return max(cur.rowcount, 0)

    def wait_for_assignments(self, node_id: str, timeout: float) -> None:
        def ready() -> bool:
            return bool(self.db.execute(QUERIES["has_assigned"], (node_id,)).fetchone()[0])

        if not ready():
            self._wait_for_change(timeout, ready)

    # ---- scheduler -----------------------------------------------------------------
    def _lease_row(self, cur: sqlite3.Cursor, name: str) -> Lease | None:
        row = cur.execute(QUERIES["get_lease"], (name,)).fetchone()
        return Lease(*row) if row else None

    def _check_lease(self, cur: sqlite3.Cursor, lease: Lease, now: float) -> None:
        current = self._lease_row(cur, lease.name)
        if (
            current is None
            or current.token != lease.token
            or current.holder != lease.holder
            or current.expires_at <= now
        ):
            raise LeaseLost(f"lease {lease.name!r} token {lease.token} is no longer current")

    def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        with self._write() as cur:
            now = self._now(cur)
            current = self._lease_row(cur, name)
            params = {"name": name, "holder": holder, "now": now, "expires": now + ttl}
            if current is None:
                cur.execute(QUERIES["insert_lease"], params)
            elif current.holder == holder and current.expires_at > now:
                cur.execute(QUERIES["renew_lease"], {**params, "token": current.token})
            elif current.expires_at <= now:
                cur.execute(QUERIES["take_lease"], {**params, "token": current.token})
            else:
                return None
            return self._lease_row(cur, name)

    def adopt_lease(self, name: str, holder: str, token: int, ttl: float) -> Lease | None:
        with self._write() as cur:
            now = self._now(cur)
            params = {"name": name, "holder": holder, "token": token, "now": now}
            cur.execute(QUERIES["adopt_lease"], {**params, "expires": now + ttl})
            lease = self._lease_row(cur, name)
        return (
            lease if lease is not None and (lease.holder, lease.token) == (holder, token) else None
        )

    def release_lease(self, lease: Lease) -> None:
        with self._write() as cur:
            now = self._now(cur)
            params = {"name": lease.name, "holder": lease.holder, "token": lease.token, "now": now}
            cur.execute(QUERIES["release_lease"], params)

    def get_lease(self, name: str) -> Lease | None:
        cur = self.db.cursor()
        lease = self._lease_row(cur, name)
        return lease if lease is not None and lease.expires_at > self._now(cur) else None

    def promote_due(self, lease: Lease, limit: int) -> int:
        cur = self.db.cursor()
        now = self._now(cur)
        if not cur.execute(QUERIES["any_due"], {"now": now}).fetchone()[0]:
            self._check_lease(cur, lease, now)  # still fenced, but no write transaction
            return 0
        with self._write() as cur:
            now = self._now(cur)
            self._check_lease(cur, lease, now)
            return cur.execute(QUERIES["promote_due"], {"now": now, "limit": limit}).rowcount

    def reap(self, lease: Lease, failure_timeout: float) -> ReapReport:
        cur = self.db.cursor()
        now = self._now(cur)
        params = {"cutoff": now - failure_timeout, "now": now}
        if not cur.execute(QUERIES["any_to_reap"], params).fetchone()[0]:
            self._check_lease(cur, lease, now)  # still fenced, but no write transaction
            return ReapReport()
        with self._write() as cur:
            now = self._now(cur)
            self._check_lease(cur, lease, now)
            silent = [
                r[0]
                for r in cur.execute(QUERIES["silent_nodes"], {"cutoff": now - failure_timeout})
            ]
            for node_id in silent:
                cur.execute(QUERIES["set_node_state"], {"id": node_id, "state": "dead", "now": now})
            cur.execute(QUERIES["close_lost_attempts"], {"now": now})
            requeued = cur.execute(QUERIES["requeue_lost_assigned"]).rowcount
            cur.execute(QUERIES["cancel_lost_running"], {"now": now})
            dead_jobs = cur.execute(QUERIES["kill_lost_running"], {"now": now}).rowcount
            retried = cur.execute(QUERIES["retry_lost_running"], {"now": now}).rowcount
        return ReapReport(tuple(silent), requeued, retried, dead_jobs)

    def pending_jobs(self, limit: int, after: tuple[int, int] | None = None) -> list[PendingJob]:
        if after is None:
            rows = self.db.execute(QUERIES["pending_first"], {"limit": limit})
        else:
            params = {"limit": limit, "priority": after[0], "seq": after[1]}
            rows = self.db.execute(QUERIES["pending_after"], params)
        return [pending_from_row(r) for r in rows]

    def assign(self, lease: Lease, assignments: Sequence[Assignment]) -> int:
        with self._write() as cur:
            now = self._now(cur)
            self._check_lease(cur, lease, now)
            live = {r[0] for r in cur.execute(QUERIES["live_node_ids"])}
            rows = [(a.job_id, a.node_id) for a in assignments if a.node_id in live]
            if not rows:
                return 0
            cur.execute(QUERIES["assign_jobs"], {"batch": json_text(rows)})
            return max(cur.rowcount, 0)

    grants_claims = True

    def grant_claims(self, lease: Lease, grants: Mapping[str, Sequence[str]]) -> None:
        with self._write() as cur:
            self._check_lease(cur, lease, self._now(cur))
            cur.execute(QUERIES["clear_grants"])
            rows = [
                {
                    "node_id": node_id,
                    "queues": json_text(list(queues)),
                    "lease_name": lease.name,
                    "token": lease.token,
                }
                for node_id, queues in grants.items()
            ]
            cur.executemany(QUERIES["grant_claim"], rows)

    def wait_for_pending(self, timeout: float) -> None:
        self._wait_for_change(timeout, lambda: True)

    def put_stats(self, name: str, data: dict[str, Any]) -> None:
        with self._write() as cur:
            now = self._now(cur)
            cur.execute(QUERIES["put_stats"], {"name": name, "data": json_text(data), "now": now})

    def put_stats_once(self, name: str, data: dict[str, Any]) -> bool:
        with self._write() as cur:
            now = self._now(cur)
            params = {"name": name, "data": json_text(data), "now": now}
            if cur.execute(QUERIES["put_stats_once"], params).rowcount == 1:
                return True
            row = cur.execute(QUERIES["get_stats"], (name,)).fetchone()
        return row is not None and orjson.loads(row[0]) == data

    def get_stats(self, name: str) -> dict[str, Any] | None:
        row = self.db.execute(QUERIES["get_stats"], (name,)).fetchone()
        if row is None:
            return None
        data: dict[str, Any] = orjson.loads(row[0])
        return data

    # ---- workflows, periodic jobs and flow control --------------------------------
    def resolve_dependencies(self, lease: Lease, limit: int) -> int:
        cur = self.db.cursor()
        if limit <= 0 or not cur.execute(QUERIES["any_to_settle"]).fetchone()[0]:
            self._check_lease(cur, lease, self._now(cur))  # fenced, without a write
            return 0
        with self._write() as cur:
            now = self._now(cur)
            self._check_lease(cur, lease, now)
            done = [r[0] for r in cur.execute(QUERIES["parents_done"], {"limit": limit})]
            if done:  # their children wait in job_settle from now on
                cur.execute(QUERIES["queue_children"], (json_text(done),))
                cur.execute(QUERIES["parents_queued"], (json_text(done),))
            queued: list[int] = []
            parents: dict[str, list[tuple[str, JobState]]] = {}
            for r, child, state, parent, parent_state in cur.execute(
                QUERIES["settle_batch"], {"limit": limit}
            ):
                if not queued or queued[-1] != r:
                    queued.append(r)
                if state != JobState.WAITING:
                    continue  # gone, cancelled or settled already
                # A parent that is gone had succeeded: prune keeps parents while children
                # are queued, and a failed parent fails its children when they are.
                found = parents.setdefault(child, [])
                if parent is not None:
                    found.append((parent, JobState(parent_state or JobState.SUCCEEDED)))
            if queued:
                cur.execute(QUERIES["unqueue_settle"], (json_text(queued),))
            ready: list[str] = []
            failed: list[dict[str, Any]] = []
            for child, found in parents.items():
                outcome = after_parents([s for _, s in found])
                if outcome is JobState.PENDING:
                    ready.append(child)
                elif outcome is JobState.UPSTREAM_FAILED:
                    culprit, st = next((p, s) for p, s in found if s in FAILED_STATES)
                    error = f"upstream failed: parent {culprit} is {st.value}"
                    failed.append({"id": child, "now": now, "error": error})
            moved = 0
            if ready:
                moved += cur.execute(QUERIES["parents_succeeded"], (json_text(ready),)).rowcount
            if failed:
                cur.executemany(QUERIES["upstream_failed"], failed)
                moved += max(cur.rowcount, 0)
        return moved

    def concurrency_usage(self, keys: Sequence[str]) -> dict[str, int]:
        if not keys:
            return {}
        rows = self.db.execute(QUERIES["concurrency_usage"], (json_text(list(keys)),))
        return {key: count for key, count in rows}

    def put_schedules(self, schedules: Sequence[ScheduleRecord]) -> None:
        with self._write() as cur:
            cur.executemany(
                QUERIES["put_schedule"], [{"name": s.name, "spec": s.spec} for s in schedules]
            )

    def delete_schedules(self, names: Sequence[str]) -> int:
        with self._write() as cur:
            cur.executemany(QUERIES["delete_schedule"], [(n,) for n in names])
            return max(cur.rowcount, 0)

    def list_schedules(self) -> list[ScheduleRecord]:
        return [ScheduleRecord(n, s, t) for n, s, t in self.db.execute(QUERIES["list_schedules"])]

    def fire_schedule(self, lease: Lease, name: str, tick: float, job: NewJob | None) -> bool:
        with self._write() as cur:
            now = self._now(cur)
            self._check_lease(cur, lease, now)
            if job is not None and cur.execute(QUERIES["job_exists"], (job.id,)).fetchone()[0]:
                return False  # that tick's job is stored already: never overwrite it
            if cur.execute(QUERIES["fire_schedule"], {"name": name, "tick": tick}).rowcount == 0:
                return False
            if job is not None:
                self._insert(cur, now, [job])
            return True

    def prune(self, older_than: float) -> int:
        with self._write() as cur:
            cutoff = self._now(cur) - older_than
            cur.execute(QUERIES["prune_edges"], {"cutoff": cutoff})
            cur.execute(QUERIES["prune_unique"], {"cutoff": cutoff})
            cur.execute(QUERIES["prune_attempts"], {"cutoff": cutoff})
            deleted = cur.execute(QUERIES["prune_jobs"], {"cutoff": cutoff}).rowcount
            cur.execute(QUERIES["prune_nodes"], {"cutoff": cutoff})
        return deleted
