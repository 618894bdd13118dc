"""``Rota``: the application object (store URL, task registry) and ``Task``."""

from __future__ import annotations

import inspect
import itertools
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, Literal, ParamSpec, TypeVar, overload

from rota.coord import resolve_coordinator
from rota.core.argtypes import ArgumentTypes
from rota.core.errors import InvalidOption, UnknownTask
from rota.core.model import AllocSpec, NewJob, ScheduleRecord
from rota.core.payload import DEFAULT_MAX_PAYLOAD, encode_arguments
from rota.core.periodic import MissedPolicy, ScheduleSpec
from rota.core.text import check_text
from rota.handle import JobHandle
from rota.options import JobOptions, tenant_name, validate_options, validate_share
from rota.scheduler.fairshare import SHARES_NAME, Share, shares_to_doc
from rota.store import Store, open_store, resolve_url
from rota.telemetry.tracing import traced_payload, tracing_enabled
from rota.workflow import Signature

P = ParamSpec("P")
R = TypeVar("R")
Isolation = Literal["thread", "process"]  # where a sync task runs on a worker


class Rota:
    """A rota application: where jobs are stored and which tasks exist.

    There is no global state: every ``Rota`` has its own registry and store connections
    (one per thread, opened on first use).
    """

    def __init__(
        self,
        store: str | None = None,
        *,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        tracing: bool | None = None,
        coordinator: str | None = None,
    ) -> None:
        self.store_url = resolve_url(store)
        # Who decides liveness and leadership: "store" (default) or zookeeper://host/root
        # ($ROTA_COORDINATOR); see rota.coord. Jobs stay in the store either way.
        self.coordinator = resolve_coordinator(coordinator)
        self.max_payload = max_payload
        # OpenTelemetry spans for submit and run (None: $ROTA_TRACING); see rota.telemetry.tracing.
        self.tracing = tracing_enabled(tracing)
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.schedules: dict[str, ScheduleSpec] = {}
        self.shares: dict[str, Share] = {}  # fair share between tenants (see share())
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Rota({self.store_url!r}, tasks={len(self.tasks)})"

    # ---- tasks ---------------------------------------------------------------------
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        isolation: Isolation | None = None,
        **defaults: Any,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        fn: Callable[P, R] | None = None,
        /,
        *,
        name: str | None = None,
        isolation: Isolation | None = None,
        **defaults: Any,
    ) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
        """Register a task (sync or ``async def``). Keyword arguments are its default job
        options: ``queue``, ``priority``, ``retries``, ``timeout``, ``resources``,
        ``labels``, ``affinity``, ``backoff``, ``backoff_max``. ``isolation`` is where a
        sync task runs on the worker: ``"thread"`` (a thread of the worker process) or
        ``"process"`` (a pool process, killed at its timeout or cancel, and whose crash
        does not take the worker down); ``None``: the worker's ``--isolation``."""
        options = JobOptions().merged(defaults)
        if isolation not in (None, "thread", "process"):
            raise InvalidOption(f"isolation must be 'thread' or 'process', not {isolation!r}")

        def register(func: Callable[P, R]) -> Task[P, R]:
            task_name = name or f"{func.__module__}.{func.__qualname__}".removeprefix("__main__.")
            check_text("task name", task_name, 256)
            if task_name in self.tasks and self.tasks[task_name].fn is not func:
                raise InvalidOption(f"task name {task_name!r} is already registered")
            task = Task(self, task_name, func, options)
            task.isolation = isolation
            self.tasks[task_name] = task
            return task

        return register(fn) if fn is not None else register

    def periodic(
        self,
        cron: str,
        *,
        tz: str = "UTC",
        name: str | None = None,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        missed: MissedPolicy = "skip",
        grace: float = 60.0,
        **options: Any,
    ) -> Callable[[Callable[P, R]], Task[P, R]]:
        """Register a task that runs on a cron schedule:
        ``@app.periodic("*/5 * * * *", tz="Europe/Paris")``. See :meth:`schedule`."""

        def register(func: Callable[P, R]) -> Task[P, R]:
            task: Task[P, R] = self.task(name=name)(func)
            self.schedule(
                task,
                cron=cron,
                tz=tz,
                args=args,
                kwargs=kwargs,
                missed=missed,
                grace=grace,
                **options,
            )
            return task

        return register

    def schedule(
        self,
        task: Task[Any, Any] | str,
        *,
        cron: str,
        tz: str = "UTC",
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        name: str | None = None,
        missed: MissedPolicy = "skip",
        grace: float = 60.0,
        **options: Any,
    ) -> ScheduleSpec:
        """Run ``task(*args, **kwargs)`` at every tick of ``cron`` (croniter syntax; six
        fields for seconds) in time zone ``tz``. The scheduler leader runs each tick once;
        ``missed`` says what happens to a tick that passed while no leader was alive
        (``"skip"`` unless at most ``grace`` seconds late, or ``"run_once"``). Options are
        job options. Schedules reach the store with :meth:`sync_schedules` (``rota worker``
        and ``rota scheduler`` do it at start)."""
        found = task if isinstance(task, Task) else self.get_task(task)
        call = found.options(**options) if options else TaskCall(found, found.defaults)
        if call.opts.depends_on or call.opts.delay or call.opts.eta is not None:
            raise InvalidOption("a periodic job cannot have depends_on, delay or eta")
        if isinstance(args, str | bytes | dict) or not isinstance(args, Sequence):
            raise InvalidOption(f"args must be a list or tuple, got {type(args).__name__}")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise InvalidOption(f"kwargs must be a dict, got {type(kwargs).__name__}")
        template = call.new_job(tuple(args), dict(kwargs or {}))
        job = {
            k: getattr(template, k)
            for k in template.__dataclass_fields__
            if k not in ("id", "depends_on", "pass_results", "workflow_id", "delay", "eta")
        }
        check_text("schedule name", name or found.name, 200)  # new names only: stored ones load
        job["alloc"] = template.alloc.to_dict()  # JSON-ready
        spec = ScheduleSpec(
            name=name or found.name, cron=cron, job=job, tz=tz, missed=missed, grace=grace
        )
        if spec.name in self.schedules and self.schedules[spec.name] != spec:
            raise InvalidOption(f"schedule name {spec.name!r} is already used")
        self.schedules[spec.name] = spec
        return spec

    def sync_schedules(self) -> int:
        """Write this app's schedules to the store (created or updated, never removed);
        returns how many."""
        if self.schedules:
            self.store.put_schedules(
                [ScheduleRecord(s.name, s.to_json()) for s in self.schedules.values()]
            )
        return len(self.schedules)

    def share(
        self, tenant: str, *, weight: float = 1.0, limit: dict[str, Any] | None = None
    ) -> Share:
        """Give ``tenant`` a fair-share ``weight`` (its dominant share is divided by it) and
        hard caps (``limit={"gpu": 8}``: never more than 8 GPUs at once; ``"slots"`` caps
        its jobs). Any share turns fair share on in the scheduler; jobs name their tenant
        with ``options(tenant=...)`` (default: their queue). See "Sharing a fleet"."""
        checked, caps = validate_share(weight, limit)
        share = Share(checked, caps)
        self.shares[tenant_name(tenant)] = share
        return share

    def sync_shares(self) -> int:
        """Publish :attr:`shares` to the store, replacing what was published before; the
        scheduler leader reads them within a stats cycle (about a second). An empty
        ``shares`` turns fair share off again. Returns how many tenants were published."""
        self.store.put_stats(SHARES_NAME, shares_to_doc(self.shares))
        return len(self.shares)

    def get_task(self, name: str) -> Task[Any, Any]:
        """The registered task called ``name`` (or by its last dotted part, when that is
        unambiguous); ``UnknownTask`` otherwise."""
        try:
            return self.tasks[name]
        except KeyError:
            short = [t for key, t in self.tasks.items() if key.rsplit(".", 1)[-1] == name]
            if len(short) == 1:  # "resize" for "myapp.resize", when unambiguous
                return short[0]
            known = ", ".join(sorted(self.tasks)[:20]) or "none registered"
            raise UnknownTask(f"unknown task {name!r} (known: {known})") from None

    def submit(self, task_name: str, *args: Any, **kwargs: Any) -> JobHandle:
        """Submit a job of a registered task by name."""
        return self.get_task(task_name).submit(*args, **kwargs)

    def job(self, job_id: str) -> JobHandle:
        """A handle on an existing job."""
        return JobHandle(self, job_id)

    # ---- store ---------------------------------------------------------------------
    @property
    def store(self) -> Store:
        """This thread's connection to the store."""
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            store = open_store(self.store_url)
            self._local.store = store
        return store

    def close(self) -> None:
        """Close this thread's store connection."""
        store: Store | None = getattr(self._local, "store", None)
        if store is not None:
            store.close()
            self._local.store = None


class Task(Generic[P, R]):
    """A registered function. Call it to run it here; ``submit`` it to run it on the fleet."""

    def __init__(self, app: Rota, name: str, fn: Callable[P, R], options: JobOptions) -> None:
        self.app = app
        self.name = name
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn)
        self.isolation: Isolation | None = None  # sync tasks: thread or process (worker's)
        self.defaults = options
        self.signature = inspect.signature(fn)
        self.arity = _simple_arity(self.signature)
        self._types: ArgumentTypes | None = None

    def argument_types(self) -> ArgumentTypes:
        """The simple annotations checked at submit (read at the first submit, so that
        annotations naming things defined after the task resolve)."""
        if self._types is None:
            self._types = ArgumentTypes(self.fn, self.signature)
        return self._types

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def options(self, *, connection: Any = None, **overrides: Any) -> TaskCall[P, R]:
        """Job options for the next submit: ``task.options(priority=9, delay=30).submit(...)``.

        ``connection=`` (PostgreSQL store only) is the caller's open psycopg connection: the
        job is written in the caller's transaction and exists only if it commits."""
        return TaskCall(self, self.defaults.merged(overrides), connection)

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        """Submit one job with the task's default options."""
        return TaskCall(self, self.defaults).submit(*args, **kwargs)

    def submit_many(self, calls: Iterable[Sequence[Any] | dict[str, Any]]) -> list[JobHandle]:
        """Submit many jobs in one store round trip: each item is a tuple of positional
        arguments or a dict of keyword arguments."""
        return TaskCall(self, self.defaults).submit_many(calls)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this task for ``chain`` and ``group``: ``add.s(1, 2)``."""
        return Signature(TaskCall(self, self.defaults), args, kwargs)


class TaskCall(Generic[P, R]):
    """A task with options bound, ready to submit."""

    def __init__(self, task: Task[P, R], options: JobOptions, connection: Any = None) -> None:
        self.task = task
        self.opts = options
        self.connection = connection

    @property
    def app(self) -> Rota:
        return self.task.app

    def options(self, *, connection: Any = None, **overrides: Any) -> TaskCall[P, R]:
        return TaskCall(self.task, self.opts.merged(overrides), connection or self.connection)

    def submit_jobs(self, jobs: list[NewJob]) -> list[JobHandle]:
        """Store jobs built by :meth:`new_job` in one round trip (in the caller's
        transaction when ``connection=`` was given)."""
        store = self.task.app.store
        if self.connection is None:
            ids = store.submit(jobs)
        else:
            ids = store.submit_in_transaction(self.connection, jobs)
        return [JobHandle(self.task.app, job_id) for job_id in ids]

    def new_job(
        self,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        *,
        depends_on: Sequence[str] | None = None,
        pass_results: bool | None = None,
        workflow_id: str | None = None,
    ) -> NewJob:
        """Validate arguments against the task's signature and JSON rules; build the job.
        ``depends_on``/``pass_results`` override the options (workflows use them)."""
        o = self.opts
        parents = tuple(o.depends_on if depends_on is None else depends_on)
        passing = o.pass_results if pass_results is None else pass_results
        if passing and not parents:
            raise InvalidOption("pass_results needs depends_on (the parents whose results to pass)")
        if parents and (o.delay or o.eta is not None):
            raise InvalidOption("depends_on cannot be combined with delay or eta")
        # With pass_results the parents' results come first (unknown yet: None here).
        call_args = (None, *args) if passing else tuple(args)
        arity = self.task.arity
        try:
            if kwargs or arity is None or not arity[0] <= len(call_args) <= arity[1]:
                self.task.signature.bind(*call_args, **kwargs)
        except TypeError as exc:
            raise InvalidOption(f"bad arguments for task {self.task.name!r}: {exc}") from None
        self.task.argument_types().check(self.task.name, call_args, kwargs, int(passing))
        return NewJob(
            id=new_job_id(),
            task=self.task.name,
            queue=o.queue,
            payload=encode_arguments(args, kwargs, self.task.app.max_payload)
            if not self.task.app.tracing
            else traced_payload(self.task.name, o.queue, args, kwargs, self.task.app.max_payload),
            priority=o.priority,
            max_attempts=o.retries + 1,
            timeout=o.timeout,
            resources=o.resources,
            labels=o.labels,
            affinity=o.affinity,
            delay=o.delay,
            eta=o.eta,
            backoff_base=o.backoff,
            backoff_max=o.backoff_max,
            depends_on=parents,
            pass_results=passing,
            workflow_id=workflow_id,
            unique_key=o.unique_key,
            unique_for=o.unique_for,
            concurrency_key=self._concurrency_key(call_args, kwargs),
            concurrency_limit=o.concurrency_limit,
            rate_limit=o.rate_limit,
            alloc=AllocSpec(tenant=o.tenant, preemptible=o.preemptible, aging=o.aging),
        )

    def _concurrency_key(self, args: Sequence[Any], kwargs: dict[str, Any]) -> str | None:
        key = self.opts.concurrency_key
        if key is None:
            return None
        if self.opts.concurrency_limit < 1:
            raise InvalidOption("concurrency_key needs concurrency_limit >= 1")
        if callable(key):  # called with the task's arguments by name
            try:
                key = key(**self._named_arguments(args, kwargs))
            except Exception as exc:
                raise InvalidOption(
                    f"concurrency_key function of task {self.task.name!r} failed: {exc!r}"
                ) from None
            if not isinstance(key, str):
                raise InvalidOption(
                    f"concurrency_key function of task {self.task.name!r} must return a "
                    f"string of 1-512 characters, got {key!r:.200}"
                )
            check_text(f"concurrency_key of task {self.task.name!r}", key, 512)
        return key

    def _named_arguments(self, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = self.task.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        named: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            kind = self.task.signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                named.update(value)
            elif kind is not inspect.Parameter.VAR_POSITIONAL:
                named[name] = value
        return named

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature (this call with its options) for ``chain`` and ``group``."""
        return Signature(self, args, kwargs)

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        return self.submit_jobs([self.new_job(args, kwargs)])[0]

    def submit_many(self, calls: Iterable[Sequence[Any] | dict[str, Any]]) -> list[JobHandle]:
        jobs = []
        for call in calls:
            if isinstance(call, dict):
                jobs.append(self.new_job((), call))
            elif isinstance(call, list | tuple):
                jobs.append(self.new_job(call, {}))
            else:
                raise InvalidOption(
                    f"submit_many takes tuples of arguments or dicts of keyword arguments, "
                    f"not {type(call).__name__}"
                )
        return self.submit_jobs(jobs) if jobs else []


class _JobIds:
    """Job ids: a random 64-bit prefix per process (drawn again in a forked child) and a
    counter, 32 hex digits in all. Unique across processes and machines by the prefix, and
    about ten times cheaper than ``uuid4`` (no system call per id). Ids submitted together
    are neighbours in the stores' id indexes: with the varying part first instead (so that
    a short prefix names a job), bulk submit into SQLite measured about 45 % slower
    (interleaved runs, 50,000 jobs, 13,894 vs 25,424 jobs/s). The CLI shows each id by its
    shortest unique prefix among those listed and accepts any unique prefix."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count(int.from_bytes(os.urandom(4)) << 16)

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"


_ids = _JobIds()


def new_job_id() -> str:
    """A new job id (32 hex digits)."""
    return _ids.next()


def _simple_arity(signature: inspect.Signature) -> tuple[int, int] | None:
    """``(required, total)`` when every parameter can be passed by position and none is
    ``*args``/``**kwargs``: then a call with only positional arguments fits exactly when
    their number is in that range (the fast path of argument checking)."""
    required = 0
    for param in signature.parameters.values():
        if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            return None
        if param.default is param.empty:
            required += 1
    return required, len(signature.parameters)


__all__ = ["Rota", "Task", "TaskCall", "new_job_id", "validate_options"]
