"""The ``--since`` of sync and backfill: the ``_lastUpdated`` lower bound, from a date or a duration."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from .._time import instant_or_none
from ..errors import ConfigError

__all__ = ["since_value"]

_DURATION = re.compile(r"(\d+)\s*(s|m|h|d|w)")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DATE = re.compile(r"\d{4}(-\d{2}(-\d{2})?)?")


def since_value(text: str, now: datetime | None = None) -> str:
    """The ``_lastUpdated`` lower bound for ``--since``: an ISO date or dateTime as given, or a duration ago.

    ``7d``, ``12h``, ``30m``, ``2w``, ``90s`` mean that long before ``now`` (UTC); a dateTime
    without a zone is read as UTC. Anything else is refused before a request is sent.

    Raises:
        ConfigError: not a date, dateTime or duration.
    """
    value = text.strip()
    duration = _DURATION.fullmatch(value)
    if duration:
        ago = timedelta(**{_UNITS[duration.group(2)]: int(duration.group(1))})
        return ((now or datetime.now(UTC)) - ago).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    if _DATE.fullmatch(value):
        if instant_or_none(value, partial=True) is not None:
            return value
    elif "T" in value:
        parsed = instant_or_none(value)
        if parsed is not None:
            return parsed.isoformat().replace("+00:00", "Z")
    raise ConfigError(
        f"--since {text!r}: not an ISO date (2026-11-01), dateTime (2026-11-01T09:00:00Z) "
        "or duration (7d, 12h, 30m, 2w)"
    )
