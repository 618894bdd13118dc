"""The wire format foreign producers send (docs/wire-format.md, ``schema.json``).

A message is one JSON object ``{"task", "args", "kwargs", "options"}``; only ``task`` is
required. It is checked exactly as ``Task.submit`` checks a call (task name, argument
binding, JSON payload rules, option values), and turned into a :class:`NewJob` whose id is
derived from the message's identity at the broker, so a redelivered message maps to the
same job id and the store refuses to store it twice.
"""

from __future__ import annotations

import hashlib
import weakref
from importlib import resources
from typing import Any

import orjson

from rota.app import Rota, Task, TaskCall
from rota.core.errors import RotaError
from rota.core.model import NewJob

# The options a message may carry (JSON-expressible job options; no workflows).
WIRE_OPTIONS = frozenset(
    {
        "queue",
        "priority",
        "delay",
        "eta",
        "retries",
        "timeout",
        "resources",
        "labels",
        "affinity",
        "backoff",
        "backoff_max",
        "unique_key",
        "unique_for",
        "concurrency_key",
        "concurrency_limit",
        "rate_limit",
    }
)
_FIELDS = frozenset({"task", "args", "kwargs", "options"})
# Validated options per (task, options as sorted JSON), per app: the options a producer
# sends are few shapes repeated, so each shape is checked once (arguments: every time).
_CALLS: weakref.WeakKeyDictionary[Rota, dict[tuple[Task[Any, Any], bytes], TaskCall[Any, Any]]]
_CALLS = weakref.WeakKeyDictionary()
CACHED_SHAPES = 1024


class InvalidMessage(Exception):
    """A message that cannot become a job; ``reason`` says why (sent with the dead letter)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def job_id_for(source_key: str) -> str:
    """The job id of the message known at its broker as ``source_key`` (32 hex digits,
    like rota's own ids): the same message always maps to the same job."""
    return hashlib.blake2b(source_key.encode(), digest_size=16).hexdigest()


def parse_message(
    app: Rota, body: bytes | str, source_key: str, default_queue: str | None = None
) -> NewJob:
    """Validate one message and build its job (id from ``source_key``). ``default_queue``
    is the rota queue the message was routed to (used when ``options.queue`` is absent).
    Raises :class:`InvalidMessage`."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidMessage(f"a message must be a JSON object, not {type(data).__name__}")
    unknown = set(data) - _FIELDS
    if unknown:
        raise InvalidMessage(f"unknown field(s) {', '.join(sorted(unknown))}")
    name, args = data.get("task"), data.get("args", [])
    kwargs, options = data.get("kwargs", {}), data.get("options", {})
    if not isinstance(name, str) or not name:
        raise InvalidMessage('"task" (the registered task name) is required')
    if not isinstance(args, list):
        raise InvalidMessage('"args" must be a JSON array')
    if not isinstance(kwargs, dict):
        raise InvalidMessage('"kwargs" must be a JSON object')
    if not isinstance(options, dict):
        raise InvalidMessage('"options" must be a JSON object')
    bad = set(options) - WIRE_OPTIONS
    if bad:
        raise InvalidMessage(
            f"unknown option(s) {', '.join(sorted(bad))}; known: {', '.join(sorted(WIRE_OPTIONS))}"
        )
    if default_queue is not None and "queue" not in options:
        options = {**options, "queue": default_queue}
    try:
        job = task_call(app, name, options).new_job(args, kwargs)
    except RotaError as exc:
        raise InvalidMessage(str(exc)) from None
    job.id = job_id_for(source_key)
    return job


def task_call(app: Rota, name: str, options: dict[str, Any]) -> TaskCall[Any, Any]:
    """``app.get_task(name).options(**options)``, validated once per options shape."""
    task = app.get_task(name)
    cache = _CALLS.get(app)
    if cache is None:
        cache = _CALLS[app] = {}
    key = (task, orjson.dumps(options, option=orjson.OPT_SORT_KEYS))
    call = cache.get(key)
    if call is None:
        call = task.options(**options)
        if len(cache) >= CACHED_SHAPES:
            cache.clear()
        cache[key] = call
    return call


def schema() -> dict[str, Any]:
    """The JSON Schema of a message (shipped as ``rota/ingest/schema.json``)."""
    text = resources.files("rota.ingest").joinpath("schema.json").read_text()
    data: dict[str, Any] = orjson.loads(text)
    return data
