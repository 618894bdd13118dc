from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from rota.core.errors import InvalidOption
from rota.core.resources import fits, parse_labels, parse_quantity, parse_resources
from rota.options import JobOptions, validate_options


def test_parse_resources_with_units() -> None:
    assert parse_resources("cpu=4,mem=8G,gpu=1") == {"cpu": 4.0, "mem": 8e9, "gpu": 1.0}
    assert parse_resources(" cpu = 0.5 , mem=512Mi ") == {"cpu": 0.5, "mem": 512 * 2**20}
    assert parse_resources("") == {}
    assert parse_quantity("1.5k") == 1500.0


@pytest.mark.parametrize("text", ["cpu", "cpu=", "cpu=-1", "cpu=x", "mem=8Q", "1cpu=2", "cpu=nan"])
def test_bad_resources(text: str) -> None:
    with pytest.raises(InvalidOption):
        parse_resources(text)


def test_labels() -> None:
    assert parse_labels("zone=eu, disk=ssd") == {"zone": "eu", "disk": "ssd"}
    with pytest.raises(InvalidOption):
        parse_labels("zone")


def test_fits() -> None:
    assert fits({"cpu": 2.0}, {"cpu": 2.0, "gpu": 1.0})
    assert not fits({"gpu": 1.0}, {"cpu": 8.0})
    assert fits({}, {})


def test_validate_options_normalises() -> None:
    out = validate_options({"priority": 5, "timeout": 3, "resources": {"gpu": 1}, "queue": "img"})
    assert out == {"priority": 5, "timeout": 3.0, "resources": {"gpu": 1.0}, "queue": "img"}
    eta = datetime(2030, 1, 1, tzinfo=UTC)
    assert validate_options({"eta": eta})["eta"] == eta.timestamp()
    assert JobOptions().merged({"retries": 2}).retries == 2


@pytest.mark.parametrize(
    "opts",
    [
        {"timeout": -1},
        {"timeout": 0},
        {"timeout": math.inf},
        {"priority": "high"},
        {"priority": True},
        {"priority": 2**40},
        {"retries": -1},
        {"delay": math.nan},
        {"queue": "has space"},
        {"queue": ""},
        {"resources": {"cpu": -2}},
        {"resources": ["cpu"]},
        {"labels": {"zone": 1}},
        {"no_such_option": 1},
    ],
)
def test_malformed_options_are_refused(opts: dict[str, Any]) -> None:
    with pytest.raises(InvalidOption):
        validate_options(opts)
