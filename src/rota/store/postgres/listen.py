"""LISTEN/NOTIFY for the PostgreSQL store: wake-ups on a dedicated connection, a channel
LISTENed only while someone waits on it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from contextlib import suppress

import psycopg
from psycopg import sql

from rota.core.errors import StoreError
from rota.store.postgres.connection import Conn, PostgresConnection

# A channel nobody waited on for this long is UNLISTENed: a LISTENing connection that is not
# read holds back PostgreSQL's (global) notification queue.
LISTEN_IDLE = 10.0
TEND_EVERY = 1.0


class PostgresListener(PostgresConnection):
    """The store's listening connection and the channels it LISTENs to."""

    def __init__(self, url: str, *, pool_size: int = 2, timeout: float = 15.0) -> None:
        super().__init__(url, pool_size=pool_size, timeout=timeout)
        self._listen_conn: Conn | None = None
        self._listening: set[str] = set()
        self._fired: set[str] = set()
        self._waited: dict[str, float] = {}  # channel -> when a wait last used it
        self._tended = 0.0

    def _after_fork(self) -> None:
        if os.getpid() != self._pid:  # the parent's listening connection: forget it
            self._listen_conn = None
            self._listening.clear()
            self._fired.clear()
        super()._after_fork()

    def _before_statement(self) -> None:
        if self._listen_conn is not None:
            self._tend_listener()

    def close(self) -> None:
        listener, self._listen_conn = self._listen_conn, None
        forked = os.getpid() != self._pid
        super().close()
        if listener is not None and not forked:
            with suppress(Exception):
                listener.close()

    # ---- LISTEN / NOTIFY -----------------------------------------------------------
    def _close_listener(self) -> None:
        conn, self._listen_conn = self._listen_conn, None
        self._listening.clear()
        if conn is not None:
            with suppress(Exception):  # closing a broken connection
                conn.close()

    def _listen(self, channels: frozenset[str]) -> bool:
        """Make sure the listening connection LISTENs to ``channels`` (connecting it if
        needed). ``True`` when one of them is new: what was sent before is unseen. Raises
        ``psycopg.Error`` when PostgreSQL cannot be reached."""
        if self._closed:
            raise StoreError("the PostgreSQL store is closed")
        now = time.monotonic()
        for channel in channels:
            self._waited[channel] = now
        self._after_fork()
        conn = self._listen_conn
        if conn is None or conn.closed:
            self._close_listener()
            conn = psycopg.connect(self.conninfo, **self._connect_kwargs())
            self._listen_conn = conn
            self._tended = now
        fresh = False
        for channel in channels - self._listening:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            self._listening.add(channel)
            fresh = True
        return fresh

    def _try_listen(self, channels: frozenset[str]) -> None:
        """:meth:`_listen`, best effort (the next wait connects again)."""
        try:
            self._listen(channels)
        except (psycopg.Error, StoreError):
            self._close_listener()

    def _unlisten(self, channels: Iterable[str]) -> None:
        conn = self._listen_conn
        for channel in list(channels):
            self._fired.discard(channel)
            self._waited.pop(channel, None)
            if conn is not None and channel in self._listening:
                self._listening.discard(channel)
                try:
                    conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(channel)))
                except psycopg.Error:
                    self._close_listener()
                    conn = None

    def _tend_listener(self) -> None:
        """Between waits (at most once a second): read what the listening connection has
        received, and UNLISTEN the channels nobody waited on lately (a standby scheduler, a
        worker that stopped waiting), so that unread notifications never pile up."""
        conn = self._listen_conn
        now = time.monotonic()
        if conn is None or now - self._tended < TEND_EVERY:
            return
        self._tended = now
        try:
            for note in conn.notifies(timeout=0):
                self._fired.add(note.channel)
        except psycopg.Error:
            self._close_listener()
            return
        self._unlisten([c for c in self._listening if now - self._waited.get(c, 0.0) > LISTEN_IDLE])

    def _wait(
        self, channels: frozenset[str], timeout: float, missed: Callable[[], bool] | None = None
    ) -> bool:
        """Block until a NOTIFY on one of ``channels`` (``True``) or ``timeout`` (``False``).
        Notifications on other channels are kept for later waits. Right after a new LISTEN,
        ``missed()`` tells whether there is work already (then it returns at once)."""
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            fresh = self._listen(channels)
            if fresh and missed is not None and missed():
                return True
            conn = self._listen_conn
            assert conn is not None
            polled = False  # even with no time left, read what has arrived
            while True:
                hit = self._fired & channels
                if hit:
                    self._fired -= hit
                    return True
                left = deadline - time.monotonic()
                if left <= 0 and polled:
                    return False
                for note in conn.notifies(timeout=max(0.0, left), stop_after=1):
                    self._fired.add(note.channel)
                polled = True
        except (psycopg.Error, StoreError):
            # No listening connection: notifications may have been lost, so the caller is
            # woken (after a short pause, not to spin while PostgreSQL is away).
            self._close_listener()
            time.sleep(min(max(0.0, deadline - time.monotonic()), 0.05))
            return True
        finally:
            now = time.monotonic()
            for channel in channels:
                self._waited[channel] = now
