"""Hostile input refused at validation with a clear ``RotaError`` (issue 19): names with a
trailing newline, control characters and lone surrogates, numbers beyond float range,
times beyond ten years, wrong argument types; and job ids that differ up front."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import pytest

from rota import Rota
from rota.core.errors import InvalidOption, InvalidPayload, InvalidText
from rota.core.rates import parse_rate
from rota.core.resources import parse_labels, parse_quantity, parse_resources
from rota.options import MAX_SECONDS, validate_options


@pytest.mark.parametrize(
    "opts",
    [
        {"queue": "a\n"},
        {"labels": {"zone\n": "eu"}},
        {"affinity": {"disk\n": "ssd"}},
        {"resources": {"cpu\n": 1}},
    ],
)
def test_a_trailing_newline_is_not_a_name(opts: dict[str, Any]) -> None:
    with pytest.raises(InvalidOption):
        validate_options(opts)


@pytest.mark.parametrize(
    "opts",
    [
        {"labels": {"zone": "eu\x00"}},
        {"labels": {"zone": "eu\n"}},
        {"affinity": {"zone": "\x00"}},
        {"unique_key": "k\x00"},
        {"unique_key": "k\ud800"},
        {"concurrency_key": "user:\x00"},
        {"depends_on": ["abc\x00"]},
        {"depends_on": "abc\n"},
    ],
)
def test_control_characters_are_refused_as_invalid_text(opts: dict[str, Any]) -> None:
    with pytest.raises(InvalidText, match="cannot be stored"):
        validate_options(opts)


def test_names_are_checked_by_the_same_rule(tmp_path: Path) -> None:
    app = Rota(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(InvalidText):
        app.task(name="bad\x00name")(lambda: None)
    with pytest.raises(InvalidText):
        app.periodic("* * * * *", name="tick\n")(lambda: None)

    @app.task(concurrency_key=lambda user, **_: f"u:{user}\x00", concurrency_limit=1)
    def per_user(user: str) -> None: ...

    with pytest.raises(InvalidText):
        per_user.submit("x")
    assert app.store.count_jobs() == {}
    app.close()


@pytest.mark.parametrize(
    "opts",
    [
        {"resources": {"cpu": 10**400}},
        {"timeout": 10**400},
        {"delay": -(10**400)},
        {"timeout": 1e308},
        {"delay": 1e308},
        {"eta": 1e308},
        {"eta": time.time() + MAX_SECONDS + 86400},
        {"backoff_max": MAX_SECONDS * 2},
        {"unique_for": 1e300},
    ],
)
def test_huge_numbers_are_refused_clearly(opts: dict[str, Any]) -> None:
    with pytest.raises(InvalidOption):
        validate_options(opts)


def test_bounds_accept_what_is_sane() -> None:
    now = time.time()
    out = validate_options({"timeout": MAX_SECONDS, "delay": 86400.0, "eta": now + 3600})
    assert out["timeout"] == MAX_SECONDS and out["eta"] == now + 3600
    assert parse_quantity("8G") == 8e9
    with pytest.raises(InvalidOption):
        parse_quantity("9" * 400)  # a decimal beyond float range is inf: refused
    assert parse_resources("cpu=1") == {"cpu": 1.0} and parse_labels("a=b") == {"a": "b"}
    with pytest.raises(InvalidOption):
        parse_rate(f"{10**10}/s")


@pytest.mark.parametrize(
    "schedule",
    [{"grace": "x"}, {"grace": 10**400}, {"tz": 5}, {"cron": 5}, {"args": 5}, {"kwargs": [1]}],
)
def test_schedule_arguments_of_the_wrong_type(tmp_path: Path, schedule: dict[str, Any]) -> None:
    app = Rota(f"sqlite:///{tmp_path / 'x.db'}")

    @app.task()
    def tick() -> None: ...

    with pytest.raises(InvalidOption):
        app.schedule(tick, **{"cron": "* * * * *", **schedule})


def test_argument_types_are_checked_at_submit(tmp_path: Path) -> None:
    app = Rota(f"sqlite:///{tmp_path / 'x.db'}")

    @app.task()
    def resize(
        path: str,
        width: int,
        scale: float = 1.0,
        flag: bool = False,
        tags: list[str] | None = None,
        meta: Optional[dict[str, Any]] = None,  # noqa: UP045 - the typing form, on purpose
        anything: Any = None,
    ) -> None: ...

    @app.task()
    def many(*sizes: int, **names: str) -> None: ...

    refused: list[tuple[tuple[Any, ...], dict[str, Any], str]] = [
        (("a", "wide"), {}, "width must be int, got str 'wide'"),
        (("a", True), {}, "width must be int, got bool"),  # bool is not int
        (("a", 2.0), {}, "width must be int, got float"),
        (("a", 2, True), {}, "scale must be float, got bool"),
        (("a", 2), {"flag": 1}, "flag must be bool, got int"),
        (("a", 2), {"tags": "x"}, "tags must be list or None"),
        (("a", 2), {"meta": []}, "meta must be dict or None"),
        ((), {"path": 3, "width": 1}, "path must be str"),
    ]
    for args, kwargs, message in refused:
        with pytest.raises(InvalidPayload, match=message):
            resize.submit(*args, **kwargs)
    resize.submit("a", 2, 3)  # an int for a float
    resize.submit("a", 2, tags=("x",), meta=None, anything=[1, "x"])  # type: ignore[arg-type]
    many.submit(1, 2, x="s")
    with pytest.raises(InvalidPayload, match=r"\*sizes\[1\] must be int"):
        many.submit(1, "2")  # type: ignore[arg-type]
    with pytest.raises(InvalidPayload, match="x must be str"):
        many.submit(x=1)  # type: ignore[arg-type]
    assert sum(app.store.count_jobs().values()) == 3
    app.close()
