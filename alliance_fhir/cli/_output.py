"""Output and logs: what every command writes, and how, so cron jobs and log shippers can read it.

- **Data on stdout.** Tables are Rich tables on a terminal and plain tab-separated lines
  otherwise (no box drawing in a pipe, a file or a cron mail); ``--json`` is one JSON document
  on one line (:func:`emit_json`), so ``| jq`` and line-based collectors read it.
- **Messages on stderr**, one line each (:func:`say`): ``error: ...``, ``warning: ...``, and
  so on. With ``--log-format json`` every stderr line, messages and ``--verbose`` log records
  alike, is one JSON object with ``time`` (UTC, ISO 8601), ``level`` and ``message``; in the
  default text format log records carry the same timestamp at the start of the line.
- **Safe text.** Every line is passed through :func:`~alliance_fhir._text.safe_text`: control
  characters from the data (a newline in a linkId, an ANSI escape in an id) are escaped, so one
  message is always one line and nothing reaches the terminal as a command; a line longer than
  :data:`MAX_LINE` is cut and its length said. Data are never read as Rich markup.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import IO, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._json import dumps
from .._text import safe_text

__all__ = [
    "MAX_LINE",
    "LogFormat",
    "configure_logging",
    "emit_json",
    "emit_table",
    "log_format",
    "say",
    "set_log_format",
]

MAX_LINE = 4000
"""Characters of one message line before it is cut (its length is then said)."""
_LEVELS = {"error": "error", "failed": "error", "problem": "error", "warning": "warning"}


class LogFormat(StrEnum):
    """How stderr lines are written: ``text`` for people, ``json`` for log collectors."""

    text = "text"
    json = "json"


_format = LogFormat.text


def set_log_format(fmt: LogFormat | str) -> None:
    """Choose the stderr format for this process (the ``--log-format`` option)."""
    global _format
    _format = LogFormat(fmt)
    configure_logging(logging.getLogger("alliance_fhir").level or logging.WARNING)


def log_format() -> LogFormat:
    return _format


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def say(text: str, kind: str | None = None, *, stream: IO[str] | None = None) -> None:
    """One message line on stderr: ``kind: text`` (or a JSON record with ``--log-format json``).

    ``kind`` is ``error``, ``warning``, ``note``, ``problem``, ``failed``, ``wrote``, ... or None
    for a plain informational line.
    """
    line = safe_text(text, MAX_LINE)
    target = stream or sys.stderr
    if _format is LogFormat.json:
        record = {"time": _now(), "level": _LEVELS.get(kind or "", "info"), "message": line}
        if kind:
            record["kind"] = kind
        target.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        target.write(f"{kind}: {line}\n" if kind else line + "\n")
    target.flush()


def emit_json(value: Any) -> None:
    """One JSON document on one line of stdout (``--json``)."""
    sys.stdout.write(dumps(value).decode("utf-8") + "\n")
    sys.stdout.flush()


def emit_table(
    title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, console: Console | None = None
) -> None:
    """A table on stdout: Rich on a terminal, else a title line, a header line and one line per row.

    Plain lines separate cells with a tab; a cell's own tabs and newlines are escaped, so each
    row stays one line. Cells are never read as Rich markup (an id may contain ``[/]``).
    """
    cells = [[safe_text(str(c), MAX_LINE) for c in row] for row in rows]
    if sys.stdout.isatty():
        table = Table(*columns, title=safe_text(title, MAX_LINE))
        for row in cells:
            table.add_row(*(Text(c) for c in row))
        (console or Console(soft_wrap=True)).print(table)
        return
    lines = [safe_text(title, MAX_LINE), "\t".join(columns), *("\t".join(row) for row in cells)]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


class _Formatter(logging.Formatter):
    """Log records as ``time LEVEL logger: message`` or as one JSON object, message made safe."""

    def format(self, record: logging.LogRecord) -> str:
        message = safe_text(record.getMessage(), MAX_LINE)
        when = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if _format is LogFormat.json:
            return json.dumps(
                {"time": when, "level": record.levelname.lower(), "logger": record.name, "message": message},
                ensure_ascii=False,
            )
        return f"{when} {record.levelname} {record.name}: {message}"


class _StderrHandler(logging.Handler):
    """Writes each record as one line to the *current* ``sys.stderr`` (tests and redirections replace it)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_Formatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # logging must never take the command down (a closed pipe, say)
            self.handleError(record)


def configure_logging(level: int) -> None:
    """Route the package's log records to stderr in the chosen format (one handler, set once)."""
    logger = logging.getLogger("alliance_fhir")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(level)
    # our own line per exchange replaces httpx's (it logs full URLs)
    logging.getLogger("httpx").setLevel(logging.WARNING)
