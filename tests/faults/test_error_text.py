"""A task's error text is whatever its exception said: a NUL or a lone surrogate in it
once made PostgreSQL (and Redis, for the surrogate) refuse the node's whole report, again
and again, so that the node never reported or started anything more. Every store now keeps
such an outcome, with the characters shown escaped; an absurd ``Retry(delay=...)`` is
capped at ten years (issue 19)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from rota.core.model import Assignment, NewJob, NodeSpec
from rota.core.outcomes import MAX_RETRY_DELAY, Outcome, OutcomeKind
from rota.core.payload import encode_arguments
from rota.core.states import JobState
from rota.store import SCHEDULER_LEASE, open_store
from tests.stores import STORE_KINDS, store_url


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_error_text_with_nul_and_surrogate_is_stored(kind: str, tmp_path: Path) -> None:
    with store_url(kind, tmp_path) as url:
        store = open_store(url)
        try:
            jobs = [
                NewJob(
                    id=uuid.uuid4().hex,
                    task="t",
                    queue="default",
                    payload=encode_arguments([], {}),
                    max_attempts=2,
                )
                for _ in range(2)
            ]
            store.submit(jobs)
            spec = NodeSpec(id="n1", name="n1", slots=2, prefetch=0)
            store.register_node(spec)
            lease = store.acquire_lease(SCHEDULER_LEASE, "test", 30)
            assert lease is not None
            store.assign(lease, [Assignment(j.id, spec.id) for j in jobs])
            started = {r.id: r.token for r in store.start_jobs(spec.id, 2, 30)}
            bad = Outcome(
                jobs[0].id,
                started[jobs[0].id],
                OutcomeKind.FAILED,
                error="ValueError: bad\x00byte \ud800",
                traceback="Traceback\x00",
            )
            far = Outcome(jobs[1].id, started[jobs[1].id], OutcomeKind.FAILED, retry_delay=1e308)
            store.complete([bad, far])
            first, second = store.get_jobs([jobs[0].id, jobs[1].id])
            assert first.error == "ValueError: bad\\x00byte \\ud800"
            assert first.traceback == "Traceback\\x00"
            assert first.state is JobState.RETRYING
            assert second.state is JobState.RETRYING and second.scheduled_at is not None
            assert second.scheduled_at - store.now() <= MAX_RETRY_DELAY + 1
        finally:
            store.close()
