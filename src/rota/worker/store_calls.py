"""A worker node's store access off the event loop: calls on the I/O thread, which owns the
node's store connection, and retries with backoff through store outages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Concatenate, ParamSpec, TypeVar, cast

from rota.app import Rota
from rota.store import Store, open_store

log = logging.getLogger("rota.worker")
T = TypeVar("T")
P = ParamSpec("P")


class StoreCalls:
    """Mixin of :class:`rota.worker.node.WorkerNode`: its store calls on the I/O thread."""

    # Set by WorkerNode.__init__.
    app: Rota
    _io: ThreadPoolExecutor  # the I/O thread
    _io_store: Store | None  # its connection, opened on first use

    async def _call(
        self, fn: Callable[Concatenate[Store, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """Run the :class:`Store` method ``fn`` (``Store.start_jobs``) or the function of a
        store ``fn`` (``fast_paths.complete_and_start``) with ``args`` on the I/O thread,
        which owns this node's connection. A method is looked up on the store instance: the
        base-class function is the abstract one."""
        name = fn.__name__
        is_method = getattr(Store, name, None) is fn

        def run() -> T:
            if self._io_store is None:
                self._io_store = open_store(self.app.store_url)
            if not is_method:
                return fn(self._io_store, *args, **kw)
            method = cast("Callable[P, T]", getattr(self._io_store, name))
            return method(*args, **kw)

        return await asyncio.get_running_loop().run_in_executor(self._io, run)

    async def _retrying(
        self, what: str, fn: Callable[Concatenate[Store, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """``_call`` that waits out store outages with backoff (never a busy loop)."""
        delay = 0.1
        while True:
            try:
                return await self._call(fn, *args, **kw)
            except Exception as exc:
                log.warning("%s failed, retrying in %.1f s: %s", what, delay, exc)
                self._reset_io_store()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _reset_io_store(self) -> None:
        def reset() -> None:
            if self._io_store is not None:
                with contextlib.suppress(Exception):
                    self._io_store.close()
                self._io_store = None

        self._io.submit(reset)
