"""``Rota``: the application object (store URL, task registry) and ``Task``."""

from __future__ import annotations

import inspect
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, ParamSpec, TypeVar, overload

from rota.errors import InvalidOption, UnknownTask
from rota.handle import JobHandle
from rota.model import NewJob
from rota.options import JobOptions, validate_options
from rota.payload import DEFAULT_MAX_PAYLOAD, encode_arguments
from rota.store import Store, open_store, resolve_url

P = ParamSpec("P")
R = TypeVar("R")


class Rota:
    """A rota application: where jobs are stored and which tasks exist.

    There is no global state: every ``Rota`` has its own registry and store connections
    (one per thread, opened on first use).
    """

    def __init__(self, store: str | None = None, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.store_url = resolve_url(store)
        self.max_payload = max_payload
        self.tasks: dict[str, Task[Any, Any]] = {}
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Rota({self.store_url!r}, tasks={len(self.tasks)})"

    # ---- tasks ---------------------------------------------------------------------
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self, fn: None = None, /, *, name: str | None = None, **defaults: Any
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self, fn: Callable[P, R] | None = None, /, *, name: str | None = None, **defaults: Any
    ) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
        """Register a task (sync or ``async def``). Keyword arguments are its default job
        options: ``queue``, ``priority``, ``retries``, ``timeout``, ``resources``,
        ``labels``, ``affinity``, ``backoff``, ``backoff_max``."""
        options = JobOptions().merged(defaults)

        def register(func: Callable[P, R]) -> Task[P, R]:
            task_name = name or f"{func.__module__}.{func.__qualname__}".removeprefix("__main__.")
            if task_name in self.tasks and self.tasks[task_name].fn is not func:
                raise InvalidOption(f"task name {task_name!r} is already registered")
            task = Task(self, task_name, func, options)
            self.tasks[task_name] = task
            return task

        return register(fn) if fn is not None else register

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
        self.defaults = options
        self.signature = inspect.signature(fn)

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


class TaskCall(Generic[P, R]):
    """A task with options bound, ready to submit."""

    def __init__(self, task: Task[P, R], options: JobOptions, connection: Any = None) -> None:
        self.task = task
        self.opts = options
        self.connection = connection

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

    def new_job(self, args: Sequence[Any], kwargs: dict[str, Any]) -> NewJob:
        """Validate arguments against the task's signature and JSON rules; build the job."""
        try:
            self.task.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidOption(f"bad arguments for task {self.task.name!r}: {exc}") from None
        o = self.opts
        return NewJob(
            id=uuid.uuid4().hex,
            task=self.task.name,
            queue=o.queue,
            payload=encode_arguments(args, kwargs, self.task.app.max_payload),
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
        )

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


__all__ = ["Rota", "Task", "TaskCall", "validate_options"]
