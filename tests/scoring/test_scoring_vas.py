"""The SRS family (SRS, CSRS, GSRS) and its companions ORS and CORS, scored by hand.

Key: four 10 cm visual-analogue lines, each 0-10 to the mm (one decimal); total = sum, 0-40.
Cutoffs (C2 only): SRS 36, "below 36" by default (the <= boundary is disputed, so the
operator lives in the mapping); ORS 25 for adults. CSRS, GSRS and CORS have no confirmed cutoff.
All four lines are required (no prorating of a 4-line scale: project decision).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from alliance_fhir import ScoringError, load_catalog, score_response

from ..shipped import vas_ids

VAS = vas_ids()


def answers(*values: float) -> dict[int, float]:
    return dict(enumerate(values, 1))


@pytest.mark.parametrize("instrument", VAS)
def test_minimum_and_maximum(catalog, make_response, instrument):
    assert score_response(make_response(instrument, answers(0, 0, 0, 0)), catalog).total.value == 0
    assert score_response(make_response(instrument, answers(10, 10, 10, 10)), catalog).total.value == 40


@pytest.mark.parametrize("instrument", VAS)
def test_decimals_add_exactly(catalog, make_response, instrument):
    result = score_response(make_response(instrument, answers(7.3, 8.1, 9.9, 6.4)), catalog)
    # 7.3 + 8.1 + 9.9 + 6.4 = 31.7 (exactly, no binary-float residue)
    assert result.total.value == Decimal("31.7")
    assert str(result.total.value) == "31.7"


@pytest.mark.parametrize("instrument", VAS)
def test_a_missing_line_is_an_error(catalog, make_response, instrument):
    with pytest.raises(ScoringError) as info:
        score_response(make_response(instrument, answers(7.3, 8.1, 9.9)), catalog)
    assert "too many missing answers" in str(info.value) and "4 of 4" in str(info.value)


@pytest.mark.parametrize("bad, reason", [(10.1, "out of range"), (-0.1, "out of range"), (7.25, "decimal place")])
def test_values_outside_the_line(catalog, make_response, bad, reason):
    with pytest.raises(ScoringError) as info:
        score_response(make_response("srs", answers(9, 9, bad, 9)), catalog)
    assert info.value.link_id == "3" and reason in info.value.reason


def flag_ids(result):  # noqa: ANN001, ANN201
    return [f.id for f in result.total.flags]


def test_srs_below_36_is_flagged(catalog, make_response):
    result = score_response(make_response("srs", answers(9.0, 9.0, 9.0, 8.9)), catalog)
    # 9 + 9 + 9 + 8.9 = 35.9 < 36
    assert result.total.value == Decimal("35.9") and flag_ids(result) == ["alliance-concern"]


def test_srs_exactly_36_is_not_flagged_under_the_default_rule(catalog, make_response):
    result = score_response(make_response("srs", answers(9, 9, 9, 9)), catalog)
    assert result.total.value == 36 and flag_ids(result) == []


def test_srs_boundary_operator_is_data(tmp_path: Path, make_response):
    """An organisation whose licence says '36 or below' changes the mapping, not the code."""
    folder = tmp_path / "srs-le"
    (folder / "questionnaires").mkdir(parents=True)
    (folder / "mappings").mkdir()
    root = Path(__file__).resolve().parents[2]
    questionnaire = json.loads((root / "questionnaires/srs.json").read_text())
    questionnaire["version"] = "1.0.0-le"
    (folder / "questionnaires/srs.json").write_text(json.dumps(questionnaire))
    mapping = json.loads((root / "mappings/srs.json").read_text())
    mapping["questionnaire"] = questionnaire["url"] + "|1.0.0-le"
    mapping["scales"][0]["cutoffs"][0]["operator"] = "<="
    (folder / "mappings/srs.json").write_text(json.dumps(mapping))
    custom = load_catalog([folder])
    assert custom.problems == []
    response = make_response("srs", answers(9, 9, 9, 9), version="1.0.0-le")
    assert flag_ids(score_response(response, custom)) == ["alliance-concern"]


def test_ors_below_25_is_the_clinical_range(catalog, make_response):
    result = score_response(make_response("ors", answers(6.0, 6.0, 6.0, 6.9)), catalog)
    # 6 + 6 + 6 + 6.9 = 24.9 < 25
    assert flag_ids(result) == ["clinical-range"]
    assert flag_ids(score_response(make_response("ors", answers(6, 6, 6, 7)), catalog)) == []


@pytest.mark.parametrize("instrument", ["csrs", "gsrs", "cors"])
def test_no_unconfirmed_cutoff_is_applied(catalog, make_response, instrument):
    assert flag_ids(score_response(make_response(instrument, answers(0, 0, 0, 0)), catalog)) == []


def test_integer_answers_count_as_decimals(catalog, make_response):
    response = make_response("srs", answers(9, 9, 9, 9))
    response["item"][0]["answer"] = [{"valueInteger": 10}]
    assert score_response(response, catalog).total.value == 37


def test_ors_reliable_change_is_recorded_for_signals(catalog):
    change = catalog.get("ors").mapping.reliable_change
    assert change is not None and change.value == 5 and change.confidence == "C2"
    assert catalog.get("cors").mapping.reliable_change is None
