"""The PostgreSQL store's worker claims: ``start_jobs``, ``complete``, and the fast paths
``complete_and_start`` (both in one statement: one round trip) and ``grant_claims`` (the
leader's claim grant that a start fills free slots under)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from rota.core.errors import LeaseLost
from rota.core.model import JobRecord, Lease
from rota.core.outcomes import Outcome
from rota.store.fast_paths import PlainFastPaths
from rota.store.postgres.codec import job_from_row
from rota.store.postgres.connection import Conn, PostgresConnection
from rota.store.postgres.queries import QUERIES

NO_OUTCOMES: dict[str, Any] = {
    "ids": [],
    "tokens": [],
    "kinds": [],
    "results": [],
    "errors": [],
    "tracebacks": [],
    "delays": [],
    "cut_shorts": [],
}


class PostgresClaims(PostgresConnection, PlainFastPaths):
    """What a worker node calls to report and claim, and the leader's claim grant: one
    statement (``complete_and_start`` in ``queries/worker.sql``) does all three, its
    halves left empty when not wanted (no outcomes; ``limit`` 0)."""

    grants_claims = True

    def start_jobs(self, node_id: str, limit: int, lease_ttl: float) -> list[JobRecord]:
        if limit <= 0:
            return []
        params = {**NO_OUTCOMES, **self._start_params(node_id, limit, lease_ttl, False)}
        tries = 0

        def op(conn: Conn) -> list[Any]:
            nonlocal tries
            tries += 1
            return self._start_rows(conn, params, tries > 1)

        return started_jobs(self._run(op, idempotent=True))

    def complete(self, outcomes: Sequence[Outcome]) -> list[bool]:
        if not outcomes:
            return []
        params = {**self._complete_params(outcomes), **self._start_params("", 0, 0.0, False)}
        # idempotent: a retried report of an attempt that ended with it is accepted again
        rows = self._all("complete_and_start", params, idempotent=True)
        return self._accepted(outcomes, rows[0][0])

    def complete_and_start(
        self, outcomes: Sequence[Outcome], node_id: str, limit: int, lease_ttl: float
    ) -> tuple[list[bool], list[JobRecord]]:
        """``complete`` then ``start_jobs`` in one statement: one round trip, one
        transaction. The scheduler is woken only by what needs it (see the statement)."""
        if not outcomes:
            return [], self.start_jobs(node_id, limit, lease_ttl)
        if limit <= 0:
            return self.complete(outcomes), []
        done = self._complete_params(outcomes)
        start = self._start_params(node_id, limit, lease_ttl, True)
        tries = 0

        def op(conn: Conn) -> tuple[list[str], list[Any]]:
            nonlocal tries
            tries += 1
            if tries > 1:  # the first try may have committed: the retry-safe way, in two
                no_start = {**done, **self._start_params("", 0, 0.0, False)}
                rows = conn.execute(QUERIES["complete_and_start"], no_start).fetchall()
                return rows[0][0], self._start_rows(conn, {**NO_OUTCOMES, **start}, True)
            rows = conn.execute(QUERIES["complete_and_start"], {**done, **start}).fetchall()
            return rows[0][0], [row[1:] for row in rows if row[1] is not None]

        accepted, started = self._run(op, idempotent=True)
        return self._accepted(outcomes, accepted), started_jobs(started)

    def grant_claims(self, lease: Lease, grants: Mapping[str, Sequence[str]]) -> None:
        params = {
            "lease_name": lease.name,
            "holder": lease.holder,
            "token": lease.token,
            "node_ids": list(grants),
            "queues": [orjson.dumps(list(q)).decode() for q in grants.values()],
        }
        if not self._one("grant_claims", params)[0]:
            raise LeaseLost(f"lease {lease.name!r} (token {lease.token}) is no longer held")

    # ---- helpers -------------------------------------------------------------------
    def _start_params(
        self, node_id: str, limit: int, lease_ttl: float, quiet: bool
    ) -> dict[str, Any]:
        return {
            "node_id": node_id,
            "quiet": quiet,
            "pending_channel": self.pending_channel,
            "done_channel": self.done_channel,
            "limit": int(limit),
            "ttl": float(lease_ttl),
            "keep": self.attempt_history,
            "claim": os.urandom(8).hex(),  # what a retry looks for (claimed_jobs)
        }

    @staticmethod
    def _start_rows(conn: Conn, params: dict[str, Any], retry: bool) -> list[Any]:
        """Run ``start_jobs``. A retry after a dropped connection (the first try may have
        committed and lost its reply) returns what that try started, if it did, instead of
        starting more jobs while those would wait for their lease to run out."""
        if retry:
            found = conn.execute(QUERIES["claimed_jobs"], params).fetchall()
            if found:
                return found
        rows = conn.execute(QUERIES["complete_and_start"], params).fetchall()
        return [row[1:] for row in rows if row[1] is not None]

    @staticmethod
    def _complete_params(outcomes: Sequence[Outcome]) -> dict[str, Any]:
        return {
            "ids": [o.job_id for o in outcomes],
            "tokens": [o.token for o in outcomes],
            "kinds": [o.kind.value for o in outcomes],
            "results": [o.result for o in outcomes],
            "errors": [o.error for o in outcomes],
            "tracebacks": [o.traceback for o in outcomes],
            "delays": [float(max(0.0, o.retry_delay)) for o in outcomes],
            "cut_shorts": [o.cut_short for o in outcomes],
        }

    def _accepted(self, outcomes: Sequence[Outcome], ids: list[str]) -> list[bool]:
        """Per outcome, whether the statement (which accepted ``ids``) accepted it."""
        accepted = set(ids)
        first: dict[str, tuple[int, str]] = {}  # job id -> the first (token, kind) of the batch
        out = []
        for o in outcomes:  # a repeated report is the same report; a conflicting one is not
            key = first.setdefault(o.job_id, (o.token, o.kind.value))
            out.append(o.job_id in accepted and key == (o.token, o.kind.value))
        refused = [i for i, ok in enumerate(out) if not ok]
        if refused:  # recorded meanwhile by a concurrent copy of the same report?
            again = {
                "ids": [outcomes[i].job_id for i in refused],
                "tokens": [outcomes[i].token for i in refused],
                "kinds": [outcomes[i].kind.value for i in refused],
            }
            for (ord_,) in self._all("attempts_ended_as", again, idempotent=True):
                out[refused[int(ord_) - 1]] = True
        return out


def started_jobs(rows: list[Any]) -> list[JobRecord]:
    """The records of started jobs, in the order they run (priority, then FIFO)."""
    jobs = [job_from_row(row) for row in rows]
    jobs.sort(key=lambda j: (-j.priority, j.seq))
    return jobs
