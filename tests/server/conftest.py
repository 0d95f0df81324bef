"""Fixtures the back-fill tests share: a Bulk Data server over the FHIR fake, and a state file of the test's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from alliance_fhir.server.state import StateStore

from ..fake_bulk import FakeBulk
from ..fake_fhir import FakeFhir


@pytest.fixture
def bulk() -> FakeBulk:
    return FakeBulk(FakeFhir())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    """A SQLite state in the test's folder (test modules with a store of their own keep theirs)."""
    with StateStore(tmp_path / "state.sqlite") as s:
        yield s
