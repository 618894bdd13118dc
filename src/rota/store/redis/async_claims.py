"""The Redis store's asyncio claims (:meth:`RedisStore.async_claims`): a worker's claim
loop on its own event loop."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rota.core.errors import StoreError
from rota.core.model import JobRecord
from rota.core.outcomes import Outcome
from rota.store.contract import split_attempt_history
from rota.store.redis.codec import num_arg, outcome_rows, started_jobs
from rota.store.redis.connection import SOCKET_TIMEOUT, WAIT_CHUNK, RedisConnection, log, parse_url
from rota.store.redis.library import LOAD_LIBRARY, missing_library
from rota.store.redis.topology import async_connection_pool


class suppress_errors:
    """``contextlib.suppress(Exception)`` for cleanup on an event loop."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], Exception)  # type: ignore[arg-type]


class RedisAsyncClaims:
    """:meth:`RedisStore.async_claims`: the worker's claim loop on its own event loop, over
    two redis.asyncio connections (one for scripts, one for the blocking wait), so a claim
    costs no thread hop and the loop runs jobs while a script is on its way. Connection
    errors are retried with the store's backoff, the request id unchanged (a script whose
    reply was lost runs once); scripts missing after a Redis restart are loaded again."""

    def __init__(self, store: RedisConnection) -> None:
        self._store = store
        self._pool: redis.asyncio.ConnectionPool | None = None
        self._conns: dict[str, Any] = {}
        self._down_since: float | None = None
        self._missing = True  # scripts to load (first use; Redis restarted)

    def _connection(self, kind: str) -> Any:
        conn = self._conns.get(kind)
        if conn is None:
            if self._pool is None:
                conn_url, _, _ = parse_url(split_attempt_history(self._store.url)[0])
                self._pool = async_connection_pool(
                    conn_url,
                    self._store.prefix,
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
            with suppress_errors():
                await conn.disconnect(nowait=True)

    async def _request(self, kind: str, commands: list[tuple[Any, ...]], timeout: float) -> Any:
        """Send ``commands`` (pipelined) on connection ``kind``; their replies, retrying
        connection errors with backoff (``StoreError`` once the retries are spent)."""
        store = self._store
        attempt = 0
        loads: list[tuple[Any, ...]] = []  # after a reconnection: load the scripts first
        while True:
            conn = self._connection(kind)
            floor = store.token_floor_command() if loads else None
            try:
                async with asyncio.timeout(timeout):
                    # After a reconnection: the library, then the token floor (see
                    # RedisConnection._on_connect), then the request.
                    sent = loads + ([floor] if floor else []) + commands
                    await conn.send_packed_command(conn.pack_commands(sent), check_health=False)
                    replies: list[Any] = []
                    for _ in sent:
                        try:
                            replies.append(await conn.read_response())
                        except ResponseError as err:  # an error reply, in its place
                            replies.append(err)
                    if floor:
                        floor_reply = replies[len(loads)]
                        if not isinstance(floor_reply, ResponseError):
                            store.tokens_checked(floor_reply)
                    replies = replies[len(loads) + bool(floor) :]
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
            if missing_library(reply):  # Redis restarted: load it for next time
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
        if isinstance(reply, ResponseError) and missing_library(reply):
            self._missing = True
            await self._load_scripts()
            (reply,) = await self._request("rpc", [call], SOCKET_TIMEOUT)
        return self._reply(name, reply)

    async def complete_and_start(
        self, outcomes: Sequence[Outcome], node_id: str, limit: int, lease_ttl: float
    ) -> tuple[list[bool], list[JobRecord]]:
        if not outcomes:
            return [], await self.start_jobs(node_id, limit, lease_ttl)
        args = [
            outcome_rows(outcomes),
            node_id,
            max(limit, 0),
            num_arg(lease_ttl),
            self._store.attempt_history,
        ]
        accepted, flat = await self._run("complete_and_start", args)
        started = self._started(flat)
        await self._store._durable.confirm_async(self._conns.get("rpc"), self._store._where)
        return [bool(a) for a in accepted], started

    async def start_jobs(self, node_id: str, limit: int, lease_ttl: float) -> list[JobRecord]:
        if limit <= 0:
            return []
        args = [node_id, limit, num_arg(lease_ttl), self._store.attempt_history]
        started = self._started(await self._run("start_jobs", args))
        if started:
            await self._store._durable.confirm_async(self._conns.get("rpc"), self._store._where)
        return started

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
        args = [node_id, limit, num_arg(lease_ttl), store.attempt_history]
        if limit <= 0:  # no room: only wait
            (woken,) = await self._request("wait", [("LPOP", wake)], SOCKET_TIMEOUT)
            if woken is None and timeout > 0:
                step = max(min(timeout, WAIT_CHUNK), 0.001)
                await self._request("wait", [("BLPOP", wake, step)], step + SOCKET_TIMEOUT)
            return []
        first = [("LPOP", wake), self._call("start_jobs", args)]
        woken, flat = await self._request("wait", first, SOCKET_TIMEOUT)
        jobs = self._started(self._reply("start_jobs", flat))
        if jobs:
            await store._durable.confirm_async(self._conns.get("wait"), store._where)
        if jobs or woken is not None or timeout <= 0:
            return jobs
        step = max(min(timeout, WAIT_CHUNK), 0.001)
        then = [("BLPOP", wake, step), self._call("start_jobs", args)]
        _, flat = await self._request("wait", then, step + SOCKET_TIMEOUT)
        jobs = self._started(self._reply("start_jobs", flat))
        if jobs:
            await store._durable.confirm_async(self._conns.get("wait"), store._where)
        return jobs

    def _started(self, reply: Any) -> list[JobRecord]:
        started = started_jobs(reply)
        if started:
            self._store.saw_tokens([r.token for r in started])
        return started

    async def close(self) -> None:
        for kind in list(self._conns):
            await self._drop(kind)
        if self._pool is not None:
            with suppress_errors():
                await self._pool.disconnect()
            self._pool = None
