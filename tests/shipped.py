"""The shipped instruments, read from the catalog (never a literal list), for parametrising tests.

A new shipped instrument is then scored, validated, packaged and rendered by every such test
without an edit. One test (tests/instruments/test_catalog.py) pins the shipped set on purpose.
"""

from __future__ import annotations

from pathlib import Path

from alliance_fhir.instruments.catalog import Instrument, data_root, load_catalog


def _shipped() -> list[Instrument]:
    # Only the packaged folder: a developer's $ALLIANCE_FHIR_INSTRUMENTS must not leak in at collection.
    root = data_root().resolve()
    return [inst for inst in load_catalog() if Path(inst.source).resolve().is_relative_to(root)]


def shipped_ids() -> list[str]:
    """Every shipped instrument's id, in catalog order."""
    return [inst.id for inst in _shipped()]


def vas_ids() -> list[str]:
    """The shipped instruments answered on visual analogue scales (SRS family)."""
    return [inst.id for inst in _shipped() if inst.mapping.item_scale.kind == "vas"]
