"""Where the Redis store connects: one server, a Sentinel-managed primary, or the primary of
one Redis Cluster hash slot. The store asks this module for a connection pool (sync and
asyncio) and uses it as it uses a plain one; each connection finds its server again every
time it (re)connects, so every reconnect path of the store follows a failover.

URLs (``prefix`` and ``result_ttl`` are the store's own, see ``store.py``; ``durable`` and
``durable_timeout`` are ``durable.py``'s):

* ``redis://``, ``rediss://``, ``unix://``: one server (redis-py's own URL parsing).
* ``redis+sentinel://[:password@]s1:26379,s2:26379,s3:26379/MASTER?db=0&sentinel_password=P``:
  the primary named ``MASTER`` as the Sentinels report it (redis-py's ``Sentinel``). A
  connection asks the Sentinels for the primary's address whenever it connects; a primary
  that turned into a replica (``READONLY``) drops the connection, which is then retried
  against the new primary.
* ``redis+cluster://[:password@]h1:7000,h2:7001/?prefix=NAME``: a Redis Cluster. Every key of
  an app shares one hash slot (``{NAME}``), so the store talks to the primary that owns that
  slot (found with redis-py's ``RedisCluster``); ``MOVED``, ``ASK``, ``TRYAGAIN`` and
  ``CLUSTERDOWN`` replies drop the connection, and the store's retry finds the slot's owner
  again (a failover or a resharding of the slot stalls the app until it settles, it does
  not fail it).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, RedisError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError

from rota.core.errors import InvalidOption

SENTINEL = "redis+sentinel"
CLUSTER = "redis+cluster"
DISCOVERY_TIMEOUT = 2.0  # seconds for one Sentinel or cluster node to answer
# Our own URL parameters, handled elsewhere and never passed to redis-py.
STORE_PARAMS = frozenset({"durable", "durable_timeout"})
_INT_PARAMS = frozenset({"db"})


@dataclass(frozen=True)
class Topology:
    """A parsed ``redis+sentinel://`` or ``redis+cluster://`` URL."""

    kind: str  # SENTINEL or CLUSTER
    hosts: tuple[tuple[str, int], ...]
    master: str = ""  # Sentinel's name of the primary
    options: dict[str, Any] = field(default_factory=dict)  # for the data connections
    sentinel_password: str | None = None


def scheme(url: str) -> str:
    return url.split(":", 1)[0].lower()


def _hosts(netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    hosts = []
    for part in netloc.rpartition("@")[2].split(","):
        host, _, port = part.strip().rpartition(":") if ":" in part else (part, "", "")
        host = host.strip("[]")
        if not host:
            raise InvalidOption(f"a host is missing in {netloc!r}")
        try:
            hosts.append((host, int(port) if port else default_port))
        except ValueError:
            raise InvalidOption(f"bad port in {part!r}") from None
    return tuple(hosts)


def parse(url: str) -> Topology:
    """The hosts, primary name and connection options of a Sentinel or Cluster URL (our
    own parameters and any ``prefix``/``result_ttl`` left for the store are ignored)."""
    parts = urlsplit(url)
    kind = parts.scheme.lower()
    if kind not in (SENTINEL, CLUSTER):
        raise InvalidOption(f"not a Sentinel or Cluster URL: {url!r}")
    options: dict[str, Any] = {}
    if parts.password is not None:
        options["password"] = unquote(parts.password)
    if parts.username:
        options["username"] = unquote(parts.username)
    sentinel_password = None
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in STORE_PARAMS or key in ("prefix", "result_ttl"):
            continue
        if key == "sentinel_password":
            sentinel_password = value
        elif key in _INT_PARAMS:
            options[key] = int(value)
        else:
            raise InvalidOption(f"unknown parameter {key!r} in a {kind}:// URL")
    hosts = _hosts(parts.netloc, 26379 if kind == SENTINEL else 6379)
    master = parts.path.strip("/")
    if kind == SENTINEL and not master:
        raise InvalidOption("a redis+sentinel:// URL names the primary: .../MASTERNAME")
    if kind == CLUSTER and options.get("db", 0) != 0:
        raise InvalidOption("a Redis Cluster has only database 0")
    return Topology(kind, hosts, master, options, sentinel_password)


def without_store_params(url: str) -> str:
    """``url`` without ``durable``/``durable_timeout`` (for redis-py's own URL parser)."""
    parts = urlsplit(url)
    kept = [
        f"{k}={v}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k not in STORE_PARAMS
    ]
    return parts._replace(query="&".join(kept)).geturl()


# ---- Sentinel ---------------------------------------------------------------------------
class _SentinelConnection(redis.sentinel.SentinelManagedConnection):
    """Asks the Sentinels for the primary on every socket connect, including the reconnect
    inside ``send_packed_command`` (redis-py's own class only does so in ``connect()``)."""

    def _connect(self) -> Any:
        self.host, self.port = self.connection_pool.get_master_address()
        return super()._connect()  # type: ignore[no-untyped-call]


class _AsyncSentinelConnection(redis.asyncio.sentinel.SentinelManagedConnection):
    async def _connect(self) -> None:
        self.host, self.port = await self.connection_pool.get_master_address()
        await super()._connect()  # type: ignore[no-untyped-call]


def _sentinel_kwargs(topo: Topology) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "socket_timeout": DISCOVERY_TIMEOUT,
        "socket_connect_timeout": DISCOVERY_TIMEOUT,
    }
    if topo.sentinel_password:
        kw["password"] = topo.sentinel_password
    return kw


# ---- Cluster: the primary of the app's hash slot ----------------------------------------
class SlotOwner:
    """Finds the primary that serves one hash slot, with redis-py's ``RedisCluster`` (its
    ``CLUSTER SLOTS`` discovery); ``refresh()`` reads the cluster's layout again."""

    def __init__(self, topo: Topology, slot: int) -> None:
        self.topo = topo
        self.slot = slot
        self._cluster: RedisCluster | None = None
        self._lock = threading.Lock()

    def address(self) -> tuple[str, int]:
        """The slot's primary now (the layout is read again on each call: it is only
        called when a connection is made)."""
        with self._lock:
            try:
                if self._cluster is None:
                    self._cluster = RedisCluster(
                        startup_nodes=[ClusterNode(h, p) for h, p in self.topo.hosts],  # type: ignore[no-untyped-call]
                        socket_timeout=DISCOVERY_TIMEOUT,
                        socket_connect_timeout=DISCOVERY_TIMEOUT,
                        **self.topo.options,
                    )
                else:
                    self._cluster.nodes_manager.initialize()
                node = self._cluster.nodes_manager.get_node_from_slot(self.slot)
            except RedisError as exc:
                if self._cluster is not None:
                    self._cluster.close()
                self._cluster = None
                raise RedisConnectionError(
                    f"no primary found for hash slot {self.slot} of the cluster at "
                    f"{_hosts_text(self.topo.hosts)}: {exc}"
                ) from exc
            return str(node.host), int(node.port)

    def close(self) -> None:
        with self._lock:
            if self._cluster is not None:
                self._cluster.close()
                self._cluster = None


_REDIRECTS = (AskError, TryAgainError, ClusterDownError)  # MovedError is an AskError


class _SlotConnection(redis.Connection):
    """A connection to the primary of the pool's hash slot; a redirect drops it."""

    def __init__(self, *, slot_owner: SlotOwner, **kwargs: Any) -> None:
        self.slot_owner = slot_owner
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]

    def _connect(self) -> Any:
        self.host, self.port = self.slot_owner.address()
        return super()._connect()  # type: ignore[no-untyped-call]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except _REDIRECTS as exc:
            self.disconnect()  # type: ignore[no-untyped-call]
            raise RedisConnectionError(f"cluster redirect ({type(exc).__name__} {exc})") from exc


class _AsyncSlotConnection(redis.asyncio.Connection):
    def __init__(self, *, slot_owner: SlotOwner, **kwargs: Any) -> None:
        self.slot_owner = slot_owner
        super().__init__(**kwargs)

    async def _connect(self) -> None:
        self.host, self.port = await asyncio.to_thread(self.slot_owner.address)
        await super()._connect()  # type: ignore[no-untyped-call]

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except _REDIRECTS as exc:
            await self.disconnect()
            raise RedisConnectionError(f"cluster redirect ({type(exc).__name__} {exc})") from exc


def _slot(prefix: str) -> int:
    return key_slot(f"{{{prefix}}}".encode())


# ---- pools ------------------------------------------------------------------------------
def connection_pool(url: str, prefix: str, **kwargs: Any) -> redis.ConnectionPool:
    """A redis-py connection pool for ``url`` (``kwargs`` go to every data connection)."""
    kind = scheme(url)
    if kind == SENTINEL:
        topo = parse(url)
        manager = redis.sentinel.Sentinel(list(topo.hosts), sentinel_kwargs=_sentinel_kwargs(topo))
        pool: redis.ConnectionPool = redis.sentinel.SentinelConnectionPool(  # type: ignore[no-untyped-call]
            topo.master,
            manager,
            connection_class=_SentinelConnection,
            **topo.options,
            **kwargs,
        )
        return pool
    if kind == CLUSTER:
        topo = parse(url)
        return redis.ConnectionPool(
            connection_class=_SlotConnection,
            slot_owner=SlotOwner(topo, _slot(prefix)),
            **topo.options,
            **kwargs,
        )
    return redis.ConnectionPool.from_url(without_store_params(url), **kwargs)


def async_connection_pool(url: str, prefix: str, **kwargs: Any) -> redis.asyncio.ConnectionPool:
    """The asyncio counterpart of :func:`connection_pool`."""
    kind = scheme(url)
    if kind == SENTINEL:
        topo = parse(url)
        manager = redis.asyncio.sentinel.Sentinel(
            list(topo.hosts), sentinel_kwargs=_sentinel_kwargs(topo)
        )
        pool: redis.asyncio.ConnectionPool = redis.asyncio.sentinel.SentinelConnectionPool(  # type: ignore[no-untyped-call]
            topo.master,
            manager,
            connection_class=_AsyncSentinelConnection,
            **topo.options,
            **kwargs,
        )
        return pool
    if kind == CLUSTER:
        topo = parse(url)
        return redis.asyncio.ConnectionPool(
            connection_class=_AsyncSlotConnection,
            slot_owner=SlotOwner(topo, _slot(prefix)),
            **topo.options,
            **kwargs,
        )
    return redis.asyncio.ConnectionPool.from_url(without_store_params(url), **kwargs)


def _hosts_text(hosts: tuple[tuple[str, int], ...]) -> str:
    return ",".join(f"{h}:{p}" for h, p in hosts)


def describe(pool: redis.ConnectionPool) -> str:
    """Where ``pool`` connects, for log lines and errors."""
    if isinstance(pool, redis.sentinel.SentinelConnectionPool):
        where = ",".join(
            "{host}:{port}".format(**s.connection_pool.connection_kwargs)
            for s in pool.sentinel_manager.sentinels
        )
        return f"sentinel:{where}/{pool.service_name}"
    kw = pool.connection_kwargs
    owner = kw.get("slot_owner")
    if isinstance(owner, SlotOwner):
        return f"cluster:{_hosts_text(owner.topo.hosts)} slot {owner.slot}"
    if "path" in kw:
        return f"unix:{kw['path']}"
    return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"
