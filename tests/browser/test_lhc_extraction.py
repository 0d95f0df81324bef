"""SDC observation-based extraction by a real form filler, compared with our scorer's Observations.

LHC-Forms 40.x extracts Observations itself: ``getFormFHIRData('QuestionnaireResponse', 'R4', el,
{extract: true})`` returns the QuestionnaireResponse and a transaction Bundle. It reads our
Questionnaires' SDC 4 metadata (``docs/extraction.md``): ``observationExtract`` (``true`` on the
total, ``component`` on the WAI-SR subscales nested under it), the categories, the unit and
``observationExtractEntry.ifNoneExist``. For every instrument the Observation it extracts from a
filled form must equal ours, built by :func:`build_observation` from the very response LHC-Forms
exported, in every element both produce; the elements only one side produces are listed here,
so a change on either side shows up as a failing test. The record is in docs/extraction.md.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from alliance_fhir import build_observation, score_response

from .conftest import CONTAINER, LhcPage
from .test_lhc_forms import (
    API_SETS,
    UI_SETS,
    AnswerSet,
    _fill_by_ui,
    _questionnaire,
    _response_for,
    _score_items,
    _with_our_canonical,
    catalog,
)

pytestmark = pytest.mark.browser

SUBJECT = {"resourceType": "Patient", "id": "extraction-test"}
# Elements both sides write, compared for equality (SDC's table of what extraction fills in).
SHARED = {"status", "code", "category", "subject", "effectiveDateTime", "derivedFrom", "valueQuantity", "component"}
# What LHC-Forms adds: `issued` (= authored, per SDC) and a meta.tag naming its version.
LHC_ONLY = {"issued", "meta"}
# What only our scorer writes, beyond SDC observation-based extraction (see docs/extraction.md):
# the deterministic identifier, the Questionnaire canonical, method (algorithm version) and the
# instrument's reference ranges; interpretation/note when a cutoff or a project rule applies; and the
# components of scales without a score item in the Questionnaire (the SRS-family line values: a line
# is an answer, not a score item, so SDC extraction has nothing to make a component of).
OURS_ONLY = {"identifier", "extension", "method", "referenceRange"}


def _extract(lhc: LhcPage) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """LHC-Forms' export with extraction: the QuestionnaireResponse and the Bundle's entries."""
    result = lhc.page.evaluate(
        "([id, subject]) => LForms.Util.getFormFHIRData('QuestionnaireResponse', 'R4', id, {extract: true, subject: subject})",
        [CONTAINER, SUBJECT],
    )
    assert isinstance(result, list) and result[0]["resourceType"] == "QuestionnaireResponse", result
    if len(result) == 1:
        return result[0], []
    qr, bundle = result
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    return qr, bundle["entry"]


def _ours(qr: dict[str, Any], instrument_id: str) -> dict[str, Any]:
    """Our Observation for the response LHC-Forms exported (same id, subject and authored)."""
    response = _with_our_canonical(qr, instrument_id)
    return build_observation(score_response(response, catalog()), response)


def _expected_request(qr: dict[str, Any], instrument_id: str) -> dict[str, str]:
    code = catalog().get(instrument_id).mapping.total.codes[0]
    return {
        "method": "POST",
        "url": "Observation",
        "ifNoneExist": f"derived-from=QuestionnaireResponse/{qr['id']}&code={code.system}|{code.code}",
    }


def _ours_only(observation: dict[str, Any], instrument_id: str) -> set[str]:
    extra = set(OURS_ONLY)
    extra |= {key for key in ("interpretation", "note") if key in observation}
    if "component" in observation and not _component_cores(observation, instrument_id):
        extra.add("component")  # only line values (SRS family): no score item to extract them from
    return extra


def _component_cores(observation: dict[str, Any], instrument_id: str) -> list[dict[str, Any]]:
    """Our components as SDC extraction writes them (code and value; ours add referenceRange/interpretation),
    for the scales the Questionnaire has a score item for (the SRS-family line values have none)."""
    mapping = catalog().get(instrument_id).mapping
    extracted = {s.codes[0].code for s in mapping.subscales if s.questionnaire_item is not None}
    return [
        {"code": c["code"], "valueQuantity": c["valueQuantity"]}
        for c in observation.get("component", [])
        if c["code"]["coding"][0]["code"] in extracted
    ]


@pytest.mark.parametrize("answers", API_SETS + UI_SETS, ids=lambda s: s.id)
def test_extracted_observation_equals_ours(lhc: LhcPage, answers: AnswerSet) -> None:
    lhc.add_form(_questionnaire(answers.instrument), _response_for(answers))
    lhc.stable_values(list(_score_items(answers.instrument).values()))
    qr, entries = _extract(lhc)

    # One Observation per response: the subscales are its components, not Observations of their own.
    assert len(entries) == 1, [e["resource"]["code"] for e in entries]
    (entry,) = entries
    theirs = entry["resource"]
    ours = _ours(qr, answers.instrument)
    assert entry["request"] == _expected_request(qr, answers.instrument)

    assert set(theirs) - set(ours) == LHC_ONLY
    assert set(ours) - set(theirs) == _ours_only(ours, answers.instrument)
    extracted = _component_cores(ours, answers.instrument)
    shared = {key: ours[key] for key in SHARED if key in ours and (key != "component" or extracted)}
    assert set(shared) == SHARED - ({"component"} if not extracted else set())
    for key, value in shared.items():
        mine = extracted if key == "component" else value
        assert theirs[key] == mine, f"{key}: LHC-Forms extracted {theirs[key]!r}, our scorer wrote {mine!r}"
    # The values are the hand-computed scores of the answer set (so equality is not equality of two wrong numbers).
    assert Decimal(repr(theirs["valueQuantity"]["value"])) == answers.expected["total"]
    assert theirs["issued"] == theirs["effectiveDateTime"] == qr["authored"]
    lhc.assert_clean()


def test_incomplete_wai_sr_extracts_a_total_without_value(lhc: LhcPage) -> None:
    """11 of 12 items: the form has no total, so LHC-Forms extracts the total Observation with
    components only (Bond, Goal) and no value; our scorer prorates the total to 38.2."""
    lhc.add_form(_questionnaire("wai-sr"))
    answers = dict(UI_SETS[0].answers)
    del answers["12"]
    _fill_by_ui(lhc, AnswerSet("partial", "wai-sr", answers, {}))
    lhc.stable_values(["bond", "goal"])
    qr, entries = _extract(lhc)
    (entry,) = entries
    theirs, ours = entry["resource"], _ours(qr, "wai-sr")
    assert "valueQuantity" not in theirs and "dataAbsentReason" not in theirs
    assert ours["valueQuantity"]["value"] == 38.2  # 35 / 11 x 12, rounded half-up (project rule)
    assert theirs["component"] == _component_cores(ours, "wai-sr")
    assert [c["code"]["coding"][0]["code"] for c in theirs["component"]] == ["wai-sr-bond", "wai-sr-goal"]
    # A valid R4 response cannot carry the subscales without the total's answer to nest them in.
    assert not [i for i in qr["item"] if i["linkId"] in ("total", "task", "bond", "goal")]
    lhc.assert_clean()


def test_an_unanswered_vas_form_extracts_nothing(lhc: LhcPage) -> None:
    """No total, no subscales: nothing to extract (and our scorer refuses an incomplete VAS form)."""
    lhc.add_form(_questionnaire("srs"))
    qr, entries = _extract(lhc)
    assert entries == [] and qr["resourceType"] == "QuestionnaireResponse"
    lhc.assert_clean()
