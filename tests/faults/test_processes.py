"""Faults injected into real rota processes: kill -9 loops, leader kills, a Redis
restart, a skewed clock, poison jobs. The scenarios live in ``scenarios.py`` (shared with
``python -m bench.faults``); these run them at the CI profile's size."""

from __future__ import annotations

from pathlib import Path

import pytest

from rota import Rota
from tests.acceptance.conftest import FAILURE_TIMEOUT, LEADER_LEASE_TTL, Fleet
from tests.faults import scenarios
from tests.stores import skip_or_fail

pytestmark = pytest.mark.acceptance


@pytest.mark.timeout(150)
@pytest.mark.parametrize("kind", ["sqlite", "redis", "postgres"])
def test_kill9_loop(fleet: Fleet, client: Rota) -> None:
    got = scenarios.kill_loop(fleet, client, jobs=1500, kills=5)
    assert got.lost == 0
    assert got.kills == 5
    assert sum(got.in_flight_at_kills) > 0, "no kill caught a job in flight"
    assert got.duplicates <= got.kills * got.concurrency


@pytest.mark.timeout(150)
@pytest.mark.parametrize("kind", ["sqlite", "redis", "postgres"])
def test_leader_killed_repeatedly_under_load(fleet: Fleet, client: Rota) -> None:
    got = scenarios.failover(fleet, client, kills=3)
    assert got.double_runs == 0
    # A standby takes the lease once the dead leader's runs out, and places at once.
    assert max(got.takeover_s) <= LEADER_LEASE_TTL + 1.5, got.takeover_s
    assert max(got.resume_s) <= LEADER_LEASE_TTL + 2.5, got.resume_s


def _restart(
    tmp_path: Path, server: scenarios.PrivateRedis | scenarios.PrivatePostgres, crash: bool
) -> scenarios.StoreRestart:
    """``scenarios.store_restart`` on a fleet and client of ``server``'s store (the
    processes' logs are printed if it fails)."""
    fleet = Fleet(server.url, tmp_path)
    client = scenarios.apps_client(server.url)
    try:
        return scenarios.store_restart(fleet, client, server, crash=crash)
    except BaseException:
        print(fleet.tails())
        raise
    finally:
        client.close()
        fleet.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("persistent", "crash"),
    [(True, False), (True, True), (False, False)],
    ids=["aof-always-sigterm", "aof-always-sigkill", "no-persistence"],
)
def test_redis_restart(tmp_path: Path, persistent: bool, crash: bool) -> None:
    with scenarios.private_redis(tmp_path, persistent) as server:
        got = _restart(tmp_path, server, crash)
    assert got.worker_reconnect_lines > 0 and got.scheduler_reconnect_lines > 0
    if persistent:
        assert got.lost == 0
    else:  # everything in the store is gone, and the fleet still recovers for new jobs
        assert got.lost > 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("crash", [False, True], ids=["fast", "immediate"])
def test_postgres_restart(tmp_path: Path, crash: bool) -> None:
    try:
        ctx = scenarios.private_postgres()
        server = ctx.__enter__()
    except (RuntimeError, OSError) as exc:
        skip_or_fail(f"cannot run a private PostgreSQL: {exc}")
    try:
        got = _restart(tmp_path, server, crash)
    finally:
        ctx.__exit__(None, None, None)
    assert got.lost == 0
    assert got.worker_reconnect_lines > 0 and got.scheduler_reconnect_lines > 0


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("kind", "skew"), [("sqlite", 600.0), ("redis", -600.0)])
def test_skewed_worker_clock(fleet: Fleet, client: Rota, skew: float) -> None:
    got = scenarios.clock_skew(fleet, client, skew=skew, watch=3 * FAILURE_TIMEOUT)
    assert got.declared_dead_after_s < FAILURE_TIMEOUT + 10


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_poison_jobs(fleet: Fleet, client: Rota) -> None:
    got = scenarios.poison(fleet, client)
    assert got.worker_restarts == 0
