"""Every example response scores to the value computed by hand (arithmetic in the table)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from alliance_fhir import ScoringError, score_response

from ..shipped import vas_ids

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

EXPECTED = {
    # WAI-SR answers 4,3,5,4,5,3,4,4,5,2,4,3 -> 46; amended item 10: 2 -> 3 gives 47;
    # incomplete (items 7, 12 missing): 39 / 10 x 12 = 46.8
    ("wai-sr", "complete"): "46",
    ("wai-sr", "amended"): "47",
    ("wai-sr", "incomplete"): "46.8",
    # HAq-II: 70 positive + 26 reversed = 96; amended item 19: 1 -> 2 reverses to 5: 95;
    # incomplete (items 14, 19 missing): (96 - 6 - 6) / 17 x 19 = 93.88 -> 93.9
    ("haq-ii", "complete"): "96",
    ("haq-ii", "amended"): "95",
    ("haq-ii", "incomplete"): "93.9",
    ("srs", "complete"): "34.2",  # 8.5 + 9.1 + 7.6 + 9.0
    ("srs", "amended"): "36.7",  # 9.2 + 9.1 + 9.0 + 9.4
    ("csrs", "complete"): "31.6",  # 6.0 + 7.5 + 8.2 + 9.9
    ("csrs", "amended"): "31.7",  # 6.0 + 7.5 + 8.2 + 10.0
    ("gsrs", "complete"): "37.8",  # 9.5 + 8.8 + 9.9 + 9.6
    ("gsrs", "amended"): "38.2",  # 9.5 + 8.8 + 9.9 + 10.0
    ("ors", "complete"): "20.6",  # 4.2 + 5.1 + 6.3 + 5.0
    ("ors", "amended"): "25.1",  # 4.2 + 5.1 + 6.3 + 9.5
    ("cors", "complete"): "29.2",  # 7.0 + 6.4 + 8.1 + 7.7
    ("cors", "amended"): "30.2",  # 7.0 + 6.4 + 8.1 + 8.7
}


def test_every_instrument_has_complete_amended_and_incomplete_examples(catalog):
    for inst in catalog:
        assert sorted(p.stem for p in (EXAMPLES / inst.id).glob("*.json")) == ["amended", "complete", "incomplete"]


@pytest.mark.parametrize(("instrument", "kind"), sorted(EXPECTED))
def test_example_scores(catalog, instrument, kind):
    response = json.loads((EXAMPLES / instrument / f"{kind}.json").read_text())
    assert score_response(response, catalog).total.value == Decimal(EXPECTED[(instrument, kind)])


@pytest.mark.parametrize("instrument", vas_ids())
def test_incomplete_vas_examples_are_refused(catalog, instrument):
    """A client who stopped after three lines: the response is in progress, and scoring refuses it."""
    response = json.loads((EXAMPLES / instrument / "incomplete.json").read_text())
    with pytest.raises(ScoringError, match="status 'in-progress' is not scorable"):
        score_response(response, catalog)
    # even marked completed, a missing line is too many for a 4-line VAS (no prorating)
    with pytest.raises(ScoringError, match="unanswered item"):
        score_response(dict(response, status="completed"), catalog)
