"""FHIR JSON in and out, in one place: orjson, with the standard library's output for ASCII data.

Every module that parses or writes FHIR JSON (the CLI's ``score``, the server client, the
service) goes through these functions, so the codec, its options and its limits are chosen
once. orjson is several times faster than :mod:`json` at both ends, which is most of the cost
of scoring a file (``docs/benchmarks.md``).

What the output looks like, compared with ``json.dumps``:

- :func:`dumps` equals ``json.dumps(value, separators=(",", ":"))`` and :func:`dumps_pretty`
  equals ``json.dumps(value, indent=2)`` byte for byte for ASCII data;
- non-ASCII text is written as UTF-8 (``"é"``), where ``json.dumps`` writes ``"\\u00e9"``
  (the same JSON value; as ``json.dumps(..., ensure_ascii=False)``), and so is the ASCII
  DEL character (0x7F), which ``json.dumps`` escapes as ``"\\u007f"``;
- a float with a two-digit negative exponent is written as ``1e-7`` where ``json`` writes
  ``1e-07`` (the same number); scores never take that form;
- an integer beyond 64 bits, which orjson cannot write, is written by :mod:`json` instead,
  so anything :mod:`json` could write is still written.

Reading (:func:`loads`) refuses what orjson refuses: a UTF-8 byte order mark, invalid UTF-8,
lone surrogates, ``NaN``/``Infinity``, nesting deeper than :data:`MAX_DEPTH`, and number
literals beyond a double's range. :func:`describe_error` turns each into one line that
names the reason and the position.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["MAX_DEPTH", "JSONDecodeError", "describe_error", "dumps", "dumps_pretty", "loads"]

JSONDecodeError = orjson.JSONDecodeError  # a subclass of json.JSONDecodeError (msg, lineno, colno, pos)
MAX_DEPTH = 1024  # orjson's nesting limit (arrays and objects); deeper input is refused, never recursed into

_BOM = b"\xef\xbb\xbf"


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse one JSON text. Raises :class:`JSONDecodeError` (see :func:`describe_error`)."""
    return orjson.loads(data)


def dumps(value: Any) -> bytes:
    """Compact JSON (no spaces), UTF-8 bytes."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return _stdlib(value, None)


def dumps_pretty(value: Any) -> bytes:
    """JSON indented by two spaces, UTF-8 bytes (without a final newline)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2)
    except orjson.JSONEncodeError:
        return _stdlib(value, 2)


def _stdlib(value: Any, indent: int | None) -> bytes:
    """The fallback for what orjson will not write (integers beyond 64 bits); raises TypeError like json."""
    separators = (",", ": ") if indent else (",", ":")
    return json.dumps(value, indent=indent, separators=separators, ensure_ascii=False, allow_nan=False).encode()


def describe_error(
    exc: json.JSONDecodeError, data: bytes | bytearray | str | None = None, *, with_line: bool = True
) -> str:
    """One line for a parse failure: the reason in plain words and where (line and column).

    ``data`` (the text that failed) lets the message name a byte order mark precisely;
    ``with_line=False`` drops the line number (an NDJSON line's label already carries it).
    """
    where = f"line {exc.lineno} column {exc.colno}" if with_line else f"column {exc.colno}"
    message = exc.msg
    if data is not None and (data[:3] == _BOM if isinstance(data, bytes | bytearray) else data[:1] == "\ufeff"):
        return (
            "starts with a UTF-8 byte order mark, which JSON does not allow (RFC 8259 section 8.1): save it without one"
        )
    if "depth limit" in message or "recursion" in message:
        return f"malformed JSON: nested deeper than {MAX_DEPTH} levels (the reader's limit) at {where}"
    if "infinity when parsed as double" in message:
        return f"malformed JSON: a number literal out of range (beyond a double's range) at {where}"
    if "after document" in message:
        return f"malformed JSON: unexpected content after the JSON value at {where}"
    return f"malformed JSON: {message} at {where}"
