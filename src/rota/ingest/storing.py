"""Store a batch of ingested jobs exactly once.

Each job's id is derived from its message (``wire.job_id_for``), and every store refuses a
batch holding an id it already has (all or none, one atomic step). So a redelivered message
never becomes a second job: the batch is retried without the ids found stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rota.core.errors import SubmitError
from rota.core.model import NewJob
from rota.store import Store


@dataclass(slots=True)
class BatchResult:
    """Per input job: the id of its job, whether this call created it, or why the store
    refused it (``refused[i]``; such a message is dead-lettered)."""

    job_ids: list[str]
    created: list[bool]
    refused: dict[int, str] = field(default_factory=dict)


def store_batch(store: Store, jobs: Sequence[NewJob]) -> BatchResult:
    """Store ``jobs`` in as few round trips as possible; ids already stored (redeliveries)
    are skipped. Connection errors propagate: nothing is acknowledged then."""
    result = BatchResult([j.id for j in jobs], [False] * len(jobs))
    first: dict[str, int] = {}
    for index, job in enumerate(jobs):
        first.setdefault(job.id, index)  # the same message twice in a batch: one job
    todo = list(first.values())
    while todo:
        batch = [jobs[i] for i in todo]
        try:
            ids = store.submit(batch)
        except SubmitError as exc:
            stored = {r.id for r in store.get_jobs([j.id for j in batch])}
            if stored:
                todo = [i for i in todo if jobs[i].id not in stored]
                continue
            if len(todo) == 1:
                result.refused[todo[0]] = str(exc)
                break
            for index in todo:  # find the culprit(s): one by one
                one = store_batch(store, [jobs[index]])
                result.job_ids[index] = one.job_ids[0]
                result.created[index] = one.created[0]
                if one.refused:
                    result.refused[index] = one.refused[0]
            break
        for index, job_id in zip(todo, ids, strict=True):
            result.job_ids[index] = job_id  # a unique_key holder's id replaces the job's
            result.created[index] = job_id == jobs[index].id
        break
    for index, job in enumerate(jobs):
        if first[job.id] != index:
            result.job_ids[index] = result.job_ids[first[job.id]]
            if first[job.id] in result.refused:
                result.refused[index] = result.refused[first[job.id]]
    return result
