"""``JobHandle``: what a producer gets back from ``submit``."""

from __future__ import annotations

from typing import Any, Protocol

from rota.core.errors import JobFailed, ResultTimeout
from rota.core.model import JobRecord
from rota.core.states import JobState
from rota.store.contract import ProducerStore


class StoreOwner(Protocol):
    """What a handle needs of its app (``Rota``): the store connection to read the job from."""

    @property
    def store(self) -> ProducerStore: ...


class JobHandle:
    """A reference to a submitted job."""

    __slots__ = ("app", "id")

    def __init__(self, app: StoreOwner, job_id: str) -> None:
        self.app = app
        self.id = job_id

    def __repr__(self) -> str:
        return f"JobHandle({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def record(self) -> JobRecord:
        """The job as stored now."""
        found = self.app.store.get_job(self.id)
        if found is None:
            raise LookupError(f"no job {self.id}")
        return found

    def status(self) -> JobState:
        """The job's current state."""
        return self.record().state

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job to finish and return its value.

        Raises ``JobFailed`` if it ended dead or cancelled, ``ResultTimeout`` if it is
        still unfinished after ``timeout`` seconds (``None``: wait as long as it takes).
        """
        store = self.app.store
        remaining = float("inf") if timeout is None else timeout
        while True:
            step = min(remaining, 30.0)
            done = store.wait_for_results([self.id], step)
            if done:
                rec = done[0]
                if rec.state is JobState.SUCCEEDED:
                    return rec.result_value()
                raise JobFailed(rec.id, rec.state.value, rec.error)
            remaining -= step
            if remaining <= 0:
                raise ResultTimeout(f"job {self.id} did not finish within {timeout} s")

    def cancel(self) -> JobState | None:
        """Cancel the job (see ``Store.cancel``); returns its state after the call."""
        return self.app.store.cancel(self.id)
