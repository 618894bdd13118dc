"""The SQLite store's database file: opening it (WAL mode, the schema), write
transactions (``BEGIN IMMEDIATE``), the clock, waiting for other connections' commits, and
sqlite3 errors turned into ``StoreError``."""

from __future__ import annotations

import functools
import inspect
import logging
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from rota.core.errors import InvalidOption, StoreError
from rota.core.model import (
    NodeSpec,
)
from rota.store.contract import ATTEMPT_HISTORY, attempt_history_param
from rota.store.named_queries import load_queries
from rota.store.sqlite.wal import (
    POLL_MAX,
    POLL_MIN,
    POLL_SLOPE,
    WATCH_AFTER,
    WATCH_MAX,
    Checkpointer,
    WalWatch,
)

QUERIES = load_queries(
    "rota.store.sqlite",
    *(
        f"queries/{name}.sql"
        for name in ("schema", "submit", "worker", "scheduler", "flow", "attempts")
    ),
)
log = logging.getLogger("rota.store.sqlite")
_AUTOCHECKPOINT = 10000  # WAL pages before a committing writer checkpoints in-line itself
_WAL_SIZE_LIMIT = 32 * 1024 * 1024  # bytes the WAL file is cut back to when it starts over
_ADDED_COLUMN = re.compile(r"ADD COLUMN (\w+)")


def sqlite_path(url: str) -> str:
    """``sqlite:///rota.db`` -> ``rota.db``; ``sqlite:////tmp/x.db`` -> ``/tmp/x.db``."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc:
        raise InvalidOption(f"SQLite URLs look like sqlite:///path/to/file.db, not {url!r}")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise InvalidOption(f"SQLite URL {url!r} names no file")
    return path


def split_statements(script: str) -> Iterator[str]:
    """The complete statements of a script (a ``;`` inside one, as in a trigger body,
    does not split it)."""
    pending = ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""
    if pending.strip(" \n;"):
        yield pending


C = TypeVar("C", bound=type)


def _raising_store_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.Error, OSError) as exc:  # the cause is kept (``__cause__``)
            where = getattr(self, "path", None) or getattr(self, "url", "?")
            raise StoreError(f"SQLite store at {where}: {exc}") from exc

    return call


def raises_store_errors(cls: C) -> C:
    """Class decorator: every public method of ``cls`` (and its constructor) raises
    ``StoreError`` in place of the ``sqlite3.Error`` or ``OSError`` (an unusable file)
    that escapes it, so callers only ever see rota errors."""
    for name, member in inspect.getmembers(cls, inspect.isfunction):
        if name == "__init__" or not name.startswith("_"):
            setattr(cls, name, _raising_store_errors(member))
    return cls


class SQLiteConnection:
    """One connection to the store's database file."""

    def __init__(self, url: str, *, busy_timeout: float = 30.0) -> None:
        self.url = url
        self.busy_timeout = busy_timeout
        self.path = sqlite_path(url)
        self.attempt_history = ATTEMPT_HISTORY
        for key, value in parse_qsl(urlsplit(url).query):
            if key == "attempt_history":
                self.attempt_history = attempt_history_param(value)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT}")
        self.db.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
        self.db.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        with self._write():
            self._create_schema()
        self._seen_version = self._data_version()
        self._changed_at = time.monotonic()
        self._checkpointer = Checkpointer.attach(self.path)
        self._specs: dict[str, tuple[str, NodeSpec]] = {}
        self._watch: WalWatch | None = None  # opened by the first wait for changes
        self._watch_tried = False

    def _create_schema(self) -> None:
        """Create what is missing: tables, then the columns later versions added (a
        database made by an earlier version gets them here), then what uses them."""
        for statement in split_statements(QUERIES["schema"]):
            self.db.execute(statement)
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(jobs)")}
        for statement in split_statements(QUERIES["jobs_columns"]):
            added = _ADDED_COLUMN.search(statement)
            column = added.group(1) if added else ""
            if column not in columns:
                log.info("adding column jobs.%s to %s", column, self.path)
                self.db.execute(statement)
        for statement in split_statements(QUERIES["schema_after_columns"]):
            self.db.execute(statement)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction (``BEGIN IMMEDIATE``: the write lock is taken up front)."""
        cur = self.db.cursor()
        self._begin_immediate(cur)
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def _begin_immediate(self, cur: sqlite3.Cursor) -> None:
        """Take the write lock, retrying with short jittered sleeps. SQLite's own busy
        handler sleeps 1 to 100 ms between tries, which would dominate job latency when a
        scheduler and several workers take turns at the lock."""
        delay = 0.0002
        deadline = 0.0
        cur.execute("PRAGMA busy_timeout=0")
        try:
            while True:
                try:
                    cur.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise
                    now = time.monotonic()
                    deadline = deadline or now + self.busy_timeout
                    if now > deadline:
                        raise
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 0.005)
        finally:
            cur.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")

    def _now(self, cur: sqlite3.Cursor) -> float:
        value: float = cur.execute(QUERIES["now"]).fetchone()[0]
        return value

    def _data_version(self) -> int:
        value: int = self.db.execute("PRAGMA data_version").fetchone()[0]
        return value

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._checkpointer is not None:
            self._checkpointer.detach()
            self._checkpointer = None
        self.db.close()

    def now(self) -> float:
        return self._now(self.db.cursor())

    def _wait_for_change(self, timeout: float, ready: Callable[[], bool]) -> None:
        """Wait until another connection commits and ``ready()`` says so, or until
        ``timeout`` passes."""
        if self._watch is None and not self._watch_tried:
            self._watch_tried = True  # opened before reading the version: no lost wake-up
            self._watch = WalWatch.open(self.path)
        watch = self._watch
        now = time.monotonic()
        deadline = now + timeout
        # The baseline is the version seen when the previous wait ended, not now: a commit
        # that became visible while the caller worked (after it read the state it acted on)
        # must end this wait at once, not be taken for the starting point.
        version = self._seen_version
        current = self._data_version()
        if current != version:
            version = self._seen_version = current
            self._changed_at = now
            if ready():
                return
        while True:
            left = deadline - now
            if left <= 0:
                return
            quiet = now - self._changed_at
            if watch is not None:
                # A commit writes the WAL before it publishes itself in the WAL index, so a
                # write is followed by checks at doubling intervals until it is old news;
                # only then does the wait block until the next write.
                step = max(quiet, POLL_MIN) if quiet < WATCH_AFTER else WATCH_MAX
                if watch.wait(min(left, step)):
                    self._changed_at = time.monotonic()
            else:
                time.sleep(min(max(quiet * POLL_SLOPE, POLL_MIN), POLL_MAX, left))
            current = self._data_version()
            now = time.monotonic()
            if current != version:
                version = self._seen_version = current
                self._changed_at = now
                if ready():
                    return
