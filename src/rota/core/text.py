"""The one rule for text that rota stores outside a JSON payload (task and schedule names,
queues, labels, unique and concurrency keys, parent ids, node names): no control
characters (NUL included) and no lone surrogates. PostgreSQL cannot store a NUL in text at
all and no store can encode a lone surrogate, so such text is refused at validation on
every store alike, instead of being accepted by one store and refused by another."""

from __future__ import annotations

import re

from rota.core.errors import InvalidText

_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def check_text(what: str, value: object, max_len: int, *, allow_empty: bool = False) -> str:
    """``value`` unchanged when it is 1 (0 with ``allow_empty``) to ``max_len`` characters
    of storable text, else ``InvalidText`` saying what is wrong."""
    low = 0 if allow_empty else 1
    if not isinstance(value, str) or not low <= len(value) <= max_len:
        raise InvalidText(
            f"{what} must be a string of {low}-{max_len} characters, got {value!r:.200}"
        )
    bad = _FORBIDDEN.search(value)
    if bad is not None:
        raise InvalidText(
            f"{what} {value!r:.200} holds {bad.group()!r} at position {bad.start()}: control "
            "characters (NUL included) and lone surrogates cannot be stored"
        )
    return value


def storable_text(text: str) -> str:
    """``text`` with what no store can keep made visible instead: a NUL as ``\\x00``, a
    lone surrogate as ``\\udxxx`` (for text rota does not refuse but must store, such as a
    task's error message)."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode()
    return text
