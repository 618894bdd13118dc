"""The JSON API under ``/api/`` (described by ``/api/openapi.json``).

Every endpoint calls the synchronous store in a worker thread, with that thread's own
store connection (see :class:`StorePool`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rota.core.model import AttemptRecord, JobRecord
from rota.core.states import JobState, parse_state
from rota.status import collect, schedule_rows
from rota.store import Store

T = TypeVar("T")
MAX_LIMIT = 1000
BATCH = 5000  # dead jobs retried per round trip by retry-dead


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=str)


def error(status: int, message: str) -> ORJSONResponse:
    return ORJSONResponse({"error": message}, status_code=status)


class StorePool:
    """A few store connections shared by the request threads: each call checks one out,
    so a connection is used by one thread at a time (as stores require), and at most
    ``size`` store calls run at once."""

    def __init__(self, open_store: Callable[[], Store], size: int = 8) -> None:
        self._open = open_store
        self.size = size
        self._idle: list[Store] = []
        self._lock = threading.Lock()
        self._closed = False
        self._limiter: anyio.CapacityLimiter | None = None

    def _checkout(self) -> Store:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._open()

    def _checkin(self, store: Store) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self.size:
                self._idle.append(store)
                return
        with contextlib.suppress(Exception):
            store.close()

    def call(self, fn: Callable[[Store], T]) -> T:
        """Run ``fn`` with a pooled connection in this thread (blocking)."""
        store = self._checkout()
        try:
            result = fn(store)
        except Exception:
            with contextlib.suppress(Exception):  # it may be broken: do not reuse it
                store.close()
            raise
        self._checkin(store)
        return result

    async def run(self, fn: Callable[[Store], T]) -> T:
        """Run ``fn`` with a pooled connection in a worker thread."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.size)
        return await anyio.to_thread.run_sync(self.call, fn, limiter=self._limiter)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            stores, self._idle = self._idle, []
        for store in stores:
            with contextlib.suppress(Exception):
                store.close()


def job_summary(job: JobRecord) -> dict[str, Any]:
    """A job for lists: everything but the traceback and the result."""
    d = job.to_dict()
    d.pop("traceback", None)
    d.pop("result", None)
    if d.get("error") and len(d["error"]) > 300:
        d["error"] = d["error"][:300] + "…"
    return d


def job_detail(
    job: JobRecord,
    parents: list[JobRecord] | None = None,
    attempts: list[AttemptRecord] | None = None,
) -> dict[str, Any]:
    """A job for its page; ``parents``: the stored jobs among its ``depends_on``, whose
    task and state are shown beside each parent (a parent pruned since has state null);
    ``attempts``: its attempt history (``Store.job_attempts``), oldest first."""
    d = job.to_dict()
    d["attempt_history"] = [a.to_dict() for a in attempts or ()]
    found = {p.id: p for p in parents or ()}
    d["parents"] = [
        {
            "id": pid,
            "task": found[pid].task if pid in found else None,
            "state": found[pid].state.value if pid in found else None,
        }
        for pid in job.depends_on
    ]
    created, started, finished = job.created_at, job.started_at, job.finished_at
    d["timings"] = {
        "waited": (started - created) if started is not None else None,
        "ran": (finished - started) if finished is not None and started is not None else None,
        "total": (finished - created) if finished is not None else None,
    }
    d["payload_ok"] = True
    try:
        job.arguments()
    except Exception:
        d["payload_ok"] = False
    return d


def read_detail(store: Store, job: JobRecord) -> dict[str, Any]:
    """:func:`job_detail` with the job's parents and attempts read from ``store``."""
    parents = store.get_jobs(list(job.depends_on)) if job.depends_on else []
    return job_detail(job, parents, store.job_attempts(job.id))


def build_routes(
    pool: StorePool,
    history_snapshot: Callable[[float | None], Any],
    snapshot: Callable[[Store], dict[str, Any]] = collect,
) -> list[Route]:
    async def status(request: Request) -> Response:
        return ORJSONResponse(await pool.run(snapshot))

    async def history(request: Request) -> Response:
        raw = request.query_params.get("since")
        try:
            since = float(raw) if raw else None
        except ValueError:
            return error(400, "since must be a number (unix seconds)")
        return ORJSONResponse(history_snapshot(since))

    async def list_jobs(request: Request) -> Response:
        q = request.query_params
        try:
            state = parse_state(q["state"]) if q.get("state") else None
        except ValueError as exc:
            return error(400, str(exc))
        try:
            limit = int(q.get("limit") or 100)
        except ValueError:
            return error(400, "limit must be an integer")
        if not 1 <= limit <= MAX_LIMIT:
            return error(400, f"limit must be between 1 and {MAX_LIMIT}")
        found = await pool.run(
            lambda s: s.list_jobs(
                state=state,
                task=q.get("task") or None,
                queue=q.get("queue") or None,
                node_id=q.get("node") or None,
                limit=limit,
            )
        )
        return ORJSONResponse({"jobs": [job_summary(j) for j in found], "limit": limit})

    async def get_job(request: Request) -> Response:
        job_id = request.path_params["job_id"]

        def read(store: Store) -> dict[str, Any] | None:
            job = store.get_job(job_id)
            return None if job is None else read_detail(store, job)

        found = await pool.run(read)
        if found is None:
            return error(404, "no such job")
        return ORJSONResponse(found)

    async def retry_job(request: Request) -> Response:
        job_id = request.path_params["job_id"]

        def act(store: Store) -> tuple[int, JobRecord | None, dict[str, Any] | None]:
            before = store.get_job(job_id)
            if before is None or before.state is not JobState.DEAD:
                return 0, before, None
            n = store.retry_dead([job_id])
            after = store.get_job(job_id)
            return n, after or before, None if after is None else read_detail(store, after)

        retried, latest, detail = await pool.run(act)
        if latest is None:
            return error(404, "no such job")
        if not retried or detail is None:
            state = latest.state.value
            return error(409, f"only dead jobs can be retried (this one is {state})")
        return ORJSONResponse({"retried": retried, "job": detail})

    async def cancel_job(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        state = await pool.run(lambda s: s.cancel(job_id))
        if state is None:
            return error(404, "no such job")
        return ORJSONResponse({"id": job_id, "state": state.value})

    async def retry_dead(request: Request) -> Response:
        body: Any = {}
        raw = await request.body()
        if raw.strip():
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return error(400, "body must be JSON")
        if not isinstance(body, dict):
            return error(400, "body must be a JSON object")
        ids = body.get("ids")
        if ids is not None and (
            not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)
        ):
            return error(400, "ids must be a list of job ids")
        queue, task = body.get("queue"), body.get("task")
        if not all(v is None or isinstance(v, str) for v in (queue, task)):
            return error(400, "queue and task must be strings")

        def act(store: Store) -> int:
            if ids is not None:
                return store.retry_dead(ids) if ids else 0
            total = 0
            while True:  # in batches: retried jobs leave the dead state
                dead = store.list_jobs(state=JobState.DEAD, queue=queue, task=task, limit=BATCH)
                done = store.retry_dead([j.id for j in dead]) if dead else 0
                total += done
                if done == 0 or len(dead) < BATCH:
                    return total

        return ORJSONResponse({"retried": await pool.run(act)})

    async def schedules(request: Request) -> Response:
        return ORJSONResponse({"schedules": await pool.run(schedule_rows)})

    return [
        Route("/api/status", status, methods=["GET"]),
        Route("/api/history", history, methods=["GET"]),
        Route("/api/jobs", list_jobs, methods=["GET"]),
        Route("/api/jobs/retry-dead", retry_dead, methods=["POST"]),
        Route("/api/jobs/{job_id}", get_job, methods=["GET"]),
        Route("/api/jobs/{job_id}/retry", retry_job, methods=["POST"]),
        Route("/api/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
        Route("/api/schedules", schedules, methods=["GET"]),
    ]
