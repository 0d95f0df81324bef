"""A response to a vendor's form scores exactly as our own form would, through its form map.

The maps are the two examples in ``form-maps/examples/`` (invented ids), loaded as a site loads its own
folder (the ``vendor_catalog`` fixture); the shipped catalog has none.

Numbers hand-computed from the instruments reference (/work/shared/instruments.md):
- SRS: total = sum of the four 0-10 lines; 9.1 + 8.4 + 6.0 + 7.5 = 31.0, each line its own component.
- WAI-SR: Seldom 1 ... Always 5; Task = items 1, 2, 10, 12; Bond = 3, 5, 7, 9; Goal = 4, 6, 8, 11.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from alliance_fhir._ids import IDENTIFIER_SYSTEM
from alliance_fhir.errors import ScoringError
from alliance_fhir.instruments.catalog import load_catalog
from alliance_fhir.scoring.engine import score_response
from alliance_fhir.scoring.observations import build_observation, observation_identifier_for

ROOT = Path(__file__).resolve().parents[2]
EPIC_SRS = "Questionnaire/example-epic-srs-9990000"  # the example map's invented Epic-style id (form-maps/examples/)
OEMR_WAI = "http://example.org/openemr-like/Questionnaire/example-wai-sr"
LABELS = ["Seldom", "Sometimes", "Fairly often", "Very often", "Always"]


def epic_srs(lines: tuple[Any, Any, Any, Any], *, rid: str = "eQR.1", key: str = "valueDecimal") -> dict[str, Any]:
    """An Epic-style response: Epic Questionnaire id and numeric linkIds (9990001-4), one line per item."""
    return {
        "resourceType": "QuestionnaireResponse",
        "id": rid,
        "questionnaire": EPIC_SRS,
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "authored": "2026-11-01T10:00:00Z",
        "item": [{"linkId": str(9990000 + n), "answer": [{key: v}]} for n, v in enumerate(lines, start=1)],
    }


def openemr_wai(anchors: list[int], *, rid: str = "oemr-7") -> dict[str, Any]:
    """An OpenEMR-style response: the form's own canonical and linkIds, answers as labels, under a header group."""
    items = [{"linkId": f"wai_q{n:02d}", "answer": [{"valueString": LABELS[a - 1]}]} for n, a in enumerate(anchors, 1)]
    return {
        "resourceType": "QuestionnaireResponse",
        "id": rid,
        "questionnaire": OEMR_WAI,
        "status": "completed",
        "subject": {"reference": "Patient/p2"},
        "authored": "2026-11-03T09:00:00Z",
        "item": [{"linkId": "wai_header", "item": items}],
    }


def test_an_epic_like_srs_scores_31_with_its_four_lines(vendor_catalog):
    result = score_response(epic_srs((9.1, 8.4, 6.0, 7.5)), vendor_catalog)
    assert result.instrument_id == "srs"
    assert [(s.scale.id, str(s.value)) for s in result.scores] == [
        ("total", "31.0"),
        ("relationship", "9.1"),
        ("goals", "8.4"),
        ("approach", "6.0"),
        ("overall", "7.5"),
    ]


def test_a_vendor_line_given_as_a_plain_decimal_string_is_read_as_that_number(vendor_catalog):
    result = score_response(epic_srs(("9.1", "8.4", "6.0", "7.5"), key="valueString"), vendor_catalog)
    assert str(result.total.value) == "31.0"


def test_the_vendor_observation_equals_our_forms_but_for_derived_from(vendor_catalog, make_response):
    """Same answers through our own SRS form and through the Epic-like one, same response id: the
    Observations are equal but for derivedFrom, which names each its own response.

    The identifier is uuid5 of the response's identity (``QuestionnaireResponse/<id>``, else its business
    identifier, else a hash of its content) and our instrument's canonical and algorithm version; the
    vendor's Questionnaire id and linkIds play no part, so a mapped response gets a stable identifier."""
    vendor = epic_srs((9.1, 8.4, 6.0, 7.5), rid="shared-id")
    vendor["meta"] = {"versionId": "3"}
    ours = make_response("srs", {1: 9.1, 2: 8.4, 3: 6.0, 4: 7.5}, rid="shared-id")
    from_vendor = build_observation(score_response(vendor, vendor_catalog), vendor)
    from_ours = build_observation(score_response(ours, vendor_catalog), ours)
    assert from_vendor["derivedFrom"] == [{"reference": "QuestionnaireResponse/shared-id/_history/3"}]
    assert from_ours["derivedFrom"] == [{"reference": "QuestionnaireResponse/shared-id"}]
    assert {k: v for k, v in from_vendor.items() if k != "derivedFrom"} == {
        k: v for k, v in from_ours.items() if k != "derivedFrom"
    }
    srs = vendor_catalog.get("srs").mapping
    assert from_vendor["identifier"] == [
        {"system": IDENTIFIER_SYSTEM, "value": observation_identifier_for({"id": "shared-id"}, srs)}
    ]


def test_a_vendor_response_keeps_its_identifier_across_runs_and_versions(vendor_catalog):
    first = epic_srs((9.1, 8.4, 6.0, 7.5))
    amended = {**epic_srs((9.1, 8.4, 6.0, 8.0)), "status": "amended", "meta": {"versionId": "2"}}
    ids = [build_observation(score_response(r, vendor_catalog), r)["identifier"][0]["value"] for r in (first, amended)]
    assert ids[0] == ids[1]


def test_an_openemr_like_wai_sr_with_labels_scores_the_hand_computed_subscales(vendor_catalog):
    # items 1..12: Always, Very often, Fairly often, Sometimes, Seldom, Always, Very often, Fairly often,
    #              Sometimes, Seldom, Always, Very often -> 5 4 3 2 1 5 4 3 2 1 5 4
    # Task 1,2,10,12 = 5+4+1+4 = 14; Bond 3,5,7,9 = 3+1+4+2 = 10; Goal 4,6,8,11 = 2+5+3+5 = 15; total 39
    response = openemr_wai([5, 4, 3, 2, 1, 5, 4, 3, 2, 1, 5, 4])
    response["item"][0]["item"][2]["answer"] = [{"valueString": "  fairly   OFTEN "}]  # labels compare folded
    result = score_response(response, vendor_catalog)
    assert {s.scale.id: int(s.value) for s in result.scores} == {"total": 39, "task": 14, "bond": 10, "goal": 15}


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"valueString": "7,5"}, "valueString is not a plain decimal number such as 7.5"),
        ({"valueDecimal": 10.4}, "valueDecimal is out of the vendor range 0-10"),
        ({"valueInteger": 7}, "valueInteger given; the map takes valueDecimal or valueString"),
        ({"valueDecimal": 7.25}, "valueDecimal converts to more than 1 decimal place(s)"),
    ],
)
def test_a_bad_vendor_line_fails_with_one_line_naming_the_resource_and_item(vendor_catalog, answer, reason):
    response = epic_srs((9.1, 8.4, 6.0, 7.5))
    response["item"][2]["answer"] = [answer]
    with pytest.raises(ScoringError) as caught:
        score_response(response, vendor_catalog)
    message = str(caught.value)
    assert "\n" not in message
    assert message == (
        f"QuestionnaireResponse/eQR.1: item '9990003': {reason} (form map 'epic-like-srs' -> srs item 3)"
    )


def test_an_unmapped_label_fails_without_repeating_it(vendor_catalog):
    response = openemr_wai([3] * 12)
    response["item"][0]["item"][4]["answer"] = [{"valueString": "Mostly (private note)"}]
    with pytest.raises(ScoringError) as caught:
        score_response(response, vendor_catalog)
    assert str(caught.value) == (
        "QuestionnaireResponse/oemr-7: item 'wai_q05': the valueString is not among the map's labels "
        "(form map 'openemr-like-wai-sr' -> wai-sr item 5)"
    )
    assert "private" not in str(caught.value)


def test_an_item_the_map_does_not_know_fails(vendor_catalog):
    response = epic_srs((9.1, 8.4, 6.0, 7.5))
    response["item"].append({"linkId": "1234567", "answer": [{"valueString": "x"}]})
    with pytest.raises(ScoringError, match=r"item '1234567': unknown linkId \(not in form map 'epic-like-srs'\)"):
        score_response(response, vendor_catalog)


def test_an_unanswered_vendor_item_follows_our_missing_data_rule(vendor_catalog):
    response = epic_srs((9.1, 8.4, 6.0, 7.5))
    response["item"][3]["answer"] = []
    with pytest.raises(ScoringError, match="too many missing answers for total: unanswered item"):
        score_response(response, vendor_catalog)


def test_a_contained_vendor_questionnaire_is_matched_by_identifier(tmp_path):
    doc = json.loads((ROOT / "form-maps" / "examples" / "epic-like-srs.json").read_text())
    doc.update(form_map="by-id", example=False)
    doc["vendor_questionnaire"] = {"identifiers": [{"system": "urn:oid:1.2.840.999", "value": "SRS-7"}]}
    (tmp_path / "form-maps").mkdir()
    (tmp_path / "form-maps" / "by-id.json").write_text(json.dumps(doc))
    with_map = load_catalog([tmp_path])
    assert with_map.problems == []
    response = epic_srs((9.1, 8.4, 6.0, 7.5))
    response["questionnaire"] = "#q"
    response["contained"] = [
        {
            "resourceType": "Questionnaire",
            "id": "q",
            "status": "active",
            "identifier": [{"system": "urn:oid:1.2.840.999", "value": "SRS-7"}],
        }
    ]
    assert str(score_response(response, with_map).total.value) == "31.0"


def test_a_vendor_response_that_is_not_completed_is_refused_as_ours_would_be(vendor_catalog):
    response = {**epic_srs((9.1, 8.4, 6.0, 7.5)), "status": "in-progress"}
    with pytest.raises(ScoringError, match="status 'in-progress' is not scorable"):
        score_response(response, vendor_catalog)
