"""Data-derived text made safe for one log or error line.

Ids, linkIds, canonicals and file names come from the data, and the data may be hostile or
just broken: a newline in a linkId would forge a second ``error:`` line, an ANSI escape would
reach the operator's terminal, a 10 MB id would make a 10 MB line. Every such value goes
through :func:`safe_text` before it is put into a message: control characters (C0, DEL, C1,
line and paragraph separators, bidirectional overrides) are written as escapes and long
values are cut, with their length said.

Answer contents are never put into messages at all; :func:`describe` says what a value is
(its JSON type, and a string's length) instead.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

__all__ = ["MAX_SHOWN", "describe", "safe_text"]

MAX_SHOWN = 120
"""Characters of a data-derived value shown in a message before it is cut."""

# C0 and C1 controls, DEL, line/paragraph separators, bidi embeddings/overrides/isolates, BOM.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(value: str, limit: int = MAX_SHOWN) -> str:
    """``value`` with control characters escaped, cut after ``limit`` characters (its length said)."""
    shown = value if len(value) <= limit else value[:limit]
    shown = _UNSAFE.sub(_escape, shown)
    return shown if len(value) <= limit else f"{shown}... ({len(value)} characters)"


def describe(value: Any) -> str:
    """What a JSON value is, without its content: ``a JSON string (12 characters)``, ``a JSON object``."""
    if value is None:
        return "JSON null"
    if isinstance(value, bool):
        return "a JSON boolean"
    if isinstance(value, int):
        return "a JSON integer"
    if isinstance(value, float | Decimal):
        return "a JSON number" if _finite(value) else "a non-finite number"
    if isinstance(value, str):
        return f"a JSON string ({len(value)} characters)"
    if isinstance(value, list):
        return f"a JSON array ({len(value)} elements)"
    if isinstance(value, dict):
        return "a JSON object"
    return f"not a JSON value ({type(value).__name__})"


def _finite(value: float | Decimal) -> bool:
    return value.is_finite() if isinstance(value, Decimal) else value - value == 0
