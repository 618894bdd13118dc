"""``rota ingest --processes N``: N consumer processes that share one source.

The broker shares the work (competing consumers on the AMQP queues; one Kafka consumer
group), so the processes need no coordination: each is a complete ``rota ingest
--processes 1`` with its own connection, store client and stats entry. The parent only
supervises: it forwards SIGTERM/SIGINT, restarts a child that died (with backoff), and
exits when all children have stopped. A child stops by itself when its parent is gone
(``watch_parent``), so a parent killed with -9 leaves no consumer behind for long; what
those children held unacknowledged is redelivered, and the store refuses it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from rota.core.backoff import retry_delay

log = logging.getLogger("rota.ingest")
PARENT_ENV = "ROTA_INGEST_PARENT"


def default_processes(source: str) -> int:
    """AMQP: one consumer process per CPU, at most 4 (the client is CPU-bound). Kafka: one
    (one process already meets the rate target, and every member that joins or dies makes
    the whole group stop for a rebalance, 5-20 s on tansu); more are opt-in there."""
    if source.split("://", 1)[0].lower() == "kafka":
        return 1
    return max(1, min(os.cpu_count() or 1, 4))


def supervise(child_argv: Sequence[str], count: int) -> int:
    """Run ``count`` copies of ``python -m rota <child_argv>`` until SIGTERM/SIGINT."""
    stopping = False
    env = {**os.environ, PARENT_ENV: str(os.getpid())}
    command = [sys.executable, "-m", "rota", *child_argv]

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=env)

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    children = [start() for _ in range(count)]
    failures = [0] * count
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    while True:
        if stopping and all(child.poll() is not None for child in children):
            return 0 if all(child.returncode == 0 for child in children) else 1
        for index, child in enumerate(children):
            if stopping or child.poll() is None:
                continue
            failures[index] += 1
            log.warning("ingest process %d exited (%s); restarting", child.pid, child.returncode)
            time.sleep(retry_delay(min(failures[index], 6), 0.5, 10.0))
            if not stopping:
                children[index] = start()
        time.sleep(0.2)


async def watch_parent(stop: asyncio.Event, every: float = 1.0) -> None:
    """Set ``stop`` when the supervising parent (``PARENT_ENV``) is gone."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    while not stop.is_set():
        if os.getppid() != int(parent):
            log.warning("supervising process %s is gone; stopping", parent)
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
