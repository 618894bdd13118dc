"""``durable`` mode of the Redis store: a write is acknowledged only once a replica has it.

Redis replicates asynchronously: a primary that dies right after acknowledging a write can
take it along, and the replica promoted in its place never saw it. With
``?durable=N`` on the store URL (``N`` replicas, usually 1), the store sends
``WAIT N <ms>`` on the connection that made the write, after

* ``submit`` (the producer's acknowledgement),
* ``complete`` / ``complete_and_start`` (a final outcome; also the asyncio claim client),
* ``cancel``,
* ``start_jobs`` / ``wait_and_start`` when they started jobs: a job's fencing token is
  given to a worker only once the ``assign`` that made it (earlier in the same replication
  stream) and the start are on a replica, so a failover cannot hand the same token out
  again;
* ``acquire_lease``: likewise for the scheduler lease's token.

``WAIT`` returns how many replicas acknowledged the connection's writes so far. Fewer
than ``N`` within ``durable_timeout`` seconds (default 1) raises :class:`NotReplicated`:
the write *was* applied on the primary and stays there, but it is not safe from a
failover; the caller sees an error (a worker keeps its outcome and sends it again, a
producer may submit again: see docs/reliability.md). A connection lost during the
``WAIT`` raises it too (nothing can say whether the write reached a replica).
Redis 7.0 has no ``WAITAOF``; replicas keep nothing on disk unless configured to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rota.core.errors import InvalidOption, StoreError

DEFAULT_TIMEOUT = 1.0


class NotReplicated(StoreError):
    """A write was applied on the primary, but too few replicas confirmed it in time."""


@dataclass(frozen=True)
class Durability:
    """How many replicas must confirm a write, and for how long to wait for them."""

    replicas: int = 0
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_url(cls, url: str) -> Durability:
        """``durable=N`` (replicas, default 0: off) and ``durable_timeout=SECONDS``."""
        params = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
        raw = params.get("durable", "0")
        replicas = {"true": 1, "yes": 1, "on": 1, "false": 0, "no": 0, "off": 0}.get(raw.lower())
        if replicas is None:
            try:
                replicas = int(raw)
            except ValueError:
                replicas = -1
        if replicas < 0:
            raise InvalidOption(f"durable must be a number of replicas >= 0, not {raw!r}")
        try:
            timeout = float(params.get("durable_timeout", DEFAULT_TIMEOUT))
        except ValueError:
            timeout = -1.0
        if not (math.isfinite(timeout) and timeout > 0):
            raise InvalidOption("durable_timeout must be a number of seconds > 0")
        return cls(replicas, timeout)

    @property
    def _wait(self) -> tuple[Any, ...]:
        return ("WAIT", self.replicas, max(1, round(self.timeout * 1000)))

    def _check(self, acked: Any, where: str) -> None:
        if int(acked) < self.replicas:
            raise NotReplicated(
                f"Redis at {where} applied a write but only {int(acked)} of {self.replicas} "
                f"replicas confirmed it within {self.timeout:g} s (durable mode): it may be "
                "lost if the primary fails now"
            )

    def _lost(self, exc: Exception, where: str) -> NotReplicated:
        return NotReplicated(
            f"Redis at {where} applied a write, then the connection was lost before its "
            f"replication was confirmed (durable mode): {exc}"
        )

    def confirm(self, conn: Any, where: str) -> None:
        """Wait until the replicas have every write made so far on ``conn`` (a redis-py
        ``Connection``), or raise :class:`NotReplicated`."""
        if not self.replicas or conn is None:
            return
        try:
            conn.send_packed_command(conn.pack_command(*self._wait), check_health=False)
            acked = conn.read_response()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            conn.disconnect()
            raise self._lost(exc, where) from exc
        self._check(acked, where)

    async def confirm_async(self, conn: Any, where: str) -> None:
        """:meth:`confirm` on a redis.asyncio connection."""
        if not self.replicas or conn is None:
            return
        try:
            await conn.send_packed_command(conn.pack_command(*self._wait), check_health=False)
            acked = await conn.read_response()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            await conn.disconnect()
            raise self._lost(exc, where) from exc
        self._check(acked, where)
