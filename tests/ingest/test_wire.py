"""The wire format: the same validation as ``Task.submit``, derived job ids, and storing a
batch exactly once (on SQLite: no server needed)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from rota import Rota
from rota.core.errors import InvalidOption
from rota.ingest.storing import store_batch
from rota.ingest.wire import (
    _CALLS,
    CACHED_SHAPES,
    WIRE_OPTIONS,
    InvalidMessage,
    job_id_for,
    parse_message,
    schema,
    task_call,
)
from rota.options import OPTION_NAMES


@pytest.fixture
def app(tmp_path: Path) -> Rota:
    app = Rota(f"sqlite:///{tmp_path / 'wire.db'}")

    @app.task(name="shop.resize", queue="images")
    def resize(path: str, width: int = 100) -> str:
        return path

    return app


def body(**fields: object) -> bytes:
    return orjson.dumps(fields)


def test_a_valid_message_becomes_the_job_task_submit_would_make(app: Rota) -> None:
    msg = body(
        task="shop.resize",
        args=["a.png"],
        kwargs={"width": 40},
        options={"priority": 5, "retries": 2, "timeout": 9, "labels": {"zone": "eu"}},
    )
    job = parse_message(app, msg, "amqp|/|m1")
    same = app.get_task("shop.resize").options(
        priority=5, retries=2, timeout=9, labels={"zone": "eu"}
    )
    expected = same.new_job(("a.png",), {"width": 40})
    assert job.id == job_id_for("amqp|/|m1") != expected.id
    expected.id = job.id
    assert job == expected
    assert job.queue == "images"  # the task's queue, as Task.submit would use
    routed = parse_message(app, body(task="resize", args=["b"]), "k", default_queue="fast")
    assert routed.queue == "fast" and routed.task == "shop.resize"  # short name, routing key
    assert parse_message(app, msg, "amqp|/|m1").id == job.id  # same message, same job id


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (body(args=[1]), '"task"'),
        (body(task="nope"), "unknown task"),
        (body(task="shop.resize"), "missing a required argument"),
        (body(task="shop.resize", args=["a", 1, 2]), "too many"),
        (body(task="shop.resize", args="a"), '"args"'),
        (body(task="shop.resize", args=["a"], extra=1), "unknown field"),
        (body(task="shop.resize", args=["a"], options={"depends_on": ["x"]}), "unknown option"),
        (body(task="shop.resize", args=["a"], options={"priority": "high"}), "priority"),
        (body(task="shop.resize", args=["a"], options={"queue": "no spaces"}), "queue"),
        (body(task="shop.resize", args=["a"], options={"retries": -1}), "retries"),
    ],
)
def test_invalid_messages_say_why(app: Rota, raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_message(app, raw, "k")
    assert reason in info.value.reason


def test_the_api_refuses_what_the_wire_refuses(app: Rota) -> None:
    # The same messages through Task.submit's own path fail the same way.
    with pytest.raises(InvalidOption):
        app.get_task("shop.resize").options(priority="high")
    with pytest.raises(InvalidOption, match="missing a required argument"):
        app.get_task("shop.resize").options().new_job((), {})


def test_schema_lists_exactly_the_wire_options() -> None:
    data = schema()
    assert set(data["properties"]["options"]["properties"]) == WIRE_OPTIONS
    assert WIRE_OPTIONS <= OPTION_NAMES
    assert data["required"] == ["task"]


def test_a_batch_is_stored_once_whatever_is_redelivered(app: Rota) -> None:
    task = "shop.resize"
    jobs = [parse_message(app, body(task=task, args=[f"{i}.png"]), f"k{i}") for i in range(5)]
    first = store_batch(app.store, jobs[:3])
    assert first.created == [True] * 3 and not first.refused
    # Redelivered (k1, k2), new (k3, k4), and k3 twice in the batch.
    again = [jobs[1], jobs[3], jobs[2], jobs[3], jobs[4]]
    second = store_batch(app.store, again)
    assert second.created == [False, True, False, False, True]
    assert second.job_ids == [j.id for j in again]
    assert len(app.store.list_jobs(limit=100)) == 5
    # A job the store refuses (unknown parent) is reported; the rest are stored.
    bad = parse_message(app, body(task=task, args=["x"]), "k-bad")
    bad.depends_on = ("no-such-parent",)
    good = parse_message(app, body(task=task, args=["y"]), "k-good")
    third = store_batch(app.store, [bad, good, jobs[0]])
    assert list(third.refused) == [0] and third.created == [False, True, False]
    assert len(app.store.list_jobs(limit=100)) == 6


def test_an_options_shape_is_validated_once_and_arguments_every_time(app: Rota) -> None:
    opts = {"priority": 3, "labels": {"zone": "eu", "tier": "a"}}
    first = parse_message(app, body(task="shop.resize", args=["a"], options=opts), "k1")
    # The same shape, keys in another order: the cached call, the same job but its id.
    reordered = {"labels": {"tier": "a", "zone": "eu"}, "priority": 3}
    second = parse_message(app, body(task="shop.resize", args=["a"], options=reordered), "k2")
    assert task_call(app, "shop.resize", opts) is task_call(app, "shop.resize", reordered)
    second.id = first.id
    assert second == first and first.priority == 3 and first.labels == {"zone": "eu", "tier": "a"}
    # A cached shape still checks the arguments of each message.
    with pytest.raises(InvalidMessage, match="bad arguments"):
        parse_message(app, body(task="shop.resize", args=[], options=opts), "k3")
    # A different value is another shape, validated on its own; a bad one is never cached.
    with pytest.raises(InvalidMessage, match="priority"):
        parse_message(app, body(task="shop.resize", args=["a"], options={"priority": "x"}), "k4")
    other = parse_message(app, body(task="shop.resize", args=["a"], options={"priority": 4}), "k5")
    assert other.priority == 4


def test_the_shape_cache_is_bounded(app: Rota) -> None:
    for i in range(CACHED_SHAPES + 10):
        job = parse_message(app, body(task="shop.resize", args=["a"], options={"priority": i % 10,
                            "labels": {"n": str(i)}}), f"k{i}")  # fmt: skip
        assert job.labels == {"n": str(i)}
    assert len(_CALLS[app]) <= CACHED_SHAPES
