"""Data-derived text made safe for one log or error line.

Ids, linkIds, canonicals and file names come from the data, and the data may be hostile or
just broken: a newline in a linkId would forge a second ``error:`` line, an ANSI escape would
reach the operator's terminal, a 10 MB id would make a 10 MB line. Every such value goes
through :func:`safe_text` before it is put into a message: control characters (C0, DEL, C1,
line and paragraph separators, bidirectional overrides) are written as escapes and long
values are cut, with their length said.

Answer contents are never put into messages at all; :func:`describe` says what a value is
(its JSON type, and a string's length) instead.

Text that goes into markdown (a CDS card's ``detail``) is made literal by :func:`markdown_text`.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

__all__ = ["MAX_SHOWN", "describe", "markdown_text", "one_line", "safe_text"]

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


# every ASCII punctuation character: CommonMark lets each be backslash-escaped, and escaped it is literal
_MARKDOWN_PUNCTUATION = re.compile(r"[!-/:-@\[-`{-~]")
_MARKDOWN_SPACE = re.compile(r"\s+")


def one_line(value: str) -> str:
    """``value`` as one plain line: control characters (as in :func:`safe_text`) and runs of white
    space become one space, and the ends are trimmed. For text that a data file gives and a
    clinician reads (a discussion prompt): it cannot break a line, a log or a layout."""
    return _MARKDOWN_SPACE.sub(" ", _UNSAFE.sub(" ", value)).strip()


def markdown_text(value: str, limit: int = 200) -> str:
    """``value`` as markdown that renders as exactly this text: no link, image, HTML, entity or emphasis.

    Why every ASCII punctuation character and not a chosen few: which characters start markup
    depends on where they stand (``-`` or ``1.`` at a line start, ``!`` before ``[``, ``&`` before
    ``amp;``, ``:`` in a bare ``http://`` that GitHub-flavoured renderers turn into a link), and
    CommonMark renders a backslash-escaped punctuation character as itself wherever it stands.
    ``<`` and ``>`` escaped, no HTML tag can open, and ``&`` escaped, no entity. Line breaks and
    other white space become one space, so a value cannot start a block (a heading, a list, a
    table row) or end in a hard line break; control characters are dropped as in :func:`safe_text`;
    long values are cut at ``limit`` characters with an ellipsis.
    """
    text = one_line(value)
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return _MARKDOWN_PUNCTUATION.sub(lambda m: "\\" + m.group(), text)


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
