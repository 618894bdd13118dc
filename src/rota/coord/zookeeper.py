"""Coordination by ZooKeeper (kazoo): membership by ephemeral znodes, leadership by an
election of ephemeral sequential znodes, fenced by the winner's ``czxid``.

Layout under the URL's root (``zookeeper://h1:2181,h2:2181/rota``):

* ``<root>/nodes/<node id>``: ephemeral, one per worker node, JSON with its capacity,
  labels, queues and load level (rewritten when the level changes, never per job). It
  exists exactly while the node's session does: the node is alive.
* ``<root>/leader/c_<sequence>``: ephemeral sequential, one per scheduler; the lowest
  sequence leads. Its ``czxid`` (the zxid of its creation) is the leader's fencing token:
  a later leader's znode was created later, so its token is higher, and the store refuses
  writes under an older token than the newest it was shown (``Store.adopt_lease``).

Every state change of a session is logged once (suspended, expired, back).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError

from rota.coord.base import CLOSED, CONNECTED, LOST, SUSPENDED, Coordinator, Leadership, Membership
from rota.core.errors import InvalidOption, RotaError
from rota.core.model import Lease, NodeSpec, NodeState
from rota.store.contract import SCHEDULER_LEASE, Store

log = logging.getLogger("rota.coord")
DEFAULT_SESSION_TIMEOUT = 6.0  # seconds; the server clamps it to [2, 20] x its tickTime
RECHECK_EVERY = 2.0  # the leader compares store nodes with znodes at least this often
ZK_ERRORS = (KazooException, KazooTimeoutError, OSError)


def parse_url(url: str) -> tuple[str, str, float]:
    """``zookeeper://hosts/root?session_timeout=S`` -> (hosts, root, session timeout)."""
    parts = urlsplit(url)
    if parts.scheme != "zookeeper" or not parts.netloc:
        raise InvalidOption(f"not a ZooKeeper URL: {url!r} (zookeeper://host:2181/root)")
    root = "/" + parts.path.strip("/") if parts.path.strip("/") else "/rota"
    query = parse_qs(parts.query)
    try:
        timeout = float(query.get("session_timeout", [DEFAULT_SESSION_TIMEOUT])[0])
    except ValueError:
        raise InvalidOption(f"bad session_timeout in {url!r}") from None
    if timeout <= 0:
        raise InvalidOption(f"session_timeout must be positive in {url!r}")
    return parts.netloc, root, timeout


class Session:
    """One kazoo client for one role of this process (a node or a scheduler): connects in
    the background, reconnects forever, and logs each change of its state once."""

    def __init__(self, hosts: str, root: str, timeout: float, role: str) -> None:
        self.root, self.role, self.timeout = root, role, timeout
        self.client = KazooClient(
            hosts=hosts,
            timeout=timeout,
            connection_retry={"max_tries": -1, "delay": 0.1, "max_delay": 1.0},
        )
        self.state = LOST
        self.session_id: int | None = None
        self.changes = 0  # state changes seen (for tests and operators)
        self._connected = threading.Event()
        self._callbacks: list[Callable[[], None]] = []
        self._ever = False
        self.client.add_listener(self._on_state)
        self.client.start_async()

    def _on_state(self, state: str) -> None:
        """kazoo's listener (its own thread; must not block)."""
        self.changes += 1
        if state == KazooState.CONNECTED:
            sid = self.client.client_id[0] if self.client.client_id else None
            if not self._ever:
                log.info("%s: ZooKeeper session 0x%x opened", self.role, sid or 0)
            elif sid == self.session_id:
                log.warning("%s: ZooKeeper connection back, same session 0x%x", self.role, sid)
            else:
                log.warning("%s: ZooKeeper back with a new session 0x%x", self.role, sid or 0)
            self._ever = True
            self.session_id = sid
            self.state = CONNECTED
            self._connected.set()
        elif state == KazooState.SUSPENDED:
            self.state = SUSPENDED
            self._connected.clear()
            log.warning(
                "%s: ZooKeeper connection lost (session 0x%x may still be alive)",
                self.role,
                self.session_id or 0,
            )
        else:
            self._connected.clear()
            if self.state != CLOSED:
                self.state = LOST
                if self._ever:
                    log.warning(
                        "%s: ZooKeeper session 0x%x expired", self.role, self.session_id or 0
                    )
        for callback in list(self._callbacks):
            callback()

    def on_change(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def live_session(self) -> int | None:
        """The current session id if connected now, else ``None``."""
        if self.state != CONNECTED or not self.client.connected:
            return None
        client_id = self.client.client_id
        return client_id[0] if client_id else None

    def describe(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "session_id": None if self.session_id is None else f"0x{self.session_id:x}",
            "session_timeout": self.timeout,
        }

    def close(self) -> None:
        self.state = CLOSED
        with contextlib.suppress(Exception):
            self.client.stop()
            self.client.close()


class ZooKeeperLeadership(Leadership):
    """The lowest ``<root>/leader/c_*`` znode leads; its czxid is the fencing token."""

    def __init__(self, session: Session, holder: str) -> None:
        self.zk = session
        self.holder = holder
        self.election = f"{session.root}/leader"
        self.nodes = f"{session.root}/nodes"
        self._znode: str | None = None
        self._token = 0
        self._sid: int | None = None  # session the znode belongs to
        self._dirty = True  # the contenders changed: look again
        self._leading = False
        self._members_changed = True
        self._checked = 0.0
        session.on_change(self._touch)

    def _touch(self, *_: Any) -> None:
        self._dirty = True
        self._members_changed = True

    def _elected(self) -> bool:
        sid = self.zk.live_session()
        if sid is None:
            self._leading = False
            return False
        client = self.zk.client
        try:
            if self._znode is None or self._sid != sid:  # our znode died with its session
                path, stat = client.create(
                    f"{self.election}/c_",
                    self.holder.encode(),
                    ephemeral=True,
                    sequence=True,
                    makepath=True,
                    include_data=True,
                )
                self._znode, self._token, self._sid, self._dirty = path, stat.czxid, sid, True
            if self._dirty:
                self._dirty = False
                contenders = client.get_children(self.election, watch=self._touch)
                first = min(contenders, key=lambda name: name.rsplit("_", 1)[-1])
                self._leading = f"{self.election}/{first}" == self._znode
        except ZK_ERRORS as exc:
            log.warning("scheduler: ZooKeeper election step failed: %s", exc)
            self._dirty = True
            self._leading = False
        return self._leading

    def lead(self, store: Store, ttl: float) -> Lease | None:
        if not self._elected():
            return None
        return store.adopt_lease(SCHEDULER_LEASE, self.holder, self._token, ttl)

    def holds(self, lease: Lease) -> bool:
        return (
            self._leading
            and lease.token == self._token
            and self._sid is not None
            and self.zk.live_session() == self._sid
        )

    def release(self, store: Store, lease: Lease) -> None:
        self._leading = False
        if self._znode is not None:
            with contextlib.suppress(*ZK_ERRORS):
                self.zk.client.delete(self._znode)
            self._znode = None
        store.release_lease(lease)

    def gone(self, store: Store) -> list[str]:
        """Store nodes (live or draining) without a znode: their session ended. Looked at
        when the members changed (a watch) and every few seconds. The store is read
        before ZooKeeper, and a node creates its znode before it registers in the store,
        so a node that is joining is never taken for a dead one."""
        mono = time.monotonic()
        if not self._members_changed and mono - self._checked < RECHECK_EVERY:
            return []
        if self.zk.live_session() is None:
            return []  # ZooKeeper away: nobody can be proven dead
        self._members_changed = False
        self._checked = mono
        ids = [n.id for n in store.list_nodes([NodeState.LIVE, NodeState.DRAINING])]
        try:
            self.zk.client.sync(self.nodes)
            present = set(self.zk.client.get_children(self.nodes, watch=self._touch))
        except NoNodeError:
            present = set()
            with contextlib.suppress(*ZK_ERRORS):
                self.zk.client.ensure_path(self.nodes)
                self.zk.client.get_children(self.nodes, watch=self._touch)
        except ZK_ERRORS as exc:
            log.warning("scheduler: cannot read ZooKeeper members: %s", exc)
            self._members_changed = True
            return []
        return [i for i in ids if i not in present]

    def session(self) -> dict[str, Any]:
        return {
            **self.zk.describe(),
            "leading": self._leading,
            "token": self._token or None,
            "znode": self._znode,
        }

    def close(self) -> None:
        self.zk.close()


class ZooKeeperMembership(Membership):
    """The node's ephemeral znode ``<root>/nodes/<id>``."""

    def __init__(self, session: Session) -> None:
        self.zk = session
        self._spec: NodeSpec | None = None
        self._path: str | None = None
        self._sid: int | None = None  # the session that holds our znode
        self._load = "idle"
        self._published: str | None = None
        self._lock = threading.Lock()

    def _data(self) -> bytes:
        spec = self._spec
        assert spec is not None
        return orjson.dumps(
            {
                "id": spec.id,
                "name": spec.name,
                "slots": spec.slots,
                "prefetch": spec.prefetch,
                "resources": spec.resources,
                "labels": spec.labels,
                "queues": list(spec.queues),
                "host": spec.host,
                "pid": spec.pid,
                "load": self._load,
            }
        )

    def _announce(self, sid: int) -> None:
        assert self._path is not None
        client = self.zk.client
        try:
            client.create(self._path, self._data(), ephemeral=True, makepath=True)
        except NodeExistsError:  # ours, from an earlier session that has not expired yet
            client.delete(self._path)
            client.create(self._path, self._data(), ephemeral=True, makepath=True)
        self._sid, self._published = sid, self._load

    def join(self, spec: NodeSpec) -> None:
        if not self.zk.wait_connected(max(self.zk.timeout, 5.0)):
            raise RotaError(f"ZooKeeper unreachable: node {spec.id} cannot announce itself")
        with self._lock:
            old = self._path
            self._spec, self._path = spec, f"{self.zk.root}/nodes/{spec.id}"
            if old is not None and old != self._path:
                with contextlib.suppress(*ZK_ERRORS):
                    self.zk.client.delete(old)
            sid = self.zk.live_session()
            if sid is None:
                raise RotaError("ZooKeeper session lost while announcing the node")
            self._announce(sid)

    def refresh(self, load: str) -> None:
        with self._lock:
            self._load = load
            sid = self.zk.live_session()
            if self._spec is None or sid is None:
                return
            try:
                if sid != self._sid:
                    self._announce(sid)
                    log.warning(
                        "node %s announced again in ZooKeeper session 0x%x: taking work again",
                        self._spec.id,
                        sid,
                    )
                    for callback in list(self.zk._callbacks):
                        callback()
                elif load != self._published:
                    assert self._path is not None
                    self.zk.client.set(self._path, self._data())
                    self._published = load
            except ZK_ERRORS as exc:
                log.warning("node %s: ZooKeeper update failed: %s", self._spec.id, exc)

    def can_take_work(self) -> bool:
        return self._sid is not None and self.zk.live_session() == self._sid

    def on_change(self, callback: Callable[[], None]) -> None:
        self.zk.on_change(callback)

    def session(self) -> dict[str, Any]:
        return {**self.zk.describe(), "znode": self._path, "load": self._published}

    def close(self) -> None:
        if self._path is not None and self.zk.live_session() is not None:
            with contextlib.suppress(*ZK_ERRORS):
                self.zk.client.delete(self._path)
        self.zk.close()


class ZooKeeperCoordinator(Coordinator):
    kind = "zookeeper"

    def __init__(self, url: str) -> None:
        self.url = url
        self.hosts, self.root, self.session_timeout = parse_url(url)
        self._reader: Session | None = None

    def _session(self, role: str) -> Session:
        return Session(self.hosts, self.root, self.session_timeout, role)

    def leadership(self, holder: str) -> Leadership:
        return ZooKeeperLeadership(self._session("scheduler"), holder)

    def membership(self) -> Membership:
        return ZooKeeperMembership(self._session("node"))

    def node_sessions(self) -> dict[str, dict[str, Any]] | None:
        """Each node znode's owner session and load; ``{}`` if ZooKeeper is unreachable
        (every node then shows without a session)."""
        if self._reader is None:
            self._reader = self._session("reader")
        zk = self._reader
        if not zk.wait_connected(3.0):
            return {}
        out: dict[str, dict[str, Any]] = {}
        path = f"{self.root}/nodes"
        try:
            children = zk.client.get_children(path)
        except NoNodeError:
            return {}
        except ZK_ERRORS:
            return {}
        for child in children:
            try:
                data, stat = zk.client.get(f"{path}/{child}")
            except ZK_ERRORS:
                continue
            try:
                info = orjson.loads(data) if data else {}
            except orjson.JSONDecodeError:
                info = {}
            out[child] = {
                "session_id": f"0x{stat.ephemeralOwner:x}",
                "load": info.get("load") if isinstance(info, dict) else None,
                "since": stat.ctime / 1000.0,
            }
        return out

    def describe(self) -> dict[str, Any]:
        reader = self._reader.describe() if self._reader is not None else None
        return {
            "kind": self.kind,
            "url": self.url,
            "session_timeout": self.session_timeout,
            "reader": reader,
        }

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
