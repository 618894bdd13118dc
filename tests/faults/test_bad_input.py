"""Bad input at every door: ``task.submit``/``submit_many``, ``app.submit`` and ``rota
submit`` (``CliRunner`` on ``rota.cli.cli``) with random and hostile input, on SQLite and
Redis. Whatever comes in is either accepted and stored verbatim, or refused with a
``RotaError`` (a click usage error on the command line) and the store left unchanged;
never a crash."""

from __future__ import annotations

import math
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rota import Rota
from rota.cli import cli
from rota.core.errors import RotaError
from rota.core.payload import DEFAULT_MAX_PAYLOAD, MAX_DEPTH
from rota.store import Store
from tests.faults import apps
from tests.stores import store_url

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# SQL, Lua and Redis-key metacharacters, and other hostile strings.
HOSTILE = [
    "'; DROP TABLE jobs; --",
    '" OR 1=1 --',
    "%s %d {0} {}",
    "]] redis.call('FLUSHALL') --[[",
    "') ; redis.call('DEL', KEYS[1]) --",
    "{rota}:job:*",
    "*",
    "\x00",
    "a\nb\r\nc",
    "\udcff\udcfe",  # what non-UTF-8 argv bytes become in Python
    "\ud800",
    "é" * 300,
    "x" * 10_000,
    "",
    " ",
    "default ",
    "$(rm -rf /)",
    "../../etc/passwd",
]
hostile_text = st.one_of(st.sampled_from(HOSTILE), st.text(st.characters(codec=None), max_size=40))
any_text = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    hostile_text,
    st.binary(max_size=8),
    st.sampled_from([object(), {1, 2}, 1j, b"\xff", bytearray(b"x"), math.nan]),
)
values = st.recursive(
    scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4),
        st.tuples(kids),
        st.dictionaries(hostile_text, kids, max_size=4),
        st.dictionaries(st.one_of(st.integers(), st.none(), st.tuples()), kids, max_size=2),
    ),
    max_leaves=12,
)


def nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


deep = st.integers(min_value=MAX_DEPTH - 4, max_value=MAX_DEPTH + 40).map(nest)


def plain_json(value: Any, depth: int) -> bool:
    """The oracle: what the payload rules (rota/payload.py's docstring) accept. ``depth``
    is the nesting of ``value`` inside the stored ``{"args": [...], "kwargs": {...}}``."""
    kind = type(value)
    if value is None or kind is bool:
        return True
    if kind is int:
        return bool(-(2**63) <= value <= 2**64 - 1)
    if kind is float:
        return math.isfinite(value)
    if kind is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if kind in (list, tuple):
        return depth < MAX_DEPTH and all(plain_json(v, depth + 1) for v in value)
    if kind is dict:
        return depth < MAX_DEPTH and all(
            type(k) is str and plain_json(k, depth + 1) and plain_json(v, depth + 1)
            for k, v in value.items()
        )
    return False


def as_json(value: Any) -> Any:
    """What a plain value reads back as (tuples are lists)."""
    return orjson.loads(orjson.dumps(value))


def snapshot(store: Store) -> tuple[Any, Any]:
    jobs = store.list_jobs(limit=100_000)
    return store.count_jobs(), sorted((j.id, j.state.value, j.queue, j.payload) for j in jobs)


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rota]:
    with store_url(request.param, tmp_path_factory.mktemp("bad-input")) as url:
        a = apps.build(url)
        yield a
        a.close()


def expect(app: Rota, submit: Any, accepted: bool | None) -> list[Any]:
    """Run ``submit()``: if it is refused it must be with a RotaError and the store is
    unchanged; ``accepted`` (when known) says which it must be. Returns the handles."""
    before = snapshot(app.store)
    try:
        handles = submit()
    except RotaError as exc:
        assert accepted is not True, f"valid input refused: {exc!r}"
        assert str(exc), "an error without a message"
        assert snapshot(app.store) == before
        return []
    assert accepted is not False, "invalid input accepted"
    handles = handles if isinstance(handles, list) else [handles]
    count = sum(before[0].values()) + len(handles)
    assert sum(app.store.count_jobs().values()) == count
    return handles


@SETTINGS
@given(value=st.one_of(values, deep))
def test_submit_any_value(app: Rota, value: Any) -> None:
    ok = plain_json(value, 2)
    handles = expect(app, lambda: app.get_task("fault.kw").submit(value), ok)
    if handles:
        rec = handles[0].record()
        assert orjson.loads(rec.payload) == {"args": [as_json(value)], "kwargs": {}}


@SETTINGS
@given(
    calls=st.lists(
        st.one_of(st.tuples(values), st.dictionaries(hostile_text, values, max_size=3)), max_size=4
    )
)
def test_submit_many_is_all_or_nothing(app: Rota, calls: list[Any]) -> None:
    def fine(call: Any) -> bool:
        if isinstance(call, tuple):
            return plain_json(list(call), 1)
        return plain_json(call, 1)

    ok = all(fine(c) for c in calls)
    handles = expect(app, lambda: app.get_task("fault.kw").submit_many(calls), ok)
    assert len(handles) == (len(calls) if ok else 0)


@SETTINGS
@given(name=hostile_text)
def test_unknown_task_names(app: Rota, name: str) -> None:
    assume(name not in app.tasks)
    expect(app, lambda: app.submit(name, 1), False)


@SETTINGS
@given(
    queue=hostile_text,
    labels=st.dictionaries(hostile_text, hostile_text, max_size=2),
    resources=st.dictionaries(
        hostile_text, st.one_of(st.floats(), st.integers(), hostile_text), max_size=2
    ),
    priority=st.one_of(st.integers(-(2**70), 2**70), st.floats(), hostile_text),
    timeout=st.one_of(st.none(), st.floats(), st.integers(-5, 5)),
)
def test_hostile_options(
    app: Rota,
    queue: str,
    labels: dict[str, str],
    resources: dict[str, Any],
    priority: Any,
    timeout: Any,
) -> None:
    def submit() -> Any:
        call = app.get_task("fault.kw").options(
            queue=queue, labels=labels, resources=resources, priority=priority, timeout=timeout
        )
        return call.submit(1)

    handles = expect(app, submit, None)
    if handles:  # accepted: stored exactly as given, and found under its queue
        rec = handles[0].record()
        assert rec.queue == queue and rec.labels == labels
        assert handles[0].id in {j.id for j in app.store.list_jobs(queue=queue, limit=100_000)}


@SETTINGS
@given(
    option=st.sampled_from(["retries", "bogus", "eta", "backoff", "delay"]), value=st.one_of(values)
)
def test_unknown_and_malformed_options(app: Rota, option: str, value: Any) -> None:
    expect(app, lambda: app.get_task("fault.kw").options(**{option: value}).submit(1), None)


def test_huge_payload_is_refused(app: Rota) -> None:
    expect(app, lambda: app.get_task("fault.kw").submit("x" * (DEFAULT_MAX_PAYLOAD + 1)), False)
    expect(app, lambda: app.get_task("fault.kw").submit(["y"] * DEFAULT_MAX_PAYLOAD), False)
    expect(app, lambda: app.get_task("fault.kw").submit(nest(100_000)), False)


# ---- the command line -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_app(app: Rota, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``module:app`` of a throw-away module whose app uses the test's store."""
    directory = tmp_path_factory.mktemp("cliapp")
    module = f"faults_cli_{uuid.uuid4().hex[:8]}"
    (directory / f"{module}.py").write_text(
        f"from tests.faults.apps import build\napp = build({app.store_url!r})\n"
    )
    sys.path.insert(0, str(directory))
    try:
        yield f"{module}:app"
    finally:
        sys.path.remove(str(directory))
        sys.modules.pop(module, None)


json_text = st.one_of(
    hostile_text,
    values.map(lambda v: orjson.dumps(v, default=repr).decode() if plain_json(v, 0) else repr(v)),
    st.sampled_from(
        ["[NaN]", "[Infinity]", "[1e999]", "[" * 5000 + "]" * 5000, "[1]" * 3, "{}", "[", "null"]
    ),
)
flags = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["--queue", "--labels", "--resources", "--kwargs"]), hostile_text
        ),
        st.tuples(
            st.sampled_from(["--priority", "--retries", "--timeout", "--delay", "--count"]),
            any_text,
        ),
        st.tuples(st.sampled_from(["--bogus", "-x", "--wait-timeout"]), any_text),
    ),
    max_size=3,
)


@SETTINGS
@given(task=st.one_of(st.just("fault.kw"), hostile_text), args=json_text, options=flags)
def test_rota_submit_cli(
    app: Rota, cli_app: str, task: str, args: str, options: list[tuple[str, str]]
) -> None:
    argv = ["submit", cli_app, task, args]
    for flag, value in options:
        if flag == "--count":
            value = value[:3]  # a hostile count is a usage error, not a million jobs
        argv += [flag, value]
    before = snapshot(app.store)
    result = CliRunner().invoke(cli, argv, catch_exceptions=True)
    exc = result.exception
    if result.exit_code == 0:
        assert exc is None
        ids = result.output.split()
        assert sum(app.store.count_jobs().values()) == sum(before[0].values()) + len(ids)
        return
    # Refused: a usage error (SystemExit) or a RotaError (which rota.cli.main prints as
    # "error: ..." with exit code 2), and nothing stored.
    assert isinstance(exc, SystemExit | RotaError), (argv, repr(exc), result.output)
    assert "Traceback" not in result.output
    assert snapshot(app.store) == before


def test_cli_usage_errors_are_clear(app: Rota, cli_app: str) -> None:
    result = CliRunner().invoke(cli, ["submit", cli_app, "fault.kw", "[NaN]"])
    assert result.exit_code == 2 and "not JSON" in result.output
    result = CliRunner().invoke(cli, ["submit", cli_app, "fault.kw", "[]", "--bogus"])
    assert result.exit_code == 2 and "No such option" in result.output
    result = CliRunner().invoke(cli, ["submit", cli_app, "fault.kw", "{}"])
    assert result.exit_code == 2 and "JSON array" in result.output
    result = CliRunner().invoke(cli, ["submit", cli_app, "'; DROP TABLE jobs; --", "[]"])
    assert isinstance(result.exception, RotaError)
