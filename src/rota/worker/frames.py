"""The wire between the process pool and its children: length-prefixed JSON frames.

Over a Unix socket pair, each message is a 4-byte big-endian length followed by a JSON array
(orjson; never pickle).

* Parent to child, a job: ``[job_id, task_name, payload, log_fields]`` (``log_fields``: the
  job's structured log fields, which the child's log records carry while the job runs; see
  :func:`rota.telemetry.logs.job_context`).
* Child to parent, its reply: the fields of an :class:`~rota.core.outcomes.ExecResult` and a
  "retiring" flag (the child exits after this reply).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from rota.core.outcomes import ExecKind, ExecResult

HEADER = struct.Struct("!I")
READ_SIZE = 256 * 1024  # bytes asked of the socket at a time


def encode_frame(fields: list[Any]) -> bytes:
    """``fields`` as one whole frame (header and body). What JSON cannot carry (a payload a
    damaged row returned as bytes, lone surrogates in an exception message) is escaped into
    text rather than lost: the child then reports such a payload as corrupt."""
    try:
        body = orjson.dumps(fields)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        body = orjson.dumps([_as_text(field) for field in fields])
    return HEADER.pack(len(body)) + body


def _as_text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode()
    return value


def job_frame(
    job_id: str, task_name: str, payload: str, log_fields: Mapping[str, Any] | None
) -> bytes:
    """The frame that hands one job to a child."""
    return encode_frame([job_id, task_name, payload, log_fields])


def reply_frame(result: ExecResult, retiring: bool) -> bytes:
    """The frame a child answers a job with."""
    return encode_frame(
        [
            result.kind,
            result.result,
            result.error,
            result.traceback,
            result.retry_delay,
            result.fatal,
            retiring,
        ]
    )


def decode_reply(message: list[Any]) -> tuple[ExecResult, bool]:
    """A reply frame's body: ``(result, retiring)``."""
    kind, result, error, traceback, retry_delay, fatal, retiring = message
    return ExecResult(ExecKind(kind), result, error, traceback, retry_delay, fatal), bool(retiring)


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def read_body(rfile: _Reader) -> bytes | None:
    """The body of the next frame from a blocking reader (``orjson.loads`` decodes it);
    ``None`` once the other end has closed."""
    header = rfile.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    body = rfile.read(size)
    return body if len(body) == size else None


def split_frames(buf: bytearray, data: bytes) -> list[list[Any]]:
    """The whole messages in ``buf`` + ``data``; a partial frame stays in ``buf``."""
    header_size = HEADER.size
    if not buf and len(data) >= header_size:  # fast path: exactly one whole frame
        (size,) = HEADER.unpack_from(data)
        if len(data) == header_size + size:
            return [orjson.loads(memoryview(data)[header_size:])]
    buf += data
    messages: list[list[Any]] = []
    while len(buf) >= header_size:
        (size,) = HEADER.unpack_from(buf)
        end = header_size + size
        if len(buf) < end:
            break
        messages.append(orjson.loads(bytes(buf[header_size:end])))
        del buf[:end]
    return messages
