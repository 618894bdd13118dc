"""The extra peers ``bench.defaults`` runs beside the bench-peers copy, as modules written
into that copy (they run in its virtualenv, never in rota's): Huey on SQLite
(``SqliteHuey``), procrastinate and pgqueuer on PostgreSQL. Each module has the shape of
bench-peers' own ``sys_*.py``: a probe task, ``enqueue_bulk(n)`` and the worker command a
user gets with no flags (``WORKER``). Every task calls the same probe (``common.probe``)."""

from __future__ import annotations

from pathlib import Path

EXTRA_REQUIREMENTS = ["procrastinate[psycopg]==3.10.0", "pgqueuer==1.6.0", "asyncpg"]

SQLITE_HUEY = '''
"""Huey on SQLite: SqliteHuey, default consumer (1 worker thread)."""
import os
import sys

from huey import SqliteHuey

import common

BIN = os.path.dirname(sys.executable)
huey = SqliteHuey("bench", filename=os.environ["BENCH_SQLITE_PATH"])


@huey.task()
def noop(target, t_enq):
    return common.probe(common.client(), target, t_enq)


def enqueue_bulk(n):
    for _ in range(n):
        noop(n, 0)


WORKER = [f"{BIN}/huey_consumer", "sys_sqlitehuey.huey", "--quiet"]
'''

PROCRASTINATE = '''
"""procrastinate 3.10 on PostgreSQL: default worker (`procrastinate worker`)."""
import os
import sys

import procrastinate

import common

BIN = os.path.dirname(sys.executable)
app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ["BENCH_PG_DSN"])
)


@app.task(queue="bench")
def noop(target, t_enq):
    return common.probe(common.client(), target, t_enq)


def install():
    with app.open():
        app.schema_manager.apply_schema()


def enqueue_bulk(n, chunk=1000):
    with app.open():
        for s in range(0, n, chunk):
            noop.batch_defer(*[{"target": n, "t_enq": 0} for _ in range(min(chunk, n - s))])


WORKER = [f"{BIN}/procrastinate", "--app=sys_procrastinate.app", "worker"]
'''

PGQUEUER = '''
"""pgqueuer on PostgreSQL: default `pgq run` consumer."""
import asyncio
import os
import sys

import asyncpg
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries

import common

BIN = os.path.dirname(sys.executable)
DSN = os.environ["BENCH_PG_DSN"]


async def main():
    conn = await asyncpg.connect(DSN)
    pgq = PgQueuer(AsyncpgDriver(conn))
    client = common.client()

    @pgq.entrypoint("noop")
    async def noop(job):
        common.probe(client, int(job.payload.decode()), 0)

    return pgq


def install():
    import subprocess

    subprocess.run([f"{BIN}/pgq", "install"], check=True, env={**os.environ, "PGDSN": DSN},
                   capture_output=True)


def enqueue_bulk(n, chunk=1000):
    async def go():
        conn = await asyncpg.connect(DSN)
        q = Queries(AsyncpgDriver(conn))
        for s in range(0, n, chunk):
            k = min(chunk, n - s)
            await q.enqueue(["noop"] * k, [str(n).encode()] * k, [0] * k)
        await conn.close()

    asyncio.run(go())


async def serve():
    """The consumer ``pgq run sys_pgqueuer:main`` would start (its CLI fails on start-up
    with pgqueuer 1.6's default log level, so the same factory is run directly)."""
    await (await main()).run()


WORKER = [sys.executable, "-c", "import asyncio, sys_pgqueuer as m; asyncio.run(m.serve())"]
'''

MODULES = {
    "sys_sqlitehuey.py": SQLITE_HUEY,
    "sys_procrastinate.py": PROCRASTINATE,
    "sys_pgqueuer.py": PGQUEUER,
}


def write_modules(peers_dir: Path) -> None:
    """Put the extra peer modules into the bench-peers copy at ``peers_dir``."""
    for name, text in MODULES.items():
        (peers_dir / name).write_text(text.lstrip())
