"""The SQLite store's write-ahead-log machinery: waking waiters when another process
commits (an inotify watch on the WAL on Linux, polling elsewhere) and checkpointing the WAL
on a background thread so that no job transaction pays for it."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import sqlite3
import struct
import sys
import threading
import time
from typing import ClassVar

log = logging.getLogger("rota.store.sqlite")
_CHECKPOINT_EVERY = 0.1  # seconds between looks at the WAL's size (background checkpoint)
_CHECKPOINT_AT = 1000  # WAL pages not yet copied back that make it checkpoint
_RESTART_AT = 2000  # WAL pages (8 MB) after which the background checkpoint restarts it
_U32 = struct.Struct("=I")
_RESTART_WAIT = 0.05  # seconds a restart waits for writers and readers before giving up
# Waiting for other processes' writes: ``PRAGMA data_version`` (a cheap, in-memory check)
# says whether another connection committed. On Linux an inotify watch on the database's
# directory wakes the waiter when any connection writes the WAL (every commit does): the
# check follows at doubling intervals from POLL_MIN for WATCH_AFTER (a commit publishes
# itself just after writing the WAL), then the wait blocks until the next write, checking
# anyway every WATCH_MAX. Elsewhere the check is polled: every POLL_MIN right after a
# change, then every tenth of the quiet time so far, at most every POLL_MAX.
WATCH_AFTER = 0.02
COALESCE = 0.0002
WATCH_MAX = 0.025
POLL_MIN = 0.0003
POLL_MAX = 0.005
POLL_SLOPE = 0.1


_IN_MODIFY = 0x00000002
_IN_Q_OVERFLOW = 0x00004000
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then name)


class WalWatch:
    """Linux: an inotify watch that wakes a waiting connection when the database's WAL file
    is written to, i.e. when any connection commits (ours too: the caller checks
    ``PRAGMA data_version`` after a wake-up, as it must anyway)."""

    def __init__(self, fd: int, wal_name: bytes) -> None:
        self.fd = fd
        self.wal_name = wal_name
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN)

    @classmethod
    def open(cls, path: str) -> WalWatch | None:
        """A watch on ``path``'s WAL, or ``None`` where inotify is not available."""
        if not sys.platform.startswith("linux") or path == ":memory:" or path.startswith("file:"):
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
            if fd < 0:  # e.g. fs.inotify.max_user_instances reached
                log.debug("inotify unavailable (errno %d): polling for changes", ctypes.get_errno())
                return None
            full = os.path.abspath(path)
            directory = os.fsencode(os.path.dirname(full))
            if libc.inotify_add_watch(fd, directory, _IN_MODIFY) < 0:
                log.debug("inotify watch failed (errno %d): polling", ctypes.get_errno())
                os.close(fd)
                return None
        except (OSError, AttributeError) as exc:
            log.debug("inotify unavailable (%s): polling for changes", exc)
            return None
        return cls(fd, os.fsencode(os.path.basename(full)) + b"-wal")

    def wait(self, timeout: float) -> bool:
        """Block until the WAL is written to (``True``) or ``timeout`` seconds pass (events
        queued since the last call count: a spurious early return is allowed)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.poller.poll(left * 1000):
                return False
            time.sleep(COALESCE)  # let the commit finish writing: one wake-up, not one a page
            if self._drain():
                return True

    def _drain(self) -> bool:
        """Read the queued events; whether one was about our WAL (or lost in an overflow)."""
        found = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return found
            offset = 0
            while offset + _EVENT.size <= len(data):
                _wd, mask, _cookie, size = _EVENT.unpack_from(data, offset)
                start = offset + _EVENT.size
                name = data[start : start + size].rstrip(b"\0")
                offset = start + size
                if mask & _IN_Q_OVERFLOW or name == self.wal_name:
                    found = True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class Checkpointer:
    """Checkpoints a database's WAL from a daemon thread, one per process and file.

    SQLite's own auto-checkpoint runs inside the ``COMMIT`` that takes the WAL over its
    limit and fsyncs twice there: a stall of several milliseconds for whichever scheduler or
    worker transaction drew the short straw, every couple of thousand jobs. Here a thread
    looks at the WAL's size every _CHECKPOINT_EVERY and, past _CHECKPOINT_AT frames not yet
    copied back, runs a ``PASSIVE`` checkpoint (which neither waits for nor blocks readers
    and writers) while the others keep going. Under a steady stream of commits the WAL
    never gets a quiet moment to start over by itself, so past _RESTART_AT frames a
    ``RESTART`` checkpoint makes it (holding the write lock only to copy the few frames
    written since the passive pass). The auto-checkpoint stays as a safety net at a higher
    limit. Shared by the process's stores of the file; stopped with the last of them.
    """

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _by_path: ClassVar[dict[str, Checkpointer]] = {}

    def __init__(self, path: str) -> None:
        self.path = path
        self.users = 0
        self.stop = threading.Event()

    @classmethod
    def attach(cls, path: str) -> Checkpointer | None:
        if path == ":memory:" or path.startswith("file:"):
            return None
        key = os.path.realpath(path)
        with cls._lock:
            cp = cls._by_path.get(key)
            if cp is None:
                cp = cls._by_path[key] = cls(key)
                thread = threading.Thread(
                    target=cp._run, name="rota-sqlite-checkpoint", daemon=True
                )
                thread.start()
            cp.users += 1
            return cp

    def detach(self) -> None:
        with self._lock:
            self.users -= 1
            if self.users <= 0:
                self.stop.set()
                if self._by_path.get(self.path) is self:
                    del self._by_path[self.path]

    @classmethod
    def _forget_all(cls) -> None:
        """In a forked child: the threads did not come along."""
        cls._lock = threading.Lock()
        cls._by_path = {}

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            return
        shm = -1
        try:
            db.execute(f"PRAGMA busy_timeout={int(_RESTART_WAIT * 1000)}")
            while not self.stop.wait(_CHECKPOINT_EVERY):
                try:
                    if shm < 0:
                        shm = os.open(self.path + "-shm", os.O_RDONLY)
                    frames, backfilled = _wal_frames(shm)
                except OSError:  # not there (yet): look again next time
                    if shm >= 0:
                        os.close(shm)
                        shm = -1
                    continue
                if frames - backfilled < _CHECKPOINT_AT:
                    continue
                busy, frames, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if not busy and frames >= _RESTART_AT:
                    db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        except sqlite3.Error as exc:  # the file went away, or is not ours to write
            log.debug("background checkpoint of %s stopped: %s", self.path, exc)
        finally:
            if shm >= 0:
                os.close(shm)
            db.close()


def _wal_frames(shm: int) -> tuple[int, int]:
    """``(frames in the WAL, frames already copied back)``, read from the WAL index header
    (``mxFrame`` at byte 16, ``nBackfill`` at byte 96 of the -shm file, native byte order:
    https://www.sqlite.org/walformat.html). Only a hint for when to checkpoint."""
    header = os.pread(shm, 100, 0)
    if len(header) < 100:
        return 0, 0
    frames = _U32.unpack_from(header, 16)[0]
    backfilled = _U32.unpack_from(header, 96)[0]
    return frames, min(backfilled, frames)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=Checkpointer._forget_all)
