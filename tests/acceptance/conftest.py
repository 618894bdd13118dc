"""The acceptance fixture layer: a ``Fleet`` of real ``rota`` processes on one store.

Every process is ``python -m rota ...`` started from the repository root in a session of
its own, with ``ROTA_STORE`` set to the test's store and its output in a log file of its
own under ``tmp_path/logs``. The fleet can signal its processes, wait for live nodes and
for jobs to finish (always with a deadline), and kills every process it started at
teardown, whatever happened: each process group with SIGKILL, then any process that still
carries the fleet's marker in its environment (pool children, or what ``rota demo``
started in sessions of their own). When a test fails, the tail of every log is added to
its report.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest

from rota import Rota
from rota.core.model import JobRecord, NodeRecord, NodeState
from rota.core.states import FINAL_STATES
from rota.store import SCHEDULER_LEASE, Store, open_store
from tests.acceptance.apps import basic
from tests.stores import need_module, store_url
from tests.zookeeper import ZooKeeperServer, zookeeper_server

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
APP = "tests.acceptance.apps.basic:app"
MARK_VAR = "ROTA_ACCEPTANCE_MARK"

# Timings. Short enough that a lost node is noticed in about two seconds, long enough that
# a heartbeat delayed by a busy 2-core machine (or SQLite's write lock) is not mistaken for
# a death: workers heartbeat four times per lease/failure period.
HEARTBEAT = 0.5  # worker --heartbeat
JOB_LEASE_TTL = 2.0  # worker --lease-ttl: a running job's lease without a heartbeat
FAILURE_TIMEOUT = 2.0  # scheduler --failure-timeout: silence that makes a node dead
LEADER_LEASE_TTL = 2.0  # scheduler --lease-ttl: a standby takes over within this
STARTUP_TIMEOUT = 30.0  # a process importing rota and forking its pool on a loaded box


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "demo: runs `rota demo` (a minute at most)")


@dataclass
class Proc:
    """One process the fleet started."""

    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    log: Path
    expect_exit: bool = False  # we signalled it to end: its exit is no surprise

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


class UnexpectedExit(AssertionError):
    pass


@dataclass
class Fleet:
    """Real rota processes sharing the store at ``url``."""

    url: str
    root: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    _store: Store | None = None
    _files: list[IO[bytes]] = field(default_factory=list)
    zookeeper: ZooKeeperServer | None = None  # the coordinator's server, if ZooKeeper

    def __post_init__(self) -> None:
        self.runs = self.root / "runs"
        self.logs = self.root / "logs"
        self.runs.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)

    # ---- the store, as seen from the test ---------------------------------------------
    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.url)
        return self._store

    def env(self, node: str = "", *, with_store: bool = True) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "ROTA_STORE"}
        env.update(
            {
                MARK_VAR: self.marker,
                "ROTA_TEST_NODE": node,
                "ROTA_TEST_RUNS": str(self.runs),
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
                ),
            }
        )
        if with_store:
            env["ROTA_STORE"] = self.url
        return env

    # ---- starting processes -------------------------------------------------------------
    def start(self, name: str, args: Sequence[str], *, env: dict[str, str] | None = None) -> Proc:
        """Start ``python -m rota *args`` as ``name`` (a fresh session, its own log)."""
        if name in self.procs:
            raise ValueError(f"a process called {name!r} was already started")
        log = self.logs / f"{name}.log"
        out = log.open("ab")
        self._files.append(out)
        argv = [sys.executable, "-m", "rota", *args]
        popen = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env if env is not None else self.env(name),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc = Proc(name, argv, popen, log)
        self.procs[name] = proc
        return proc

    def worker(
        self,
        name: str,
        *,
        concurrency: int = 4,
        processes: int | None = None,
        prefetch: int | None = None,
        resources: str = "",
        labels: str = "",
        queues: str = "",
        grace: float = 5.0,
        lease_ttl: float = JOB_LEASE_TTL,
        heartbeat: float = HEARTBEAT,
        app: str = APP,
        extra: Sequence[str] = (),
    ) -> Proc:
        args = [
            "worker",
            app,
            "--name",
            name,
            "--concurrency",
            str(concurrency),
            "--lease-ttl",
            str(lease_ttl),
            "--heartbeat",
            str(heartbeat),
            "--grace",
            str(grace),
        ]
        for flag, value in (
            ("--processes", processes),
            ("--prefetch", prefetch),
            ("--resources", resources),
            ("--labels", labels),
            ("--queues", queues),
        ):
            if value not in (None, ""):
                args += [flag, str(value)]
        return self.start(name, [*args, *extra])

    def scheduler(
        self,
        name: str = "scheduler",
        *,
        failure_timeout: float = FAILURE_TIMEOUT,
        lease_ttl: float = LEADER_LEASE_TTL,
        policy: str | None = None,
    ) -> Proc:
        args = [
            "scheduler",
            "--store",
            self.url,
            "--failure-timeout",
            str(failure_timeout),
            "--lease-ttl",
            str(lease_ttl),
        ]
        if policy:
            args += ["--policy", policy]
        return self.start(name, args)

    # ---- signals --------------------------------------------------------------------------
    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process itself (not its pool children)."""
        proc = self.procs[name]
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            proc.expect_exit = True
        os.kill(proc.pid, sig)

    def wait_exit(self, name: str, timeout: float) -> int:
        proc = self.procs[name]
        proc.expect_exit = True
        try:
            return proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{name} still running after {timeout} s") from None

    def check_alive(self) -> None:
        """Fail at once (with its log) if a process died that nobody told to."""
        for proc in self.procs.values():
            if not proc.expect_exit and not proc.alive():
                raise UnexpectedExit(
                    f"{proc.name} exited with code {proc.popen.returncode}:\n{self.tail(proc.name)}"
                )

    # ---- waiting --------------------------------------------------------------------------
    def wait_for(
        self, what: str, check: Callable[[], T | None], timeout: float, interval: float = 0.05
    ) -> T:
        """Poll ``check`` until it returns something truthy; fail after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            self.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(interval)

    def nodes(self, states: Sequence[NodeState] | None = None) -> list[NodeRecord]:
        return self.store.list_nodes(states)

    def live_nodes(self) -> dict[str, NodeRecord]:
        """Live nodes by name (the ``--name`` given to the worker)."""
        return {n.spec.name: n for n in self.nodes([NodeState.LIVE])}

    def node_names(self) -> dict[str, str]:
        """Every node id ever registered -> its name."""
        return {n.id: n.spec.name for n in self.nodes()}

    def wait_nodes(
        self, count: int, names: Sequence[str] = (), timeout: float = STARTUP_TIMEOUT
    ) -> dict[str, NodeRecord]:
        """Wait until at least ``count`` nodes (and every one of ``names``) are live."""

        def ready() -> dict[str, NodeRecord] | None:
            live = self.live_nodes()
            ok = len(live) >= count and all(n in live for n in names)
            return live if ok else None

        return self.wait_for(f"{count} live nodes {list(names)}", ready, timeout)

    def leader(self) -> tuple[str, int] | None:
        """``(process name, token)`` of the scheduler holding the lease, if any."""
        lease = self.store.get_lease(SCHEDULER_LEASE)
        if lease is None:
            return None
        parts = lease.holder.split(":")
        pid = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1
        for proc in self.procs.values():
            if proc.pid == pid:
                return proc.name, lease.token
        return lease.holder, lease.token

    def wait_leader(self, timeout: float = STARTUP_TIMEOUT) -> tuple[str, int]:
        return self.wait_for("a scheduler leader", self.leader, timeout)

    def jobs(self, ids: Sequence[str]) -> list[JobRecord]:
        out: list[JobRecord] = []
        for i in range(0, len(ids), 500):
            out += self.store.get_jobs(ids[i : i + 500])
        return out

    def wait_final(self, ids: Sequence[str], timeout: float) -> dict[str, JobRecord]:
        """Wait until every job in ``ids`` is final; fail after ``timeout`` s with a
        summary of the stragglers. Returns the records by id."""
        deadline = time.monotonic() + timeout
        wanted = list(ids)
        while True:
            records = self.jobs(wanted)
            assert len(records) == len(wanted), "jobs went missing from the store"
            left = [r for r in records if r.state not in FINAL_STATES]
            if not left:
                return {r.id: r for r in records}
            self.check_alive()
            if time.monotonic() > deadline:
                states = Counter(r.state.value for r in left)
                sample = "\n".join(
                    f"  {r.id} {r.task} {r.state.value} attempts={r.attempts} node={r.node_id}"
                    f" error={r.error}"
                    for r in left[:10]
                )
                raise AssertionError(
                    f"{len(left)} of {len(wanted)} jobs unfinished after {timeout} s "
                    f"({dict(states)}):\n{sample}"
                )
            time.sleep(0.1)

    # ---- the command line ---------------------------------------------------------------
    def rota(
        self,
        *args: str,
        with_store: bool = True,
        env: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m rota *args`` to completion (``ROTA_STORE`` set unless told;
        ``env`` adds to the environment)."""
        return subprocess.run(
            [sys.executable, "-m", "rota", *args],
            cwd=REPO,
            env={**self.env("cli", with_store=with_store), **(env or {})},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # ---- logs -----------------------------------------------------------------------------
    def log(self, name: str) -> str:
        return self.procs[name].log.read_text(errors="replace")

    def tail(self, name: str, lines: int = 40) -> str:
        text = self.log(name).splitlines()[-lines:]
        return "\n".join(f"    {line}" for line in text)

    def tails(self, lines: int = 40) -> str:
        parts = []
        for proc in self.procs.values():
            code = proc.popen.poll()
            status = "running" if code is None else f"exit code {code}"
            parts.append(f"--- {proc.name} (pid {proc.pid}, {status}): {proc.log}")
            parts.append(self.tail(proc.name, lines))
        return "\n".join(parts)

    # ---- teardown -------------------------------------------------------------------------
    def close(self) -> None:
        """Kill everything this fleet started, reap it, close files and the store."""
        for proc in self.procs.values():
            if proc.alive():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)  # stopped ones too
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(10)
        kill_marked(self.marker)
        for f in self._files:
            f.close()
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
            self._store = None


def marked_pids(marker: str) -> list[int]:
    """Processes whose environment carries ``MARK_VAR=marker``: the ones a fleet started,
    their children, and what those started (``/proc``; Linux only)."""
    needle = f"{MARK_VAR}={marker}".encode()
    found = []
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\0"):
                found.append(int(entry))
    return found


def child_pids(pid: int) -> list[int]:
    """The live (not zombie) direct children of ``pid`` (``/proc``; Linux only)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.append(int(entry))
    return found


def kill_marked(marker: str) -> None:
    for _ in range(3):
        pids = marked_pids(marker)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


FLEET_KEY = pytest.StashKey[Fleet]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    fleet = item.stash.get(FLEET_KEY, None)
    if fleet is not None and report.failed and report.when in ("setup", "call"):
        report.sections.append(("rota process logs (tails)", fleet.tails()))
    return report


# ---- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _no_ambient_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ROTA_STORE`` would override every URL the tests hand out (and
    ``ROTA_COORDINATOR`` the coordinator: the ``coordination`` fixture sets it)."""
    monkeypatch.delenv("ROTA_STORE", raising=False)
    monkeypatch.delenv("ROTA_COORDINATOR", raising=False)


@pytest.fixture
def kind() -> str:
    """The store kind; tests parametrise it to run on several."""
    return "sqlite"


@pytest.fixture
def url(kind: str, tmp_path: Path) -> Iterator[str]:
    with store_url(kind, tmp_path) as u:
        yield u


@pytest.fixture
def coordinator() -> str:
    """The coordinator kind ("store" or "zookeeper"); tests parametrise it to run on both."""
    return "store"


@pytest.fixture
def coordination(
    coordinator: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ZooKeeperServer | None]:
    """With ``zookeeper``: a private ZooKeeper server (stopped by pid afterwards), whose
    URL every process of the fleet gets as ``ROTA_COORDINATOR``."""
    if coordinator == "store":
        yield None
        return
    need_module("kazoo", "zookeeper")
    with zookeeper_server(tmp_path / "zookeeper") as server:
        monkeypatch.setenv("ROTA_COORDINATOR", server.url())
        yield server


@pytest.fixture
def fleet(url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    f = Fleet(url, tmp_path)
    # Tests that parametrise ``coordinator`` get their coordination set up first.
    if "coordinator" in request.fixturenames:
        f.zookeeper = request.getfixturevalue("coordination")
    request.node.stash[FLEET_KEY] = f
    try:
        yield f
    finally:
        f.close()


@pytest.fixture
def client(url: str) -> Iterator[Rota]:
    """The test app's tasks, submitting to this test's store."""
    app = basic.build(url)
    yield app
    app.close()
