"""SIGTERM drains a worker: running jobs that finish within the grace period succeed there,
a job still running when it ends is handed back (its attempt not counted), jobs assigned
but not started go back; all of them then run on the other worker."""

from __future__ import annotations

import signal

import pytest

from rota import Rota
from rota.core.model import NodeState
from rota.core.states import JobState
from tests.acceptance.apps.basic import read_lines
from tests.acceptance.conftest import Fleet

pytestmark = pytest.mark.acceptance

GRACE = 2.0
SHORT = 0.8  # well within the grace period
LONG = 4.0  # well over it


@pytest.mark.timeout(90)
def test_sigterm_drains_and_hands_work_back(fleet: Fleet, client: Rota) -> None:
    fleet.scheduler()
    # 3 slots and 2 prefetched: the 5 jobs below all go to "a", 3 running and 2 waiting.
    fleet.worker("a", concurrency=3, prefetch=2, grace=GRACE)
    a_id = fleet.wait_nodes(1, names=["a"])["a"].id
    record = client.get_task("acc.record")
    long = record.options(priority=10).submit("long", LONG)
    short = [record.options(priority=5).submit(f"short{i}", SHORT) for i in range(2)]
    queued = [record.options(priority=0).submit(f"queued{i}", 0.2) for i in range(2)]

    def settled() -> bool:
        node = fleet.live_nodes().get("a")
        started = {line[1] for line in read_lines(fleet.runs) if line[0] == "start"}
        return (
            node is not None
            and (node.running, node.assigned) == (3, 2)
            and started == {"long", "short0", "short1"}
        )

    fleet.wait_for("3 jobs running and 2 waiting on a", settled, timeout=20, interval=0.02)
    fleet.kill("a", signal.SIGTERM)
    fleet.worker("b", concurrency=3)

    # "a" finishes its short jobs, hands the long one back and leaves within the grace.
    assert fleet.wait_exit("a", GRACE + 10) == 0
    node_a = {n.id: n for n in fleet.nodes()}[a_id]
    assert node_a.state is NodeState.STOPPED
    log = fleet.log("a")
    assert "SIGTERM: draining" in log
    assert "grace period over: handing 1 running jobs back" in log

    ids = [long.id, *(h.id for h in short), *(h.id for h in queued)]
    records = fleet.wait_final(ids, timeout=LONG + 30)
    assert all(r.state is JobState.SUCCEEDED for r in records.values()), records
    for h in short:
        rec = records[h.id]
        assert (rec.result_value()["node"], rec.node_id, rec.attempts) == ("a", a_id, 1)
    for h in queued:  # never started on "a"
        rec = records[h.id]
        assert (rec.result_value()["node"], rec.attempts) == ("b", 1)
    rec = records[long.id]
    assert rec.result_value()["node"] == "b"
    assert rec.attempts == 1  # the attempt cut short by the shutdown was not counted

    runs = read_lines(fleet.runs)
    where = {(event, key, node) for event, key, _, node, *_ in runs}
    assert ("start", "long", "a") in where and ("end", "long", "a") not in where
    assert not any(key.startswith("queued") and node == "a" for _, key, node in where)
