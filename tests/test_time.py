"""Instants are read one way and our timestamps written one way (alliance_fhir._time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from alliance_fhir._time import instant_or_none, parse_instant, stamp, zoned_instant

TEN = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    ["2026-11-01T10:00:00Z", "2026-11-01T10:00:00+00:00", "2026-11-01T11:00:00+01:00", "2026-11-01T10:00:00.000Z"],
)
def test_an_instant_with_z_or_an_offset_is_read_as_that_instant(text: str) -> None:
    assert parse_instant(text) == TEN and instant_or_none(text) == TEN and zoned_instant(text) == TEN


def test_a_time_without_a_zone_is_utc_except_where_a_zone_is_required() -> None:
    assert parse_instant("2026-11-01T10:00:00") == TEN
    assert parse_instant("2026-11-01T10:00:00").tzinfo is UTC
    assert zoned_instant("2026-11-01T10:00:00") is None  # a server stamp without a zone is not an instant


def test_partial_fhir_dates_are_read_only_when_asked_for() -> None:
    assert parse_instant("2026", partial=True) == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_instant("2026-11", partial=True) == datetime(2026, 11, 1, tzinfo=UTC)
    assert instant_or_none("2026-11") is None


@pytest.mark.parametrize("value", ["yesterday", "", "2026-13-01", None, 20261101])
def test_unreadable_values_raise_or_are_none(value: object) -> None:
    assert instant_or_none(value) is None and instant_or_none(value, partial=True) is None
    if isinstance(value, str):
        assert zoned_instant(value) is None
        with pytest.raises(ValueError):
            parse_instant(value)


def test_the_stamp_is_fixed_width_utc_with_microseconds_and_z() -> None:
    assert stamp(TEN) == "2026-11-01T10:00:00.000000Z"
    assert stamp(datetime(2026, 11, 1, 11, 0, 0, 5, tzinfo=timezone(timedelta(hours=1)))) == (
        "2026-11-01T10:00:00.000005Z"
    )
    assert parse_instant(stamp(TEN)) == TEN
    before, now, after = datetime.now(UTC), parse_instant(stamp()), datetime.now(UTC)
    assert before - timedelta(microseconds=1) <= now <= after


def test_stamps_compared_as_text_compare_in_time() -> None:
    instants = [TEN + timedelta(microseconds=n) for n in (0, 1, 999_999, 1_000_000, 36_000_000_000)]
    texts = [stamp(i) for i in reversed(instants)]
    assert sorted(texts) == [stamp(i) for i in instants] and len({len(t) for t in texts}) == 1
