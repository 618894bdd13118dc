"""The Redis store: every state change is one Lua script (``scripts.lua``, whose
header documents the key layout), run with Redis' own clock (``TIME``). The scripts are
one Redis function library (Redis 7 or newer), loaded once and called with ``FCALL``.

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

import asyncio
import hashlib
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from importlib.resources import files
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import redis
import redis.asyncio
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from rota.core.backoff import DEFAULT_BASE, DEFAULT_MAX
from rota.core.errors import InvalidOption, LeaseLost, StoreError, SubmitError
from rota.core.model import (
    Assignment,
    HeartbeatReply,
    JobRecord,
    Lease,
    NewJob,
    NodeRecord,
    NodeSpec,
    NodeState,
    Outcome,
    PendingJob,
    ReapReport,
    ScheduleRecord,
)
from rota.core.states import FINAL_STATES, JobState
from rota.store.contract import AsyncClaims, Store

log = logging.getLogger("rota.store.redis")

T = TypeVar("T")

DEFAULT_PREFIX = "rota"
DEFAULT_RESULT_TTL = 7 * 24 * 3600.0
SOCKET_TIMEOUT = 30.0  # seconds; a blocking wait is cut into chunks well under this
WAIT_CHUNK = 10.0
WATCH_GRACE = 30.0  # seconds a result watch outlives its waiter's timeout
PURGE_PER_REAP = 2000  # expired final jobs whose index entries one reap removes
PRUNE_BATCH = 1000
MEMBERS_KEPT = 100_000  # pending members remembered for assign (see RedisStore.assign)
_FINAL = frozenset(s.value for s in FINAL_STATES)
_PREFIX_RE = re.compile(r"^[^{}\s]{1,100}$")
_MARKER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load_library() -> tuple[str, str]:
    """``scripts.lua`` as one Redis function library: its name (``rota_`` and a hash
    of the file, so versions never clash) and its code for ``FUNCTION LOAD`` (the ``lib``
    section once, then each script registered as the function ``<name>_<script>``, which
    starts with ``begin(keys, args)``)."""
    text = files("rota.store.redis").joinpath("scripts.lua").read_text(encoding="utf-8")
    parts = _MARKER.split(text)  # [header, name1, body1, name2, body2, ...]
    bodies = dict(zip(parts[1::2], parts[2::2], strict=True))
    lib = bodies.pop("lib")
    name = "rota_" + hashlib.sha1(text.encode()).hexdigest()[:12]
    code = [f"#!lua name={name}", lib]
    for script, body in bodies.items():
        code.append(
            f"redis.register_function('{name}_{script}', function(keys, args)\n"
            f"begin(keys, args)\n{body}\nend)\n"
        )
    return name, "\n".join(code)


LIBRARY, LIBRARY_CODE = load_library()
LOAD_LIBRARY = ("FUNCTION", "LOAD", "REPLACE", LIBRARY_CODE)


def _missing_library(error: Exception) -> bool:
    """Whether ``error`` says the library is not loaded (a new or restarted Redis)."""
    return "Function not found" in str(error)


def _exchange(conn: Any, packed: Any, *, again: bool = True) -> Any:
    """Send one packed command on a redis-py connection and read its reply. A connection
    closed while idle (killed, a server timeout) is replaced and the command sent once more
    at once, as the pool does on checkout; after that the caller's backoff takes over."""
    try:
        conn.send_packed_command(packed, check_health=False)
        return conn.read_response()
    except ResponseError:  # an error reply: the connection is in step
        raise
    except RedisConnectionError:
        conn.disconnect()
        if not again:
            raise
    except BaseException:  # a reply may be left on the wire: start afresh
        conn.disconnect()
        raise
    return _exchange(conn, packed, again=False)


def function_name(script: str) -> str:
    """The Redis function that runs script ``script`` (``FCALL`` it)."""
    return f"{LIBRARY}_{script}"


class _suppress:
    """``contextlib.suppress(Exception)`` for cleanup on an event loop."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], Exception)  # type: ignore[arg-type]


def parse_url(url: str) -> tuple[str, str, float]:
    """``(connection URL, prefix, result_ttl)``: our own query parameters removed."""
    parts = urlsplit(url)
    prefix, ttl = DEFAULT_PREFIX, DEFAULT_RESULT_TTL
    rest = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "prefix":
            prefix = value
        elif key == "result_ttl":
            try:
                ttl = float(value)
            except ValueError:
                ttl = -1.0
            if not (math.isfinite(ttl) and ttl >= 0):
                raise InvalidOption(f"result_ttl must be a number of seconds >= 0, not {value!r}")
        else:
            rest.append((key, value))
    if not _PREFIX_RE.fullmatch(prefix):
        raise InvalidOption(f"Redis key prefix {prefix!r} must be 1-100 chars without braces")
    return urlunsplit(parts._replace(query=urlencode(rest))), prefix, ttl


def _f(text: str | None) -> float | None:
    return None if text is None else float(text)


def _j(text: str | None) -> Any:
    return orjson.loads(text) if text else {}


def _reserve_args(slots: Mapping[str, Sequence[str]]) -> list[str]:
    """``reserve_slots``' queue, node ids pairs (ids joined by NUL; empty lists left out)."""
    out: list[str] = []
    for queue, nodes in slots.items():
        if nodes:
            out += (queue, "\0".join(nodes))
    return out


def _num(x: float) -> str:
    return repr(float(x))


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    it = iter(flat)
    return dict(zip(it, it, strict=True))


def _outcome_rows(outcomes: Sequence[Outcome]) -> bytes:
    """``complete``'s argument: JSON rows [id, token, kind, result, error, traceback,
    retry_delay] ("" = none)."""
    return orjson.dumps(
        [
            [
                o.job_id,
                o.token,
                o.kind.value,
                o.result or "",
                o.error or "",
                o.traceback or "",
                _num(o.retry_delay),
            ]
            for o in outcomes
        ]
    )


def _nodes(rows: Any, states: Sequence[NodeState] | None) -> list[NodeRecord]:
    """``NodeRecord``s from ``list_nodes`` rows, optionally only those in ``states``."""
    wanted = None if states is None else {NodeState(s) for s in states}
    out = []
    for node_id, flat, assigned, running, used in rows:
        h = _pairs(flat)
        state = NodeState(h["state"])
        if wanted is not None and state not in wanted:
            continue
        spec = NodeSpec(
            id=node_id,
            name=h["name"],
            slots=int(h["slots"]),
            prefetch=int(h["prefetch"]),
            resources=_j(h.get("resources")),
            labels=_j(h.get("labels")),
            queues=tuple(orjson.loads(h.get("queues") or "[]")),
            host=h.get("host", ""),
            pid=int(h.get("pid") or 0),
        )
        usage = {k: round(float(v), 9) for k, v in _pairs(used).items()}
        out.append(
            NodeRecord(
                spec=spec,
                state=state,
                registered_at=float(h["registered_at"]),
                heartbeat_at=float(h["heartbeat_at"]),
                assigned=int(assigned),
                running=int(running),
                used={k: v for k, v in usage.items() if v > 1e-9},
            )
        )
    out.sort(key=lambda n: (n.registered_at, n.id))
    return out


_MAX_RANK = 2**31 - 1


def _pending(members: Any, seen: dict[str, str]) -> list[PendingJob]:
    """``PendingJob``s from members of the ``pending`` sorted set: ``rank`` (8 hex digits of
    2^31-1-priority, 12 of seq), then ``id``, ``queue``, ``x`` and ``task`` separated by NUL, where ``x`` is "" or the
    JSON list [resources, labels, affinity, concurrency_key, concurrency_limit, rate_limit]
    (see scripts.lua). Each member is also put in ``seen`` by id, for ``assign``."""
    out: list[PendingJob] = []
    append = out.append
    for m in members:
        job_id, queue, x, task = m[20:].split("\0", 3)
        seen[job_id] = m
        if x:
            res, labels, affinity, ckey, climit, rlimit = orjson.loads(x)
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
                )
            )
        else:
            append(
                PendingJob(
                    job_id, queue, _MAX_RANK - int(m[:8], 16), int(m[8:20], 16), {}, {}, {}, task
                )
            )
    return out


def _started(flat: Any) -> list[JobRecord]:
    """``JobRecord``s from ``start_jobs`` rows {id, HGETALL job}..."""
    return [job_from_hash(flat[i], _pairs(flat[i + 1])) for i in range(0, len(flat), 2)]


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
    )


def _submit_args(jobs: Sequence[NewJob]) -> tuple[bytes, bytes | str]:
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
            _num(j.delay) if j.delay else "",
            "" if j.eta is None else _num(j.eta),
        ]
        if j.max_attempts != 1:
            row += ("max_attempts", j.max_attempts)
        if j.timeout is not None:
            row += ("timeout", _num(j.timeout))
        if j.resources:
            row += ("resources", dumps(j.resources).decode())
        if j.labels:
            row += ("labels", dumps(j.labels).decode())
        if j.affinity:
            row += ("affinity", dumps(j.affinity).decode())
        if j.backoff_base != DEFAULT_BASE:
            row += ("backoff_base", _num(j.backoff_base))
        if j.backoff_max != DEFAULT_MAX:
            row += ("backoff_max", _num(j.backoff_max))
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
        if j.depends_on or j.unique_key is not None:
            unique_for = "" if j.unique_for is None else _num(j.unique_for)
            specials.append([i, list(j.depends_on), j.unique_key or "", unique_for])
        rows.append(row)
    return dumps(rows), dumps(specials) if specials else ""


def _lease(name: str, reply: Any) -> Lease | None:
    if not reply:
        return None
    holder, token, expires, acquired = reply
    return Lease(name, holder, int(token), float(expires), float(acquired))


def _rank(priority: int, seq: int) -> str:
    """The sort key of a job in the ``pending`` sorted set (see scripts.lua)."""
    p = min(max(priority, -(2**31)), 2**31 - 1)
    return f"{2**31 - 1 - p:08x}{seq:012x}"


class RedisStore(Store):
    """Store in Redis (``redis://host:port/db?prefix=NAME``)."""

    def __init__(
        self,
        url: str,
        *,
        result_ttl: float | None = None,
        retries: int = 10,
        socket_timeout: float = SOCKET_TIMEOUT,
    ) -> None:
        self.url = url
        conn_url, self.prefix, ttl = parse_url(url)
        self.result_ttl = ttl if result_ttl is None else result_ttl
        self._ttl_arg = _num(self.result_ttl)
        self._base = f"{self.prefix}:{{{self.prefix}}}:"
        self._pool: redis.ConnectionPool = redis.ConnectionPool.from_url(
            conn_url,
            decode_responses=True,
            # A damaged value that is not UTF-8 comes back escaped, not as an exception: a
            # corrupt payload then fails JSON decoding on the worker and is dead-lettered.
            encoding_errors="backslashreplace",
            socket_timeout=socket_timeout,
            socket_connect_timeout=min(socket_timeout, 5.0),
            socket_keepalive=True,
            health_check_interval=15,
            retry=Retry(NoBackoff(), 0),  # retried here, around whole operations
            client_name=f"rota:{self.prefix}:{os.getpid()}",
        )
        self._where = self._describe(self._pool)
        self.redis = redis.Redis(connection_pool=self._pool)
        self._retries = retries
        self._backoff = ExponentialBackoff(cap=2.0, base=0.05)
        self._retry = Retry(self._backoff, retries)
        self._down_since: float | None = None
        self._members: dict[str, str] = {}  # job id -> its "pending" member, last read
        # Scripts go over a connection of their own, without the pool's per-command
        # bookkeeping (one instance is used by one thread at a time); a forked child makes
        # its own rather than share its parent's socket.
        self._conn: Any = None  # a redis-py Connection
        self._conn_pid = 0

    @staticmethod
    def _describe(pool: redis.ConnectionPool) -> str:
        kw = pool.connection_kwargs
        if "path" in kw:
            return f"unix:{kw['path']}"
        return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"

    def __repr__(self) -> str:
        return f"RedisStore({self._where!r}, prefix={self.prefix!r})"

    # ---- plumbing ------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        """The full name of a key: ``key("job", id)`` -> ``rota:{rota}:job:<id>``."""
        return self._base + ":".join(parts)

    def _failed(self, error: Exception) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "lost the connection to Redis at %s (%s); reconnecting with backoff",
                self._where,
                error,
            )
        self._drop_conn()
        self._pool.disconnect()

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (Redis commands), retrying it with backoff on connection errors."""
        attempt_at = 0.0

        def attempt() -> T:
            nonlocal attempt_at
            attempt_at = time.monotonic()
            return fn()

        try:
            result = self._retry.call_with_retry(attempt, self._failed)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise StoreError(f"Redis at {self._where} is unreachable: {exc}") from exc
        except ResponseError as exc:
            message = str(exc)
            if message.startswith("ROTA_LEASE_LOST"):
                raise LeaseLost(message.removeprefix("ROTA_LEASE_LOST ")) from None
            if message.startswith("ROTA_DUPLICATE"):
                raise SubmitError(message.removeprefix("ROTA_DUPLICATE ")) from None
            if message.startswith("ROTA_INVALID"):
                raise InvalidOption(message.removeprefix("ROTA_INVALID ")) from None
            raise StoreError(f"Redis at {self._where} refused an operation: {exc}") from exc
        except RedisError as exc:
            raise StoreError(f"Redis at {self._where}: {exc}") from exc
        if self._down_since is not None:
            log.info(
                "reconnected to Redis at %s after %.1f s",
                self._where,
                max(attempt_at - self._down_since, 0.0),
            )
            self._down_since = None
        return result

    def _run(self, name: str, args: Sequence[Any], *, memo: bool = False) -> Any:
        """Run script ``name`` with the common arguments (request id, result TTL)."""
        command = self._fcall_command(name, args, rid=os.urandom(8).hex() if memo else "")
        return self._call(partial(self._fcall, command))  # retries keep the request id

    def _fcall_command(self, name: str, args: Sequence[Any], rid: str = "") -> tuple[Any, ...]:
        """The ``FCALL`` of script ``name`` with the common arguments (request id ``rid``,
        "" = not memoized; the result TTL) before its own ``args``."""
        return ("FCALL", function_name(name), 1, self._base, rid, self._ttl_arg, *args)

    def _fcall(self, command: tuple[Any, ...]) -> Any:
        """Run an ``FCALL`` (``_fcall_command``) on the store's own connection, loading the
        library first if Redis does not have it."""
        conn = self._conn
        if conn is None or self._conn_pid != os.getpid():
            conn = self._conn = self._pool.make_connection()
            self._conn_pid = os.getpid()
        packed = conn.pack_command(*command)
        try:
            return _exchange(conn, packed)
        except ResponseError as exc:
            if not _missing_library(exc):
                raise
        self._load_library()
        return _exchange(conn, packed)

    def _load_library(self) -> None:
        try:
            self._cmd(*LOAD_LIBRARY)
        except ResponseError as exc:
            if "unknown command" in str(exc).lower():
                raise StoreError(
                    f"Redis at {self._where} has no functions: rota needs Redis 7.0 or newer"
                ) from None
            raise

    def _block(
        self,
        command: Callable[[float], Any],
        timeout: float,
        done: Callable[[], bool] | None = None,
    ) -> Any:
        """Run a blocking command, in chunks, until it returns something, ``timeout``
        passes or (checked after each empty chunk) ``done()`` is true."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            step = max(min(left, WAIT_CHUNK), 0.001)  # 0 would block forever
            got = self._call(partial(command, step))
            if got is not None or (done is not None and done()):
                return got

    def _is_final(self, job_id: str) -> bool:
        state = self._call(partial(self.redis.hget, self.key("job", job_id), "state"))
        return state in _FINAL

    def _cmd(self, *args: Any) -> Any:
        """One raw command (its reply unparsed: flat lists stay flat)."""
        return self.redis.execute_command(*args)  # type: ignore[no-untyped-call]

    def _blmove_same(self, key: str, timeout: float) -> Any:
        return self._cmd("BLMOVE", key, key, "LEFT", "LEFT", timeout)

    def _blpop(self, key: str, timeout: float) -> Any:
        return self._cmd("BLPOP", key, timeout)

    # ---- lifecycle and clock -------------------------------------------------------
    def close(self) -> None:
        self._drop_conn()
        self._pool.disconnect()

    def _drop_conn(self) -> None:
        if self._conn is not None and self._conn_pid == os.getpid():
            self._conn.disconnect()
        self._conn = None

    def now(self) -> float:
        sec, usec = self._call(self.redis.time)
        return float(sec) + float(usec) / 1e6

    # ---- producers and operators ---------------------------------------------------
    def submit(self, jobs: Sequence[NewJob]) -> list[str]:
        if not jobs:
            return []
        reply = self._run("submit", list(_submit_args(jobs)), memo=True)
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
        return JobState(state) if state else None

    def retry_dead(self, job_ids: Sequence[str]) -> int:
        if not job_ids:
            return 0
        return int(self._run("retry_dead", list(job_ids), memo=True))

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
                if state in _FINAL:
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
        args: list[Any] = [node_id, _num(lease_ttl)]
        for job_id, token in running:
            args += (job_id, token)
        alive, lost, cancel = self._run("heartbeat", args)
        return HeartbeatReply(alive=bool(alive), lost=tuple(lost), cancel=tuple(cancel))

    def set_node_state(self, node_id: str, state: NodeState) -> None:
        self._run("set_node_state", [node_id, NodeState(state).value])

    def list_nodes(self, states: Sequence[NodeState] | None = None) -> list[NodeRecord]:
        return _nodes(self._run("list_nodes", []), states)

    def start_jobs(self, node_id: str, limit: int, lease_ttl: float) -> list[JobRecord]:
        if limit <= 0:
            return []
        return _started(self._run("start_jobs", [node_id, limit, _num(lease_ttl)], memo=True))

    def complete(self, outcomes: Sequence[Outcome]) -> list[bool]:
        if not outcomes:
            return []
        accepted = self._run("complete", [_outcome_rows(outcomes)], memo=True)
        return [bool(a) for a in accepted]

    def complete_and_start(
        self, outcomes: Sequence[Outcome], node_id: str, limit: int, lease_ttl: float
    ) -> tuple[list[bool], list[JobRecord]]:
        """Both in one script (one round trip, one pass of Redis' event loop)."""
        if not outcomes:
            return [], self.start_jobs(node_id, limit, lease_ttl)
        if limit <= 0:
            return self.complete(outcomes), []
        args = [_outcome_rows(outcomes), node_id, limit, _num(lease_ttl)]
        accepted, reply = self._run("complete_and_start", args, memo=True)
        return [bool(a) for a in accepted], _started(reply)

    def async_claims(self) -> AsyncClaims:
        return _AsyncClaims(self)

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
        return _lease(name, self._run("acquire_lease", [name, holder, _num(ttl)]))

    def release_lease(self, lease: Lease) -> None:
        self._run("release_lease", self._lease_args(lease))

    def get_lease(self, name: str) -> Lease | None:
        return _lease(name, self._run("get_lease", [name]))

    def promote_due(self, lease: Lease, limit: int) -> int:
        return int(self._run("promote_due", [*self._lease_args(lease), limit], memo=True))

    def reap(self, lease: Lease, failure_timeout: float) -> ReapReport:
        args = [*self._lease_args(lease), _num(failure_timeout), PURGE_PER_REAP]
        dead_nodes, requeued, retried, dead_jobs = self._run("reap", args, memo=True)
        return ReapReport(tuple(dead_nodes), int(requeued), int(retried), int(dead_jobs))

    def pending_jobs(self, limit: int, after: tuple[int, int] | None = None) -> list[PendingJob]:
        if limit <= 0:
            return []
        # the smallest key after the cursor: same priority, next seq
        start = "-" if after is None else "[" + _rank(after[0], after[1] + 1)
        return _pending(self._run("pending_jobs", [start, limit]), self._members)

    def placement_snapshot(
        self, lease: Lease, promote_limit: int, page: int, min_page: int, census: bool
    ) -> tuple[int, list[NodeRecord], list[PendingJob], int]:
        """:meth:`Store.placement_snapshot` in one script (one round trip)."""
        args = [*self._lease_args(lease), promote_limit, page, min_page, 1 if census else 0]
        return self._snapshot(self._run("placement_snapshot", args))

    def _snapshot(self, reply: Any) -> tuple[int, list[NodeRecord], list[PendingJob], int]:
        promoted, nodes, members, size = reply
        self._members = {}  # a new cycle: forget the members read by the last one
        pending = _pending(members, self._members)
        return int(promoted), _nodes(nodes, [NodeState.LIVE]), pending, int(size)

    def wait_for_pending_snapshot(
        self,
        timeout: float,
        lease: Lease,
        promote_limit: int,
        page: int,
        min_page: int,
        reserve: Mapping[str, Sequence[str]] | None = None,
    ) -> tuple[int, list[NodeRecord], list[PendingJob], int] | None:
        """``reserve_slots``, the ``BLPOP`` on ``wake:sched`` and ``placement_snapshot``
        pipelined: Redis takes the snapshot the moment the wait ends, woken or not (one
        round trip from a submit to the scheduler's placement, not two)."""
        if timeout <= 0 or timeout > WAIT_CHUNK:
            return super().wait_for_pending_snapshot(
                timeout, lease, promote_limit, page, min_page, reserve
            )
        commands: list[tuple[Any, ...]] = []
        lease_args = self._lease_args(lease)
        if reserve:  # a lost lease or a missing library only costs this reservation
            args = [*lease_args, *_reserve_args(reserve)]
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
        self._run("reserve_slots", [*self._lease_args(lease), *_reserve_args(slots)])

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
        last = _pairs(ticks)
        return [
            ScheduleRecord(name, spec, _f(last.get(name)))
            for name, spec in sorted(_pairs(specs).items())
        ]

    def fire_schedule(self, lease: Lease, name: str, tick: float, job: NewJob | None) -> bool:
        rows, specials = _submit_args([job]) if job is not None else (b"", "")
        args = [*self._lease_args(lease), name, _num(tick), rows, specials]
        return bool(self._run("fire_schedule", args, memo=True))

    def prune(self, older_than: float) -> int:
        total = 0
        while True:
            deleted, more = self._run("prune", [_num(older_than), PRUNE_BATCH], memo=True)
            total += int(deleted)
            if not more:
                return total


class _AsyncClaims:
    """:meth:`RedisStore.async_claims`: the worker's claim loop on its own event loop, over
    two redis.asyncio connections (one for scripts, one for the blocking wait), so a claim
    costs no thread hop and the loop runs jobs while a script is on its way. Connection
    errors are retried with the store's backoff, the request id unchanged (a script whose
    reply was lost runs once); scripts missing after a Redis restart are loaded again."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._pool: redis.asyncio.ConnectionPool | None = None
        self._conns: dict[str, Any] = {}
        self._down_since: float | None = None
        self._missing = True  # scripts to load (first use; Redis restarted)

    def _connection(self, kind: str) -> Any:
        conn = self._conns.get(kind)
        if conn is None:
            if self._pool is None:
                conn_url, _, _ = parse_url(self._store.url)
                self._pool = redis.asyncio.ConnectionPool.from_url(
                    conn_url,
                    decode_responses=True,
                    encoding_errors="backslashreplace",
                    socket_connect_timeout=5.0,
                    socket_keepalive=True,
                    client_name=f"rota:{self._store.prefix}:{os.getpid()}:async",
                )
            conn = self._pool.make_connection()  # type: ignore[no-untyped-call]
            self._conns[kind] = conn
        return conn

    async def _drop(self, kind: str) -> None:
        conn = self._conns.pop(kind, None)
        if conn is not None:
            with _suppress():
                await conn.disconnect(nowait=True)

    async def _request(self, kind: str, commands: list[tuple[Any, ...]], timeout: float) -> Any:
        """Send ``commands`` (pipelined) on connection ``kind``; their replies, retrying
        connection errors with backoff (``StoreError`` once the retries are spent)."""
        store = self._store
        attempt = 0
        loads: list[tuple[Any, ...]] = []  # after a reconnection: load the scripts first
        while True:
            conn = self._connection(kind)
            try:
                async with asyncio.timeout(timeout):
                    sent = loads + commands
                    await conn.send_packed_command(conn.pack_commands(sent), check_health=False)
                    replies: list[Any] = []
                    for _ in sent:
                        try:
                            replies.append(await conn.read_response())
                        except ResponseError as err:  # an error reply, in its place
                            replies.append(err)
                    replies = replies[len(loads) :]
            except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError) as exc:
                loads = [LOAD_LIBRARY]
                await self._drop(kind)
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    log.warning(
                        "lost the connection to Redis at %s (%s); reconnecting with backoff",
                        store._where,
                        exc,
                    )
                if attempt >= store._retries:
                    raise StoreError(f"Redis at {store._where} is unreachable: {exc}") from exc
                await asyncio.sleep(store._backoff.compute(attempt))
                attempt += 1
                continue
            except BaseException:  # cancelled mid-request: the reply would be out of step
                await self._drop(kind)
                raise
            if self._down_since is not None:
                log.info(
                    "reconnected to Redis at %s after %.1f s",
                    store._where,
                    time.monotonic() - self._down_since,
                )
                self._down_since = None
            return replies

    def _call(self, name: str, args: Sequence[Any]) -> tuple[Any, ...]:
        """The ``FCALL`` of script ``name`` as :meth:`RedisStore._run` sends it (with a
        new request id: its reply is memoized)."""
        return self._store._fcall_command(name, args, rid=os.urandom(8).hex())

    def _reply(self, name: str, reply: Any) -> Any:
        if isinstance(reply, ResponseError):
            if _missing_library(reply):  # Redis restarted: load it for next time
                self._missing = True
            raise StoreError(f"Redis at {self._store._where} refused {name}: {reply}")
        return reply

    async def _load_scripts(self) -> None:
        if self._missing:
            await self._request("rpc", [LOAD_LIBRARY], SOCKET_TIMEOUT)
            self._missing = False

    async def _run(self, name: str, args: Sequence[Any]) -> Any:
        """Script ``name`` as :meth:`RedisStore._run` runs it (memoized under a request id;
        loaded again first if Redis lost its scripts)."""
        await self._load_scripts()
        call = self._call(name, args)
        (reply,) = await self._request("rpc", [call], SOCKET_TIMEOUT)
        if isinstance(reply, ResponseError) and _missing_library(reply):
            self._missing = True
            await self._load_scripts()
            (reply,) = await self._request("rpc", [call], SOCKET_TIMEOUT)
        return self._reply(name, reply)

    async def complete_and_start(
        self, outcomes: Sequence[Outcome], node_id: str, limit: int, lease_ttl: float
    ) -> tuple[list[bool], list[JobRecord]]:
        if not outcomes:
            return [], await self.start_jobs(node_id, limit, lease_ttl)
        args = [_outcome_rows(outcomes), node_id, max(limit, 0), _num(lease_ttl)]
        accepted, flat = await self._run("complete_and_start", args)
        return [bool(a) for a in accepted], _started(flat)

    async def start_jobs(self, node_id: str, limit: int, lease_ttl: float) -> list[JobRecord]:
        if limit <= 0:
            return []
        return _started(await self._run("start_jobs", [node_id, limit, _num(lease_ttl)]))

    async def wait_and_start(
        self, node_id: str, limit: int, lease_ttl: float, timeout: float
    ) -> list[JobRecord]:
        """Take a waiting wake-up and start what is assigned; if nothing was, block on the
        node's wake-up list with ``start_jobs`` pipelined behind the ``BLPOP``: Redis runs
        it the moment the wake-up arrives, so a job assigned to an idle node starts one
        round trip after the scheduler's ``assign``. Replies of the scripts are memoized
        as for the other scripts (a retried request starts nothing twice)."""
        store = self._store
        await self._load_scripts()
        wake = store.key("wake", "node", node_id)
        args = [node_id, limit, _num(lease_ttl)]
        if limit <= 0:  # no room: only wait
            (woken,) = await self._request("wait", [("LPOP", wake)], SOCKET_TIMEOUT)
            if woken is None and timeout > 0:
                step = max(min(timeout, WAIT_CHUNK), 0.001)
                await self._request("wait", [("BLPOP", wake, step)], step + SOCKET_TIMEOUT)
            return []
        first = [("LPOP", wake), self._call("start_jobs", args)]
        woken, flat = await self._request("wait", first, SOCKET_TIMEOUT)
        jobs = _started(self._reply("start_jobs", flat))
        if jobs or woken is not None or timeout <= 0:
            return jobs
        step = max(min(timeout, WAIT_CHUNK), 0.001)
        then = [("BLPOP", wake, step), self._call("start_jobs", args)]
        _, flat = await self._request("wait", then, step + SOCKET_TIMEOUT)
        return _started(self._reply("start_jobs", flat))

    async def close(self) -> None:
        for kind in list(self._conns):
            await self._drop(kind)
        if self._pool is not None:
            with _suppress():
                await self._pool.disconnect()
            self._pool = None
