"""Submit-time validation through the public API, on a real (temporary) SQLite store."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rota import InvalidOption, InvalidPayload, JobState, PayloadTooLarge, Rota, UnknownTask


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Rota:
    monkeypatch.delenv("ROTA_STORE", raising=False)
    app = Rota(f"sqlite:///{tmp_path / 'app.db'}", max_payload=10_000)

    @app.task(queue="images", priority=1, retries=3, timeout=30, resources={"cpu": 1})
    def resize(path: str, width: int) -> str:
        return f"{path}@{width}"

    @app.task()
    async def fetch(url: str) -> int:
        return len(url)

    return app


def test_submit_applies_task_defaults_and_options(app: Rota) -> None:
    resize = app.get_task("resize")
    h = resize.submit("a.png", 200)
    rec = h.record()
    assert rec.state is JobState.PENDING and rec.queue == "images" and rec.priority == 1
    assert rec.max_attempts == 4 and rec.timeout == 30 and rec.resources == {"cpu": 1.0}
    assert rec.arguments() == (["a.png", 200], {})
    h2 = resize.options(priority=9, delay=30, resources={"gpu": 1}).submit("b.png", 400)
    rec2 = h2.record()
    assert (
        rec2.priority == 9 and rec2.state is JobState.SCHEDULED and rec2.resources == {"gpu": 1.0}
    )
    assert h.status() is JobState.PENDING
    assert app.get_task("resize")("x", 1) == "x@1"  # calling runs it here


def test_submit_many_is_one_batch(app: Rota) -> None:
    resize = app.get_task("resize")
    handles = resize.submit_many([("c.png", 100), {"path": "d.png", "width": 5}])
    assert [h.record().arguments() for h in handles] == [
        (["c.png", 100], {}),
        ([], {"path": "d.png", "width": 5}),
    ]
    assert resize.submit_many([]) == []


def _stored(app: Rota) -> int:
    return sum(app.store.count_jobs().values())


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda app: app.submit("nope"), UnknownTask),
        (lambda app: app.get_task("resize").submit("a", math.nan), InvalidPayload),
        (lambda app: app.get_task("resize").submit("a", object()), InvalidPayload),
        (lambda app: app.get_task("resize").submit("x" * 20_000, 1), PayloadTooLarge),
        (lambda app: app.get_task("resize").submit("a"), InvalidOption),  # missing argument
        (lambda app: app.get_task("resize").submit("a", 1, 2), InvalidOption),
        (lambda app: app.get_task("resize").options(timeout=-1).submit("a", 1), InvalidOption),
        (lambda app: app.get_task("resize").options(colour="red").submit("a", 1), InvalidOption),
        (
            lambda app: app.get_task("resize").submit_many([("a", 1), ("b", math.inf)]),
            InvalidPayload,
        ),
        (lambda app: app.get_task("resize").submit_many(["a"]), InvalidOption),
    ],
)
def test_bad_input_is_refused_and_nothing_is_stored(
    app: Rota, call: object, error: type[Exception]
) -> None:
    app.get_task("resize").submit("kept.png", 1)
    with pytest.raises(error):
        call(app)  # type: ignore[operator]
    assert _stored(app) == 1  # the earlier job is still there, nothing new


def test_unplaceable_resources_are_accepted(app: Rota) -> None:
    h = app.get_task("resize").options(resources={"gpu": 64}).submit("a", 1)
    assert h.status() is JobState.PENDING


def test_store_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROTA_STORE", f"sqlite:///{tmp_path / 'env.db'}")
    assert Rota("sqlite:///ignored.db").store_url.endswith("env.db")


def test_duplicate_task_names_are_refused(app: Rota) -> None:
    taken = app.get_task("resize").name
    with pytest.raises(InvalidOption, match="already registered"):

        @app.task(name=taken)
        def other() -> None: ...

    names = set(app.tasks)
    assert any(n.endswith("resize") for n in names) and any(n.endswith("fetch") for n in names)
