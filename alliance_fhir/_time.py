"""Instants: one way to read ISO 8601 text, and the one stamp the state database is written with.

Reading: Python 3.11's :meth:`datetime.fromisoformat` reads a trailing ``Z`` itself, so no caller
rewrites it to ``+00:00``. A time without a zone is taken as UTC (FHIR allows a dateTime without
one, and the state's own stamps were always UTC), except where a server's stamp must carry its own
zone to be an instant at all (:func:`zoned_instant`: clock checks, Bulk Data's transactionTime).

Writing: :func:`stamp` is fixed width, UTC, microseconds and ``Z``, so comparing two stamps as
text (SQL ``<``, ``ORDER BY``) is comparing them in time, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["STAMP_FORMAT", "instant_or_none", "parse_instant", "stamp", "zoned_instant"]

STAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
# A partial FHIR date (a year, or a year and month) read as its first instant.
_PARTIAL_PADDING = {4: "-01-01", 7: "-01"}


def parse_instant(text: str, *, partial: bool = False) -> datetime:
    """``text`` as an aware datetime; no zone means UTC.

    ``partial``: also read a FHIR date of a year (``2026``) or a month (``2026-11``) as its start.

    Raises:
        ValueError: not an ISO 8601 date or date and time.
    """
    padded = (text + _PARTIAL_PADDING.get(len(text), "")) if partial else text
    parsed = datetime.fromisoformat(padded)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def instant_or_none(value: object, *, partial: bool = False) -> datetime | None:
    """Like :func:`parse_instant`, for values that may be absent or malformed: None for those."""
    if not isinstance(value, str):
        return None
    try:
        return parse_instant(value, partial=partial)
    except ValueError:
        return None


def zoned_instant(text: str) -> datetime | None:
    """A server's stamp when it is an instant, i.e. carries its zone; None when unreadable or zoneless.

    A zoneless time cannot be compared with our clock, so it is refused rather than guessed.
    """
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def stamp(instant: datetime | None = None) -> str:
    """The state database's one timestamp format (``2026-11-01T10:00:00.000000Z``); now when no instant is given."""
    return (instant or datetime.now(UTC)).astimezone(UTC).strftime(STAMP_FORMAT)
