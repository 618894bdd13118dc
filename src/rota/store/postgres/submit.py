"""How the PostgreSQL store writes a batch of new jobs: one ``submit`` statement for plain
jobs; unique keys, parents and ``submit_flow`` in one transaction otherwise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import psycopg

from rota.core.errors import InvalidOption
from rota.core.model import (
    NewJob,
)
from rota.core.states import FINAL_STATES, JobState
from rota.store.postgres.codec import json_text
from rota.store.postgres.queries import QUERIES


def submit_params(jobs: Sequence[NewJob], pending_channel: str) -> dict[str, Any]:
    return {
        "ids": [j.id for j in jobs],
        "tasks": [j.task for j in jobs],
        "queues": [j.queue for j in jobs],
        "payloads": [j.payload for j in jobs],
        "priorities": [j.priority for j in jobs],
        "max_attempts": [j.max_attempts for j in jobs],
        "timeouts": [j.timeout for j in jobs],
        "resources": [json_text(j.resources) for j in jobs],
        "labels": [json_text(j.labels) for j in jobs],
        "affinity": [json_text(j.affinity) for j in jobs],
        "delays": [float(j.delay) for j in jobs],
        "etas": [j.eta for j in jobs],
        "backoff_bases": [float(j.backoff_base) for j in jobs],
        "backoff_maxes": [float(j.backoff_max) for j in jobs],
        "allocs": [j.alloc.to_json() for j in jobs],
        "pending_channel": pending_channel,
    }


def write_jobs(cur: psycopg.Cursor[Any], jobs: Sequence[NewJob], pending_channel: str) -> list[str]:
    """Store ``jobs`` with ``cur``; returns the ids in their place. A batch without flow
    features is the one ``submit`` statement; otherwise the caller must have opened a
    transaction (several statements: unique keys, parents, then the insert)."""
    if not any(j.uses_flow for j in jobs):
        params = submit_params(jobs, pending_channel)
        cur.execute(QUERIES["submit"], params)
        return list(params["ids"])
    return write_flow(cur, jobs, pending_channel)


def claim_unique_keys(cur: psycopg.Cursor[Any], jobs: Sequence[NewJob]) -> dict[str, str]:
    """Apply ``unique_key``: returns ``{id of a job not to store: id returned instead}``.
    Within the batch the first job of a key wins; across batches the key's row in
    ``unique_keys`` is taken (or locked, then taken over if its holder is over)."""
    alias: dict[str, str] = {}
    first: dict[str, NewJob] = {}
    for j in jobs:
        if j.unique_key is not None:
            winner = first.setdefault(j.unique_key, j)
            if winner is not j:
                alias[j.id] = winner.id
    if not first:
        return alias

    def params(keys: list[str]) -> dict[str, Any]:
        return {
            "keys": keys,
            "job_ids": [first[k].id for k in keys],
            "unique_fors": [first[k].unique_for for k in keys],
        }

    rows = cur.execute(QUERIES["claim_unique_keys"], params(sorted(first))).fetchall()
    held = {key: holder for key, holder in rows if holder != first[key].id}
    if held:
        keys = sorted(held)
        taken = {row[0] for row in cur.execute(QUERIES["take_unique_keys"], params(keys))}
        for key in keys:
            if key not in taken:
                alias[first[key].id] = held[key]
    return alias


def write_flow(cur: psycopg.Cursor[Any], jobs: Sequence[NewJob], pending_channel: str) -> list[str]:
    alias = claim_unique_keys(cur, jobs)

    def final(job_id: str) -> str:
        while job_id in alias:
            job_id = alias[job_id]
        return job_id

    stored = [j for j in jobs if j.id not in alias]
    stored_ids = {j.id for j in stored}
    earlier: set[str] = set()  # ids of the batch seen so far (stored or not)
    parents: list[tuple[str, ...]] = []  # per stored job, after aliasing
    outside: dict[str, list[str]] = {}  # parent not stored by this batch -> children
    in_batch: set[str] = set()  # stored jobs that later stored jobs depend on
    for j in jobs:
        if j.id not in alias:
            mine = tuple(dict.fromkeys(final(p) if p in earlier else p for p in j.depends_on))
            for p in mine:
                if p in stored_ids and p in earlier:
                    in_batch.add(p)
                else:
                    outside.setdefault(p, []).append(j.id)
            parents.append(mine)
        earlier.add(j.id)
    settle: list[str] = []
    if outside:
        rows = cur.execute(QUERIES["lock_parents"], {"ids": sorted(outside)}).fetchall()
        states = {job_id: JobState(state) for job_id, state in rows}
        missing = [p for p in outside if p not in states]
        if missing:
            raise InvalidOption(
                "depends_on names unknown job(s) (a parent must be stored already or come"
                f" earlier in the batch): {', '.join(sorted(missing))}"
            )
        for p, children in outside.items():
            if states[p] in FINAL_STATES:
                settle.extend(children)
    if stored:
        params = submit_params(stored, pending_channel)
        params.update(
            depends_on=[orjson.dumps(ps).decode() if ps else None for ps in parents],
            pass_results=[j.pass_results for j in stored],
            workflow_ids=[j.workflow_id for j in stored],
            unique_keys=[j.unique_key for j in stored],
            concurrency_keys=[j.concurrency_key for j in stored],
            concurrency_limits=[j.concurrency_limit for j in stored],
            rate_limits=[j.rate_limit for j in stored],
            has_children=[True if j.id in in_batch else None for j in stored],
            settle_ids=settle,
        )
        cur.execute(QUERIES["submit_flow"], params)
    return [final(j.id) for j in jobs]
