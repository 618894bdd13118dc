"""JSON-only payloads: validation, encoding and decoding (orjson).

Only ``None``, ``bool``, ``int`` (64-bit), finite ``float``, ``str`` (valid UTF-8),
``list``/``tuple`` and ``dict`` with ``str`` keys are accepted. NaN and Infinity are
refused rather than silently turned into ``null``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import orjson

from rota.core.errors import CorruptPayload, InvalidPayload, PayloadTooLarge

JSONValue = Any
MAX_DEPTH = 64
DEFAULT_MAX_PAYLOAD = 1024 * 1024
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _plain(value: JSONValue, depth: int = 0) -> bool:
    """Whether ``value`` is plain, finite JSON (the fast check; no error message)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(_INT_MIN <= value <= _INT_MAX)
    if kind is float:
        return math.isfinite(value)
    if depth >= MAX_DEPTH:
        return False
    if kind is list or kind is tuple:
        for item in value:
            sub = type(item)
            if sub is not str and item is not None and not _plain(item, depth + 1):
                return False
        return True
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                return False
            sub = type(item)
            if sub is not str and item is not None and not _plain(item, depth + 1):
                return False
        return True
    return False


def check_json(value: JSONValue, what: str = "value") -> None:
    """Raise ``InvalidPayload`` unless ``value`` is plain, finite JSON."""
    if _plain(value):
        return
    stack: list[tuple[Any, int, str]] = [(value, 0, what)]
    while stack:
        item, depth, path = stack.pop()
        kind = type(item)
        if item is None or kind is bool or kind is str:
            continue
        if kind is int:
            if not _INT_MIN <= item <= _INT_MAX:
                raise InvalidPayload(f"{path}: integer {item} does not fit in 64 bits")
            continue
        if kind is float:
            if not math.isfinite(item):
                raise InvalidPayload(f"{path}: {item!r} is not valid JSON (NaN/Infinity)")
            continue
        if depth >= MAX_DEPTH:
            raise InvalidPayload(f"{path}: nested deeper than {MAX_DEPTH} levels")
        if kind is list or kind is tuple:
            for i, sub in enumerate(item):
                stack.append((sub, depth + 1, f"{path}[{i}]"))
            continue
        if kind is dict:
            for key, sub in item.items():
                if type(key) is not str:
                    raise InvalidPayload(f"{path}: dict key {key!r} is not a string")
                stack.append((sub, depth + 1, f"{path}[{key!r}]"))
            continue
        raise InvalidPayload(
            f"{path}: {kind.__name__} is not JSON (use str, int, float, bool, None, list, dict)"
        )


def dumps(value: JSONValue, what: str = "value") -> str:
    """Validate and encode ``value`` as compact JSON text."""
    check_json(value, what)
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError) as exc:  # e.g. lone surrogates in a str
        raise InvalidPayload(f"{what}: {exc}") from None


def loads(text: str | bytes, what: str = "payload") -> JSONValue:
    """Decode JSON text; raise ``CorruptPayload`` with the reason if it is not JSON."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise CorruptPayload(f"{what} is not valid JSON: {exc}") from None


def encode_arguments(
    args: Sequence[Any], kwargs: dict[str, Any], limit: int = DEFAULT_MAX_PAYLOAD
) -> str:
    """The stored form of a job's arguments: ``{"args": [...], "kwargs": {...}}``."""
    text = dumps({"args": list(args), "kwargs": kwargs}, "arguments")
    if len(text) > limit:
        raise PayloadTooLarge(
            f"arguments encode to {len(text)} bytes, over the limit of {limit} bytes"
        )
    return text


def decode_arguments(text: str) -> tuple[list[Any], dict[str, Any]]:
    """The inverse of :func:`encode_arguments`; ``CorruptPayload`` on anything else."""
    data = loads(text, "arguments")
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("args"), list)
        or not isinstance(data.get("kwargs"), dict)
    ):
        raise CorruptPayload("arguments are not an object with 'args' list and 'kwargs' dict")
    return data["args"], data["kwargs"]
