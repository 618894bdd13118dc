from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rota.core.errors import CorruptPayload, InvalidPayload, PayloadTooLarge
from rota.core.payload import check_json, decode_arguments, encode_arguments


def test_roundtrip() -> None:
    text = encode_arguments(("a", 1, 2.5, None, True, [1, {"x": "é"}]), {"k": {"n": [1]}})
    assert decode_arguments(text) == (["a", 1, 2.5, None, True, [1, {"x": "é"}]], {"k": {"n": [1]}})


@pytest.mark.parametrize(
    "bad",
    [math.nan, math.inf, -math.inf, {1: "x"}, {"x": {1, 2}}, b"bytes", object(), 2**70, "\ud800"],
)
def test_refuses_what_is_not_plain_json(bad: Any) -> None:
    with pytest.raises(InvalidPayload):
        encode_arguments((bad,), {})


def test_refuses_deep_nesting_and_reports_the_path() -> None:
    deep: Any = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(InvalidPayload, match="nested deeper"):
        check_json(deep)
    with pytest.raises(InvalidPayload, match=r"arguments\['args'\]\[1\]\['x'\]"):
        encode_arguments((1, {"x": math.nan}), {})


def test_size_limit() -> None:
    encode_arguments(("x" * 1000,), {}, limit=2000)
    with pytest.raises(PayloadTooLarge, match="over the limit"):
        encode_arguments(("x" * 3000,), {}, limit=2000)


@pytest.mark.parametrize(
    "text", ["", "{", "[1, 2]", '{"args": 1, "kwargs": {}}', '{"args": []}', "\xff"]
)
def test_corrupt_stored_payload_is_reported(text: str) -> None:
    with pytest.raises(CorruptPayload):
        decode_arguments(text)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(
    st.lists(json_values, max_size=4), st.dictionaries(st.text(max_size=8), json_values, max_size=4)
)
def test_any_plain_json_roundtrips(args: list[Any], kwargs: dict[str, Any]) -> None:
    try:
        text = encode_arguments(args, kwargs)
    except InvalidPayload:
        # Only lone surrogates in text may be refused (not encodable as UTF-8).
        assert "\\ud" in repr((args, kwargs)).lower()
        return
    assert decode_arguments(text) == (args, kwargs)
