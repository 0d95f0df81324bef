"""The fake FHIR server's clock behaves like a real one: every write is stamped later than the
one before (it used to read the clock twice per stamp and ran backwards after 29 writes)."""

from __future__ import annotations

from datetime import datetime

from .fake_fhir import FakeFhir


def test_lastupdated_stamps_strictly_increase_past_an_hour_of_writes():
    fake = FakeFhir()
    stamps = [datetime.fromisoformat(fake.stamp()) for _ in range(3700)]
    assert all(earlier < later for earlier, later in zip(stamps, stamps[1:], strict=False))
    assert stamps[0].tzinfo is not None
