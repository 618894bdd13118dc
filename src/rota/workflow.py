"""Workflows: ``chain`` and ``group`` of task signatures, submitted as one batch of jobs
linked by ``depends_on``. Dependencies are resolved in the store by the scheduler: no
worker slot ever waits for another job.

``chain(a.s(1), b.s(), c.s())`` runs ``a(1)``, then ``b(<a's result>)``, then
``c(<b's result>)``. ``group(a.s(1), a.s(2))`` runs its members in parallel; a step after
a group gets the list of their results. A step whose parent ends dead or cancelled is
``upstream_failed`` and never runs.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rota.core.errors import CorruptPayload, InvalidOption, JobFailed, ResultTimeout
from rota.core.model import JobRecord, NewJob
from rota.core.payload import decode_arguments, encode_arguments
from rota.core.states import FINAL_STATES, JobState
from rota.handle import JobHandle, StoreOwner
from rota.options import GangOptions, validate_gang


class StepCall(Protocol):
    """What a workflow step needs of a task call (``TaskCall``): its app, and how to build
    and submit its job."""

    @property
    def app(self) -> StoreOwner: ...

    def submit(self, *args: Any, **kwargs: Any) -> JobHandle: ...

    def new_job(
        self,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        *,
        depends_on: Sequence[str] | None = None,
        pass_results: bool | None = None,
        workflow_id: str | None = None,
    ) -> NewJob: ...


@dataclass(frozen=True, slots=True)
class Signature:
    """One task call with its options, not yet submitted (``task.s(...)``)."""

    call: StepCall
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def submit(self) -> JobHandle:
        return self.call.submit(*self.args, **self.kwargs)


@dataclass(frozen=True, slots=True)
class Chain:
    """Steps run one after the other, each getting the previous step's result first."""

    steps: tuple[Signature | Group | Chain, ...]

    def submit(self) -> WorkflowHandle:
        return _submit(self)


@dataclass(frozen=True, slots=True)
class Group:
    """Members run in parallel; their results are collected in order. A *gang*
    (``.options(gang=True)``) is placed all at once or not at all."""

    members: tuple[Signature | Chain | Group, ...]
    gang: GangOptions | None = None

    def options(self, **opts: Any) -> Group:
        """``gang=True`` places every member at once or none, with ``placement`` one of
        ``"pack"`` (default), ``"spread"``, ``"strict_pack"``, ``"strict_spread"`` (Ray's
        placement-group strategies); ``gang_restart=True`` stops and re-places the whole
        gang when a member's node dies (default: left to the caller). Members of a gang
        are task signatures (``task.s(...)``), not chains or groups."""
        gang = validate_gang(opts)
        if gang is not None:
            nested = [m for m in self.members if not isinstance(m, Signature)]
            if nested:
                raise InvalidOption(
                    f"gang members must be task signatures, not {type(nested[0]).__name__}"
                )
        return dataclasses.replace(self, gang=gang)

    def submit(self) -> WorkflowHandle:
        return _submit(self)


Step = Signature | Chain | Group


def chain(*steps: Step) -> Chain:
    """``chain(a.s(1), b.s(), c.s())``: see the module docstring."""
    if not steps:
        raise InvalidOption("chain needs at least one step")
    return Chain(tuple(_check(s) for s in steps))


def group(*members: Step) -> Group:
    """``group(a.s(1), a.s(2))``: see the module docstring."""
    if not members:
        raise InvalidOption("group needs at least one member")
    return Group(tuple(_check(m) for m in members))


def _check(step: object) -> Step:
    if not isinstance(step, Signature | Chain | Group):
        raise InvalidOption(
            f"workflow steps are task.s(...), chain(...) or group(...), not {type(step).__name__}"
        )
    return step


def build(step: Step, parents: Sequence[str], workflow_id: str) -> tuple[list[NewJob], list[str]]:
    """The jobs of ``step`` depending on ``parents``; returns them and the ids whose
    results are the step's output."""
    if isinstance(step, Signature):
        job = step.call.new_job(
            step.args,
            step.kwargs,
            depends_on=parents or None,
            pass_results=bool(parents),
            workflow_id=workflow_id,
        )
        return [job], [job.id]
    jobs: list[NewJob] = []
    if isinstance(step, Chain):
        outputs = list(parents)
        for sub in step.steps:
            made, outputs = build(sub, outputs, workflow_id)
            jobs += made
        return jobs, outputs
    outputs = []
    for member in step.members:
        made, out = build(member, parents, workflow_id)
        jobs += made
        outputs += out
    if step.gang is not None:
        gang = step.gang
        gang_id = f"{workflow_id}:{jobs[0].id}"  # unique per gang, even nested
        for job in jobs:
            job.alloc = dataclasses.replace(
                job.alloc,
                gang=gang_id,
                gang_size=len(jobs),
                placement=gang.placement,
                gang_restart=gang.restart,
            )
    return jobs, outputs


def with_parent_results(payload: str, parents: Sequence[str], records: Sequence[JobRecord]) -> str:
    """``payload`` with the parents' results put first in its arguments: one parent's value,
    or the list of several parents' values in ``parents`` order. ``CorruptPayload`` if a
    parent is gone or did not succeed (a step only starts after its parents succeeded)."""
    by_id = {r.id: r for r in records}
    values = []
    for parent in parents:
        rec = by_id.get(parent)
        if rec is None or rec.state is not JobState.SUCCEEDED:
            state = "gone" if rec is None else rec.state.value
            raise CorruptPayload(f"parent {parent} has no result to pass on ({state})")
        values.append(rec.result_value())
    args, kwargs = decode_arguments(payload)
    first = values[0] if len(values) == 1 else values
    return encode_arguments([first, *args], kwargs, limit=2**62)


def _app(step: Step) -> StoreOwner:
    while not isinstance(step, Signature):
        step = step.steps[0] if isinstance(step, Chain) else step.members[0]
    return step.call.app


def _submit(step: Chain | Group) -> WorkflowHandle:
    app = _app(step)
    workflow_id = uuid.uuid4().hex
    jobs, outputs = build(step, (), workflow_id)
    app.store.submit(jobs)
    return WorkflowHandle(app, workflow_id, [j.id for j in jobs], outputs, isinstance(step, Group))


class WorkflowHandle:
    """The jobs of a submitted workflow."""

    def __init__(
        self,
        app: StoreOwner,
        workflow_id: str,
        job_ids: list[str],
        outputs: list[str],
        collect: bool,
    ) -> None:
        self.app = app
        self.id = workflow_id
        self.jobs = [JobHandle(app, i) for i in job_ids]
        self.outputs = [JobHandle(app, i) for i in outputs]
        self._collect = collect or len(outputs) > 1

    def __repr__(self) -> str:
        return f"WorkflowHandle({self.id!r}, jobs={len(self.jobs)})"

    def states(self) -> dict[str, JobState]:
        """Each job's current state, by id."""
        return {r.id: r.state for r in self.app.store.get_jobs([j.id for j in self.jobs])}

    def result(self, timeout: float | None = None) -> Any:
        """The workflow's result: the last step's value (a list for a group). Raises
        ``JobFailed`` as soon as any job of the workflow ends dead, cancelled or
        upstream_failed; ``ResultTimeout`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ids = [j.id for j in self.jobs]
        store = self.app.store
        while True:
            left = 30.0 if deadline is None else deadline - time.monotonic()
            done = {r.id: r for r in store.wait_for_results(ids, max(0.0, min(left, 30.0)))}
            for rec in done.values():
                if rec.state is not JobState.SUCCEEDED:
                    raise JobFailed(rec.id, rec.state.value, rec.error)
            if len(done) == len(ids):
                values = [done[o.id].result_value() for o in self.outputs]
                return values if self._collect else values[0]
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(f"workflow {self.id} did not finish within {timeout} s")

    def cancel(self) -> int:
        """Cancel every job of the workflow that has not finished (running ones are asked to
        stop); returns how many were cancelled or flagged."""
        store = self.app.store
        count = 0
        for rec in store.get_jobs([j.id for j in self.jobs]):
            if rec.state not in FINAL_STATES and store.cancel(rec.id) is not None:
                count += 1
        return count
