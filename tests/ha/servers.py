"""Private replicated servers for the high-availability tests and ``bench/ha.py``: a Redis
primary with replicas and three Sentinels, a Redis Cluster, a PostgreSQL primary with a
streaming standby. Each runs on free loopback ports in a temporary folder, in the
foreground of a process this module started, and is stopped by that process id (also at
interpreter exit, whatever happened)."""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")
HOST = "127.0.0.1"
MASTER = "rota-ha"
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), Path("."))

_running: dict[int, subprocess.Popen[bytes]] = {}


def _stop_all() -> None:
    for pid in list(_running):
        stop_pid(pid)


atexit.register(_stop_all)


def stop_pid(pid: int, sig: int = signal.SIGKILL) -> None:
    """Stop a process this module started, by its id, and reap it."""
    popen = _running.pop(pid, None)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(10)


def spawn(argv: list[str], log: Path, **kw: Any) -> subprocess.Popen[bytes]:
    out: IO[bytes] = log.open("ab")
    try:
        popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **kw
        )
    finally:
        out.close()
    _running[popen.pid] = popen
    return popen


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_ports(count: int, *, bus: bool = False) -> list[int]:
    """``count`` free ports (with ``bus``, port + 10000 is free too: Redis Cluster's bus)."""
    found: list[int] = []
    while len(found) < count:
        port = random.randint(20000, 29999)
        if port in found or not port_free(port) or (bus and not port_free(port + 10000)):
            continue
        found.append(port)
    return found


def wait_until(what: str, check: Callable[[], T | None], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except Exception:  # a server still starting
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def redis_client(port: int) -> Any:
    import redis

    return redis.Redis(
        HOST, port, socket_timeout=2, socket_connect_timeout=2, decode_responses=True
    )


def _ask(port: int, *command: Any) -> Any:
    client = redis_client(port)
    try:
        return client.execute_command(*command)
    finally:
        client.close()


# ---- Redis ------------------------------------------------------------------------------
@dataclass
class RedisNode:
    port: int
    dir: Path
    extra: list[str]
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = [
            "redis-server",
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--daemonize", "no",
            *self.extra,
        ]  # fmt: skip
        self.popen = spawn(argv, self.dir / "redis.log")
        wait_until(f"redis-server on {self.port}", lambda: _ask(self.port, "PING"), 20)

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        if self.popen is not None:
            stop_pid(self.popen.pid)
            self.popen = None


@dataclass
class SentinelDeployment:
    """A primary, ``replicas`` replicas and three Sentinels (quorum 2, down after 1 s)."""

    root: Path
    replicas: int = 2
    down_after_ms: int = 1000
    nodes: list[RedisNode] = field(default_factory=list)
    sentinels: list[RedisNode] = field(default_factory=list)

    def start(self) -> SentinelDeployment:
        ports = free_ports(1 + self.replicas + 3)
        data, sent = ports[: 1 + self.replicas], ports[1 + self.replicas :]
        primary = data[0]
        for i, port in enumerate(data):
            extra = [] if i == 0 else ["--replicaof", HOST, str(primary)]
            node = RedisNode(port, self.root / f"redis-{port}", extra)
            node.start()
            self.nodes.append(node)
        for port in sent:
            d = self.root / f"sentinel-{port}"
            d.mkdir(parents=True, exist_ok=True)
            conf = d / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind {HOST}\ndaemonize no\ndir {d}\n"
                f"sentinel monitor {MASTER} {HOST} {primary} 2\n"
                f"sentinel down-after-milliseconds {MASTER} {self.down_after_ms}\n"
                f"sentinel failover-timeout {MASTER} 10000\n"
                f"sentinel parallel-syncs {MASTER} 1\n"
            )
            node = RedisNode(port, d, [])
            node.popen = spawn(["redis-sentinel", str(conf)], d / "sentinel.log")
            self.sentinels.append(node)
        wait_until("the replicas in sync", self._replicas_synced, 30)
        wait_until("the Sentinels to know each other and the replicas", self._sentinels_ready, 30)
        return self

    def _replicas_synced(self) -> bool:
        info = redis_client(self.nodes[0].port).info("replication")
        online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        return len(online) == self.replicas and all(s.get("state") == "online" for s in online)

    def _sentinels_ready(self) -> bool:
        for s in self.sentinels:
            fields = _ask(s.port, "SENTINEL", "MASTER", MASTER)  # parsed by redis-py
            if int(fields["num-other-sentinels"]) < 2 or int(fields["num-slaves"]) < self.replicas:
                return False
        return True

    @property
    def url_hosts(self) -> str:
        return ",".join(f"{HOST}:{s.port}" for s in self.sentinels)

    def url(self, prefix: str, extra: str = "") -> str:
        return f"redis+sentinel://{self.url_hosts}/{MASTER}?prefix={prefix}{extra}"

    def primary_port(self) -> int:
        for s in self.sentinels:
            with contextlib.suppress(Exception):
                _, port = _ask(s.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
                return int(port)
        raise RuntimeError("no Sentinel answers")

    def node(self, port: int) -> RedisNode:
        return next(n for n in self.nodes if n.port == port)

    def kill_primary(self) -> int:
        """SIGKILL the primary; returns its port."""
        port = self.primary_port()
        self.node(port).kill()
        return port

    def wait_failover(self, old: int, timeout: float = 30.0) -> int:
        """Wait until the Sentinels name a new primary that answers as one; its port."""

        def promoted() -> int | None:
            port = self.primary_port()
            if port != old and _ask(port, "ROLE")[0] == "master":
                return port
            return None

        return wait_until("a Sentinel failover", promoted, timeout)

    def restart_as_replica(self, port: int) -> None:
        """Start the killed server again (empty), as a replica of the current primary, once
        every Sentinel names the new one. (Restarted earlier, a Sentinel that still names
        it as the primary sends clients to an empty server whose writes are discarded when
        it is demoted: the first run of bench/ha.py did that, see docs/reliability.md.)"""
        node = self.node(port)

        def agreed() -> int | None:
            seen = {int(_ask(s.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)[1])
                    for s in self.sentinels}  # fmt: skip
            return seen.pop() if len(seen) == 1 and port not in seen else None

        primary = wait_until("every Sentinel to name the new primary", agreed, 60)
        node.extra = ["--replicaof", HOST, str(primary)]
        node.start()
        wait_until("the old primary to resync", self._replicas_synced_any, 30)

    def _replicas_synced_any(self) -> bool:
        info = redis_client(self.primary_port()).info("replication")
        online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        return len(online) == self.replicas and all(s.get("state") == "online" for s in online)

    def stop(self) -> None:
        for node in [*self.sentinels, *self.nodes]:
            node.kill()


@dataclass
class ClusterDeployment:
    """``primaries`` cluster primaries, each with ``replicas`` replicas (node timeout 1 s)."""

    root: Path
    primaries: int = 3
    replicas: int = 0
    nodes: list[RedisNode] = field(default_factory=list)

    def start(self) -> ClusterDeployment:
        count = self.primaries * (1 + self.replicas)
        for port in free_ports(count, bus=True):
            extra = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "1000",
                "--cluster-replica-validity-factor", "0",
            ]  # fmt: skip
            node = RedisNode(port, self.root / f"cluster-{port}", extra)
            node.start()
            self.nodes.append(node)
        argv = ["redis-cli", "--cluster", "create"]
        argv += [f"{HOST}:{n.port}" for n in self.nodes]
        argv += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
        wait_until("the cluster to be ok", self._ok, 30)
        return self

    def _ok(self) -> bool:
        for n in self.nodes:
            if not n.alive:
                continue
            info = _ask(n.port, "CLUSTER", "INFO")
            if "cluster_state:ok" not in info:
                return False
        if self.replicas:
            return all(self._replica_count(p) >= self.replicas for p in self.primary_ports())
        return True

    def _replica_count(self, port: int) -> int:
        info = redis_client(port).info("replication")
        return sum(
            1
            for k, v in info.items()
            if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
        )

    def primary_ports(self) -> list[int]:
        for n in self.nodes:
            if not n.alive:
                continue
            with contextlib.suppress(Exception):
                return sorted({int(s[2][1]) for s in _ask(n.port, "CLUSTER", "SLOTS")})
        raise RuntimeError("no cluster node answers")

    def owner(self, prefix: str) -> int:
        """The port of the primary that serves ``{prefix}``'s hash slot."""
        from redis.crc import key_slot

        slot = key_slot(f"{{{prefix}}}".encode())
        for n in self.nodes:
            if not n.alive:
                continue
            with contextlib.suppress(Exception):
                for start, end, primary, *_ in _ask(n.port, "CLUSTER", "SLOTS"):
                    if int(start) <= slot <= int(end):
                        return int(primary[1])
        raise RuntimeError(f"no node serves slot {slot}")

    def client_for(self, prefix: str) -> Any:
        """A plain client of the primary that serves ``{prefix}``."""
        return redis_client(self.owner(prefix))

    def url(self, prefix: str, extra: str = "") -> str:
        hosts = ",".join(f"{HOST}:{n.port}" for n in self.nodes[: self.primaries])
        return f"redis+cluster://{hosts}/?prefix={prefix}{extra}"

    def node(self, port: int) -> RedisNode:
        return next(n for n in self.nodes if n.port == port)

    def kill_owner(self, prefix: str) -> int:
        port = self.owner(prefix)
        self.node(port).kill()
        return port

    def wait_failover(self, prefix: str, old: int, timeout: float = 30.0) -> int:
        def promoted() -> int | None:
            port = self.owner(prefix)
            if port != old and _ask(port, "ROLE")[0] == "master":
                ok = all(
                    "cluster_state:ok" in _ask(n.port, "CLUSTER", "INFO")
                    for n in self.nodes
                    if n.alive
                )
                return port if ok else None
            return None

        return wait_until("a cluster failover", promoted, timeout)

    def restart(self, port: int) -> None:
        """Start a killed node again (its nodes.conf kept, its data gone): it rejoins as
        a replica of the primary that took its place."""
        self.node(port).start()
        wait_until("the cluster to settle", self._ok, 60)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


_shared: ClusterDeployment | None = None


def need_binaries(*names: str) -> None:
    """Skip (fail under ROTA_REQUIRE_SERVICES=1) when a server binary is missing."""
    from tests.stores import skip_or_fail

    for name in names:
        if shutil.which(name) is None and not (PG_BIN / name).exists():
            skip_or_fail(f"{name} is not installed (apt-get install redis-server redis-sentinel)")


def shared_cluster() -> ClusterDeployment:
    """One 3-primary cluster for the whole test process (each test has its own prefix),
    stopped at exit."""
    global _shared
    need_binaries("redis-server", "redis-cli")
    if _shared is None:
        root = Path(tempfile.mkdtemp(prefix="rota-cluster-"))
        cluster = ClusterDeployment(root)
        try:
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
        _shared = cluster

        def stop() -> None:
            cluster.stop()
            shutil.rmtree(root, ignore_errors=True)

        atexit.register(stop)
    return _shared


# ---- PostgreSQL -------------------------------------------------------------------------
def _as_postgres(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, user="postgres", check=True, capture_output=True, **kw)


@dataclass
class PgServer:
    port: int
    dir: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self, settings: dict[str, str]) -> None:
        argv = [str(PG_BIN / "postgres"), "-D", str(self.dir), "-p", str(self.port)]
        argv += ["-c", f"listen_addresses={HOST}", "-c", f"unix_socket_directories={self.dir}"]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        self.popen = spawn(argv, self.dir.parent / f"pg-{self.port}.log", user="postgres")
        wait_until(f"PostgreSQL on {self.port}", self._ready, 60)

    def _ready(self) -> bool:
        import psycopg

        with psycopg.connect(self.dsn(), connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True

    def dsn(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{db}"

    def sql(self, statement: str) -> Any:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else None

    def in_recovery(self) -> bool:
        return bool(self.sql("SELECT pg_is_in_recovery()")[0][0])

    def kill(self) -> None:
        if self.popen is not None:
            stop_pid(self.popen.pid)
            self.popen = None


SETTINGS = {
    "wal_level": "replica",
    "max_wal_senders": "5",
    "wal_keep_size": "256MB",
    "fsync": "off",  # kill -9 of the server, never of the machine: the page cache keeps it
    "shared_buffers": "32MB",
    "max_connections": "100",
}


@dataclass
class PgDeployment:
    """A PostgreSQL primary and one streaming standby; ``sync``: the standby is
    synchronous (``synchronous_commit=on``, ``synchronous_standby_names='*'``)."""

    sync: bool
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rota-pg-")))
    servers: list[PgServer] = field(default_factory=list)

    def start(self) -> PgDeployment:
        os.chmod(self.root, 0o755)
        shutil.chown(self.root, "postgres", "postgres")
        p1, p2 = free_ports(2)
        primary = PgServer(p1, self.root / f"data-{p1}")
        _as_postgres(
            [str(PG_BIN / "initdb"), "-D", str(primary.dir), "-A", "trust", "-U", "postgres"],
            timeout=120,
        )
        primary.start(SETTINGS)
        self.servers = [primary, PgServer(p2, self.root / f"data-{p2}")]
        self.add_standby(self.servers[1])
        return self

    @property
    def primary(self) -> PgServer:
        return next(s for s in self.servers if s.popen is not None and not s.in_recovery())

    def add_standby(self, standby: PgServer) -> None:
        """A fresh standby of the current primary (``pg_basebackup -R``) in ``standby.dir``."""
        primary = self.primary
        if standby.dir.exists():
            shutil.rmtree(standby.dir)
        _as_postgres(
            [str(PG_BIN / "pg_basebackup"), "-h", HOST, "-p", str(primary.port), "-U", "postgres",
             "-D", str(standby.dir), "-R", "-X", "stream", "-c", "fast"],
            timeout=120,
        )  # fmt: skip
        # A standby inherits the primary's settings: never a synchronous standby itself.
        (standby.dir / "postgresql.auto.conf").open("a").write(
            "synchronous_standby_names = ''\n"
            f"primary_conninfo = 'host={HOST} port={primary.port} user=postgres "
            "application_name=standby'\n"
        )
        standby.start(SETTINGS)
        wait_until("the standby to stream", lambda: self._streaming(primary), 60)
        if self.sync:
            primary.sql("ALTER SYSTEM SET synchronous_standby_names = '*'")
            primary.sql("ALTER SYSTEM SET synchronous_commit = 'on'")
            primary.sql("SELECT pg_reload_conf()")
            wait_until("a synchronous standby", lambda: self._sync_state(primary), 30)

    def _streaming(self, primary: PgServer) -> bool:
        rows = primary.sql("SELECT state FROM pg_stat_replication")
        return bool(rows) and rows[0][0] == "streaming"

    def _sync_state(self, primary: PgServer) -> bool:
        rows = primary.sql("SELECT sync_state FROM pg_stat_replication")
        return bool(rows) and rows[0][0] == "sync"

    def url(self, schema: str, db: str = "postgres") -> str:
        hosts = ",".join(f"{HOST}:{s.port}" for s in self.servers)
        return (
            f"postgresql://postgres@{hosts}/{db}?target_session_attrs=read-write"
            f"&connect_timeout=2&schema={schema}"
        )

    def kill_primary(self) -> PgServer:
        primary = self.primary
        primary.kill()
        return primary

    def promote(self) -> PgServer:
        standby = next(s for s in self.servers if s.popen is not None)
        standby.sql("SELECT pg_promote(true, 60)")
        if self.sync:  # the new primary has no standby yet: commits must not wait
            standby.sql("ALTER SYSTEM SET synchronous_standby_names = ''")
            standby.sql("SELECT pg_reload_conf()")
        return standby

    def stop(self) -> None:
        for server in self.servers:
            server.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running(deployment: Any) -> Iterator[Any]:
    """Start ``deployment`` and stop it (by pid) however the block ends."""
    try:
        yield deployment.start()
    finally:
        deployment.stop()
