"""A Redis Cluster moves the app's hash slot to another primary while rota runs (a
scheduler, a worker, a producer): the slot is marked migrating/importing, its keys are
moved in batches with MIGRATE, then the slot is given to the new primary, as
``redis-cli --cluster reshard`` does. While the keys move, rota's scripts are answered with
ASK (their key base is never a stored key), so rota waits and retries; afterwards, MOVED
sends it to the new owner. Every acknowledged job ends succeeded."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
from redis.crc import key_slot

from rota.core.states import JobState
from tests.acceptance.conftest import Fleet
from tests.ha.scenarios import APP, Producer
from tests.ha.servers import HOST, ClusterDeployment, need_binaries, redis_client, running

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]


def _node_id(port: int) -> str:
    return str(redis_client(port).execute_command("CLUSTER", "MYID"))


def move_slot(cluster: ClusterDeployment, slot: int, src: int, dst: int) -> int:
    """Move ``slot`` from primary ``src`` to ``dst`` (keys included); the keys moved."""
    source, target = redis_client(src), redis_client(dst)
    src_id, dst_id = _node_id(src), _node_id(dst)
    target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    moved = 0
    while True:
        keys = source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
        if not keys:
            break
        source.execute_command("MIGRATE", HOST, dst, "", 0, 5000, "KEYS", *keys)
        moved += len(keys)
        time.sleep(0.01)  # the load goes on between batches
    for port in cluster.primary_ports():
        redis_client(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    return moved


def test_cluster_reshard_rota_follows_its_slot_to_another_primary(tmp_path: Path) -> None:
    need_binaries("redis-server", "redis-cli")
    with running(ClusterDeployment(tmp_path / "cluster")) as cluster:
        prefix = f"reshard-{uuid.uuid4().hex[:8]}"
        url = cluster.url(prefix)
        slot = key_slot(f"{{{prefix}}}".encode())
        fleet = Fleet(url, tmp_path / "fleet")
        producer = Producer(url, batch=5, pause=0.05)
        thread = threading.Thread(target=producer.run, name="producer", daemon=True)
        try:
            fleet.scheduler()
            fleet.worker("w0", app=APP, concurrency=8)
            fleet.wait_nodes(1, timeout=60)
            fleet.wait_leader(timeout=60)
            thread.start()
            time.sleep(2.0)
            src = cluster.owner(prefix)
            dst = next(p for p in cluster.primary_ports() if p != src)
            moved = move_slot(cluster, slot, src, dst)
            assert moved > 0
            assert cluster.owner(prefix) == dst
            acked_at_move = len(producer.acked)
            time.sleep(3.0)
            producer.stop.set()
            thread.join(30)
            ids = list(producer.acked)
            assert len(ids) > acked_at_move > 0  # submits went on after the move
            records = fleet.wait_final(ids, timeout=60).values()
            states = {r.state for r in records}
            assert len(records) == len(ids) and states == {JobState.SUCCEEDED}, states
            assert not producer.errors, producer.errors
            # Nothing of the app is left on the old primary.
            assert redis_client(src).execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        finally:
            producer.stop.set()
            thread.join(30)
            fleet.close()
