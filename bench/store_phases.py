"""The store hot-path phases timed by ``bench.redis_store`` and ``bench.postgres_store``:
bulk ``submit`` of no-op jobs, the scheduler's ``pending_jobs`` + ``assign`` in pages, the
nodes' ``start_jobs`` and batched ``complete``, and one-job round trips for reference."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from rota.core.model import Assignment, JobRecord, NewJob, NodeSpec
from rota.core.outcomes import Outcome, OutcomeKind
from rota.core.payload import encode_arguments
from rota.store import SCHEDULER_LEASE, Store


def new_jobs(n: int) -> list[NewJob]:
    payload = encode_arguments([], {})
    return [
        NewJob(id=uuid.uuid4().hex, task="bench.noop", queue="default", payload=payload)
        for _ in range(n)
    ]


def run_phases(
    store: Store, jobs: int, batch: int, nodes: int, *, submit_batches: bool = False
) -> dict[str, float]:
    """Jobs per second of each phase on ``store`` (fresh and empty). With
    ``submit_batches`` a second bulk submit in batches of ``batch`` is timed too."""
    out: dict[str, float] = {}
    lease = store.acquire_lease(SCHEDULER_LEASE, "bench", 600)
    assert lease is not None
    specs = [
        NodeSpec(id=f"node-{i}", name=f"node-{i}", slots=jobs, prefetch=0) for i in range(nodes)
    ]
    for spec in specs:
        store.register_node(spec)

    def timed(name: str, fn: Callable[[], object], count: int) -> None:
        t = time.perf_counter()
        fn()
        out[name] = count / (time.perf_counter() - t)

    todo = new_jobs(jobs)
    timed("submit (one call)", lambda: store.submit(todo), jobs)
    total = jobs
    if submit_batches:
        more = new_jobs(jobs)

        def in_batches() -> None:
            for i in range(0, jobs, batch):
                store.submit(more[i : i + batch])

        timed(f"submit (batches of {batch})", in_batches, jobs)
        total += jobs

    def place() -> None:
        after = None
        k = 0
        while page := store.pending_jobs(batch, after):
            after = (page[-1].priority, page[-1].seq)
            placed = [Assignment(p.id, specs[(k + i) % nodes].id) for i, p in enumerate(page)]
            k += len(page)
            assert store.assign(lease, placed) == len(placed)

    timed(f"pending_jobs + assign (pages of {batch})", place, total)
    started: list[JobRecord] = []

    def start() -> None:
        for spec in specs:
            while got := store.start_jobs(spec.id, batch, 600):
                started.extend(got)

    timed(f"start_jobs (batches of {batch})", start, total)
    assert len(started) == total

    def complete() -> None:
        for i in range(0, len(started), batch):
            chunk = started[i : i + batch]
            outcomes = [Outcome(r.id, r.token, OutcomeKind.SUCCEEDED, "null") for r in chunk]
            assert all(store.complete(outcomes))

    timed(f"complete (batches of {batch})", complete, total)
    singles = new_jobs(min(jobs, 200))
    timed("submit (one job per call)", lambda: [store.submit([j]) for j in singles], len(singles))
    round_trip = new_jobs(min(jobs, 200))

    def one_by_one() -> None:
        for j in round_trip:
            store.submit([j])
            store.assign(lease, [Assignment(j.id, specs[0].id)])
            (r,) = store.start_jobs(specs[0].id, 1, 600)
            store.complete([Outcome(r.id, r.token, OutcomeKind.SUCCEEDED, "null")])

    timed("submit+assign+start+complete, one job", one_by_one, len(round_trip))
    return out
