"""A node counts an outcome once the store answered: accepted ones as succeeded / failed
(a retried report the store recognised is accepted), refused ones as lease losses; what
its shutdown summary prints comes from these counts."""

from __future__ import annotations

import uuid
from pathlib import Path

from rota import Rota
from rota.core.model import Assignment, JobRecord, NewJob, NodeSpec
from rota.core.outcomes import CutShort, ExecKind, ExecResult
from rota.core.payload import encode_arguments
from rota.store import SCHEDULER_LEASE, Store
from rota.worker.node import WorkerNode


def _started(store: Store, n: int) -> list[JobRecord]:
    jobs = [
        NewJob(id=uuid.uuid4().hex, task="t", queue="default", payload=encode_arguments([], {}))
        for _ in range(n)
    ]
    store.submit(jobs)
    spec = NodeSpec(id=f"n-{uuid.uuid4().hex[:6]}", name="n", slots=n, prefetch=0)
    store.register_node(spec)
    lease = store.acquire_lease(SCHEDULER_LEASE, "test", 30)
    assert lease is not None
    store.assign(lease, [Assignment(j.id, spec.id) for j in jobs])
    return store.start_jobs(spec.id, n, 30)


def test_refused_completions_are_not_counted_as_succeeded(tmp_path: Path) -> None:
    app = Rota(f"sqlite:///{tmp_path / 'count.db'}")
    node = WorkerNode(app)
    store = app.store
    ok, refused, failed, timed_out = _started(store, 4)
    node._record(ok, ExecResult(ExecKind.OK, result="1"))
    node._record(refused, ExecResult(ExecKind.OK, result="2"))
    node._record(failed, ExecResult(ExecKind.ERROR, error="E"))
    node._record(timed_out, ExecResult(ExecKind.TIMEOUT, error="timed out after 1 s"))
    assert node.stats == {"started": 0, "succeeded": 0, "failed": 0, "refused": 0}
    batch = list(node.outcomes)
    assert batch[3].cut_short is CutShort.TIMEOUT and batch[0].cut_short is None
    accepted = store.complete(batch)
    assert accepted == [True, True, True, True]
    again = store.complete(batch)  # the reply was lost: the retry is the same report
    node._count_refused(batch, again)
    assert node.stats == {"started": 0, "succeeded": 2, "failed": 2, "refused": 0}
    node2 = WorkerNode(app)
    node2._record(refused, ExecResult(ExecKind.OK, result="2"))
    node2._count_refused(list(node2.outcomes), [False])
    assert node2.stats == {"started": 0, "succeeded": 0, "failed": 0, "refused": 1}
    app.close()
