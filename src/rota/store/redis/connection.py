"""How the Redis store talks to Redis: its URL, the connection and the retries, and the
library calls (``FCALL``) every operation goes through."""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from rota.core.errors import InvalidOption, LeaseLost, StoreError, SubmitError
from rota.store.contract import split_attempt_history
from rota.store.redis.codec import NodeSpecs, num_arg
from rota.store.redis.durable import Durability
from rota.store.redis.library import (
    LOAD_LIBRARY,
    already_loaded,
    function_name,
    missing_library,
)
from rota.store.redis.topology import CLUSTER, SENTINEL, connection_pool, describe, scheme

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
# Retry pacing. One server: back off to 2 s between attempts. Sentinel and Cluster: a
# failover names a new primary, which the next connection asks for; back off to 0.25 s
# only, so rota follows within a quarter second of the promotion, with as many more
# attempts as keep the same total patience (about 13 s before a StoreError).
BACKOFF_CAP, HA_BACKOFF_CAP = 2.0, 0.25
HA_RETRIES_PER_RETRY = 5
_PREFIX_RE = re.compile(r"^[^{}\s]{1,100}$")
_MARKER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def exchange(conn: Any, packed: Any, *, again: bool = True) -> Any:
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
    return exchange(conn, packed, again=False)


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


class RedisConnection:
    """A Redis store's connections (a pool for plain commands, its own connection for
    ``FCALL``s), retried with backoff; errors become rota errors."""

    def __init__(
        self,
        url: str,
        *,
        result_ttl: float | None = None,
        retries: int = 10,
        socket_timeout: float = SOCKET_TIMEOUT,
    ) -> None:
        self.url = url
        rest, self.attempt_history = split_attempt_history(url)
        conn_url, self.prefix, ttl = parse_url(rest)
        self.result_ttl = ttl if result_ttl is None else result_ttl
        self._ttl_arg = num_arg(self.result_ttl)
        self._base = f"{self.prefix}:{{{self.prefix}}}:"
        self._pool: redis.ConnectionPool = connection_pool(
            conn_url,
            self.prefix,
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
        self._where = describe(self._pool)
        self._durable = Durability.from_url(url)
        self.redis = redis.Redis(connection_pool=self._pool)
        ha = scheme(conn_url) in (SENTINEL, CLUSTER)
        self._retries = retries * HA_RETRIES_PER_RETRY if ha else retries
        self._backoff = ExponentialBackoff(cap=HA_BACKOFF_CAP if ha else BACKOFF_CAP, base=0.05)
        self._retry = Retry(self._backoff, self._retries)
        self._down_since: float | None = None
        # The highest fencing tokens this process was handed (jobs; leases by name): sent
        # as a floor on each reconnection (raise_token_floor), see _on_connect().
        self._job_token_seen = 0
        self._lease_token_seen: dict[str, int] = {}
        self._members: dict[str, str] = {}  # job id -> its "pending" member, last read
        self._node_specs = NodeSpecs()  # for placement snapshots (codec.NodeSpecs)
        # Scripts go over a connection of their own, without the pool's per-command
        # bookkeeping (one instance is used by one thread at a time); a forked child makes
        # its own rather than share its parent's socket.
        self._conn: Any = None  # a redis-py Connection
        self._conn_pid = 0

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

    # ---- fencing tokens across a failover -------------------------------------------
    def saw_tokens(
        self, job_tokens: Sequence[int] = (), lease: tuple[str, int] | None = None
    ) -> None:
        """Remember the highest tokens the store handed this process."""
        if job_tokens:
            self._job_token_seen = max(self._job_token_seen, *job_tokens)
        if lease is not None:
            name, token = lease
            self._lease_token_seen[name] = max(self._lease_token_seen.get(name, 0), token)

    def token_floor_command(self) -> tuple[Any, ...] | None:
        """The ``raise_token_floor`` call for the tokens seen so far (None: none seen)."""
        if not self._job_token_seen and not self._lease_token_seen:
            return None
        leases = [x for name, t in self._lease_token_seen.items() for x in (name, t)]
        return self._fcall_command("raise_token_floor", [self._job_token_seen, *leases])

    def tokens_checked(self, raised: Any) -> None:
        """Log what ``raise_token_floor`` found: counters below tokens already handed out
        (an asynchronous replica promoted without the last writes)."""
        if int(raised):
            log.error(
                "fencing tokens went backwards at Redis %s (a failover lost writes?): %d "
                "counter(s) were below tokens this process was handed (jobs up to %d, "
                "leases %s); raised, so those tokens are never handed out again",
                self._where,
                int(raised),
                self._job_token_seen,
                self._lease_token_seen,
            )

    def _on_connect(self, conn: Any) -> None:
        """Each time the script connection (re)connects, before any request on it: lift
        the store's token counters to the tokens seen (a new primary promoted without the
        last writes then never hands one of them out again)."""
        command = self.token_floor_command()
        if command is None:
            return
        try:
            raised = exchange(conn, conn.pack_command(*command), again=False)
        except ResponseError as exc:
            if not missing_library(exc):
                raise
            self._load_library()
            raised = exchange(conn, conn.pack_command(*command), again=False)
        self.tokens_checked(raised)

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
            conn.register_connect_callback(self._on_connect)  # type: ignore[no-untyped-call]
            self._conn_pid = os.getpid()
        packed = conn.pack_command(*command)
        try:
            return exchange(conn, packed)
        except ResponseError as exc:
            if not missing_library(exc):
                raise
        self._load_library()
        return exchange(conn, packed)

    def _load_library(self) -> None:
        try:
            self._cmd(*LOAD_LIBRARY)
        except ResponseError as exc:
            if already_loaded(exc):  # another client loaded it first
                return
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
