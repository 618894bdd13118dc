"""What the defaults are, on real processes: a one-slot worker drains a backlog with the
scheduler frozen (it claims plain pending jobs itself under the leader's grant; on every
store), and
sync tasks run in threads of the worker unless they ask for a process."""

from __future__ import annotations

import signal

import pytest

from rota import Rota
from rota.core.states import JobState
from rota.store import Store
from rota.store.postgres.store import PostgresStore
from rota.store.redis.store import RedisStore
from rota.store.sqlite.store import SQLiteStore
from tests.acceptance.conftest import Fleet

pytestmark = pytest.mark.acceptance


def granted(store: Store) -> bool:
    """Whether the leader has published a claim grant (each store keeps it its own way)."""
    if isinstance(store, RedisStore):
        return bool(store.redis.hexists(store.key("grant"), "token"))
    if isinstance(store, SQLiteStore):
        row = store.db.execute("SELECT count(*) FROM claim_grants").fetchone()
        return bool(row and row[0])
    assert isinstance(store, PostgresStore)
    found = store._run(lambda c: c.execute("SELECT count(*) FROM claim_grants").fetchone())
    return bool(found and found[0])


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["redis", "postgres", "sqlite"])
def test_a_one_slot_worker_drains_a_backlog_without_the_scheduler(
    fleet: Fleet, client: Rota
) -> None:
    square = client.get_task("acc.square")
    fleet.scheduler(lease_ttl=30.0)  # its grant stays current while it is frozen
    fleet.worker("w1", concurrency=1)
    fleet.wait_nodes(1)
    store = fleet.store
    fleet.wait_for("the leader to grant claims", lambda: granted(store), 30)
    fleet.kill("scheduler", signal.SIGSTOP)
    try:
        backlog = square.submit_many([(x,) for x in range(60)])
        done = fleet.wait_final([h.id for h in backlog], 45)
    finally:
        fleet.kill("scheduler", signal.SIGCONT)
    assert all(r.state is JobState.SUCCEEDED for r in done.values())
    values = [done[h.id].result_value() for h in backlog]
    assert [v["value"] for v in values] == [x * x for x in range(60)]
    # sync tasks ran in the worker process itself (threads), not in its pool processes
    # (the app's process-isolated tasks have it start one)
    worker_pid = fleet.procs["w1"].pid
    assert {v["pid"] for v in values} == {worker_pid}
