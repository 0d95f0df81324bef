"""Every kind of bad input ends in one precise line naming the resource, the item and the reason."""

from __future__ import annotations

import copy

import pytest

from alliance_fhir import ScoringError, score_response

from ..conftest import CS, all_items


@pytest.fixture
def wai(make_response):
    return make_response("wai-sr", all_items(12, 3), rid="bad-1")


def error_of(response, catalog) -> ScoringError:  # noqa: ANN001
    with pytest.raises(ScoringError) as info:
        score_response(response, catalog)
    message = str(info.value)
    assert "\n" not in message
    return info.value


def test_not_a_json_object(catalog):
    assert "expected a JSON object" in str(error_of(["x"], catalog))


def test_wrong_resource_type(catalog):
    err = error_of({"resourceType": "Patient", "id": "p1"}, catalog)
    assert str(err).startswith("Patient/p1: not a QuestionnaireResponse")


@pytest.mark.parametrize("status", ["in-progress", "stopped", "entered-in-error"])
def test_unscorable_status(catalog, wai, status):
    wai["status"] = status
    assert f"status '{status}' is not scorable" in str(error_of(wai, catalog))


def test_invalid_status_code(catalog, wai):
    wai["status"] = "done"
    assert "'done' is not a QuestionnaireResponse status" in str(error_of(wai, catalog))


def test_unknown_questionnaire(catalog, wai):
    wai["questionnaire"] = "http://example.org/Questionnaire/phq-9|1"
    err = error_of(wai, catalog)
    assert str(err) == "QuestionnaireResponse/bad-1: unknown Questionnaire 'http://example.org/Questionnaire/phq-9'"


def test_mismatched_version(catalog, wai):
    wai["questionnaire"] = wai["questionnaire"].replace("|1.0.0", "|9.9")
    assert "unknown version '9.9'" in str(error_of(wai, catalog))
    assert "known: 1.0.0" in str(error_of(wai, catalog))


def test_unversioned_canonical_uses_latest_with_a_warning(catalog, make_response):
    result = score_response(make_response("wai-sr", all_items(12, 3), version=None), catalog)
    assert result.total.value == 36
    assert "no version" in result.warnings[0] and "1.0.0" in result.warnings[0]


def test_missing_questionnaire(catalog, wai):
    del wai["questionnaire"]
    assert "no questionnaire canonical" in str(error_of(wai, catalog))


def test_unknown_link_id(catalog, wai):
    wai["item"].append({"linkId": "13", "answer": [{"valueInteger": 3}]})
    err = error_of(wai, catalog)
    assert err.link_id == "13" and "unknown linkId" in err.reason
    assert str(err).startswith("QuestionnaireResponse/bad-1: item '13': unknown linkId")


def test_duplicate_item(catalog, wai):
    wai["item"].append(copy.deepcopy(wai["item"][0]))
    err = error_of(wai, catalog)
    assert err.link_id == "1" and "duplicate item" in err.reason


def test_duplicate_answers(catalog, wai):
    wai["item"][4]["answer"].append({"valueInteger": 4})
    err = error_of(wai, catalog)
    assert err.link_id == "5" and "duplicate answers (2 given" in err.reason


def test_out_of_range_integer(catalog, wai):
    wai["item"][1]["answer"] = [{"valueInteger": 6}]
    err = error_of(wai, catalog)
    assert err.link_id == "2" and err.reason == "valueInteger is out of range (answer values: 1, 2, 3, 4, 5)"


def test_unknown_code(catalog, wai):
    wai["item"][2]["answer"] = [{"valueCoding": {"system": CS, "code": "never"}}]
    err = error_of(wai, catalog)
    assert err.link_id == "3" and "is not an answer option of this item" in err.reason
    assert "never" not in str(err)  # the answer itself is never repeated


def test_code_from_another_system(catalog, wai):
    wai["item"][2]["answer"] = [{"valueCoding": {"system": "http://loinc.org", "code": "wai-sr-always"}}]
    assert error_of(wai, catalog).link_id == "3"


def test_code_without_system_matches_when_unambiguous(catalog, wai):
    wai["item"][2]["answer"] = [{"valueCoding": {"code": "wai-sr-always"}}]
    assert score_response(wai, catalog).total.value == 38  # 11 x 3 + 5


@pytest.mark.parametrize(
    "answer, fragment",
    [
        ({"valueString": "often"}, "wrong type: valueString"),
        ({"valueBoolean": True}, "wrong type: valueBoolean"),
        ({"valueInteger": "3"}, "wrong type"),
        ({"valueInteger": True}, "wrong type"),
        ({"valueInteger": 3.5}, "wrong type"),
        ({}, "answer has no value"),
    ],
)
def test_wrong_type(catalog, wai, answer, fragment):
    wai["item"][6]["answer"] = [answer]
    err = error_of(wai, catalog)
    assert err.link_id == "7" and fragment in err.reason


def test_vas_coding_is_wrong_type(catalog, make_response):
    response = make_response("srs", {1: 9, 2: 9, 3: 9, 4: 9})
    response["item"][0]["answer"] = [{"valueCoding": {"code": "9"}}]
    assert "expected valueDecimal" in error_of(response, catalog).reason


def test_weight_that_disagrees_with_the_key_is_refused(catalog, wai):
    ordinal = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
    coding = {"system": CS, "code": "wai-sr-always", "extension": [{"url": ordinal, "valueDecimal": 1}]}
    wai["item"][0]["answer"] = [{"valueCoding": coding}]
    assert "carries a weight that differs from the scoring key's" in error_of(wai, catalog).reason


def test_weight_as_lhc_forms_exports_it_is_accepted(catalog, wai):
    """LHC-Forms copies each answer's score onto valueCoding as ordinalValue."""
    ordinal = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
    coding = {
        "system": CS,
        "code": "wai-sr-always",
        "display": "Always",
        "extension": [{"url": ordinal, "valueDecimal": 5}],
    }
    wai["item"][0]["answer"] = [{"valueCoding": coding}]
    assert score_response(wai, catalog).total.value == 38


def test_malformed_item_array(catalog, wai):
    wai["item"] = {"linkId": "1"}
    assert "expected a JSON array" in str(error_of(wai, catalog))


def test_item_without_link_id(catalog, wai):
    del wai["item"][0]["linkId"]
    assert "an item has no linkId" in str(error_of(wai, catalog))


def test_resource_without_id_is_named_by_type(catalog, wai):
    del wai["id"]
    wai["status"] = "in-progress"
    assert str(error_of(wai, catalog)).startswith("QuestionnaireResponse (no id): ")


def test_stored_total_is_recomputed_not_trusted(catalog, wai):
    wai["item"].append({"linkId": "total", "answer": [{"valueDecimal": 99}]})
    result = score_response(wai, catalog)
    assert result.total.value == 36
    assert "the stored total differs from the re-computed one; the stored value is ignored" in result.warnings


def test_unanswered_item_counts_as_missing(catalog, wai):
    wai["item"][0]["answer"] = []
    wai["item"][1].pop("answer")
    result = score_response(wai, catalog)
    # items 1 and 2 unanswered: 10 x 3 = 30 over 10 -> 3 x 12 = 36.0 (prorated)
    assert result.total.prorated and result.total.value == 36


# Issue 23, case 19: every list-valued element (item, answer, extension, at every level) follows one
# rule: absent is empty, an array is read, anything else is refused with the element and the item.
def _numeric(wai):  # noqa: ANN001, ANN202
    return wai["item"][0]["answer"][0]


def _coded(wai):  # noqa: ANN001, ANN202
    wai["item"][0]["answer"] = [{"valueCoding": {"system": CS, "code": "wai-sr-always"}}]
    return wai["item"][0]["answer"][0]


NOT_ARRAYS = {
    "response extension": (lambda w: w, "extension", "extension", None),
    "item extension": (lambda w: w["item"][0], "extension", "item.extension", "1"),
    "answer extension, integer answer": (_numeric, "extension", "answer.extension", "1"),
    "answer extension, coded answer": (_coded, "extension", "answer.extension", "1"),
    "valueCoding extension": (lambda w: _coded(w)["valueCoding"], "extension", "valueCoding.extension", "1"),
    "response item": (lambda w: w, "item", "item", None),
    "item answer": (lambda w: w["item"][0], "answer", "answer", "1"),
    "nested item": (lambda w: w["item"][0], "item", "item", "1"),
    "answer item": (_numeric, "item", "answer.item", "1"),
}


@pytest.mark.parametrize("value", [{"url": "http://example.org/x", "valueString": "x"}, "x", 3])
@pytest.mark.parametrize("where", list(NOT_ARRAYS))
def test_a_list_valued_element_that_is_not_an_array_is_refused_the_same_way_everywhere(catalog, wai, where, value):
    owner, key, name, link = NOT_ARRAYS[where]
    owner(wai)[key] = value
    err = error_of(wai, catalog)
    assert err.link_id == link
    assert err.reason.startswith(f"{name} is malformed: expected a JSON array, found ")


@pytest.mark.parametrize("where", ["response extension", "item extension", "answer extension, integer answer"])
def test_an_extension_array_must_hold_objects(catalog, wai, where):
    owner, _, name, link = NOT_ARRAYS[where]
    owner(wai)["extension"] = ["x"]
    err = error_of(wai, catalog)
    assert (err.link_id, err.reason) == (link, f"{name} is malformed: expected a JSON array of objects")


def test_well_formed_extensions_everywhere_are_accepted(catalog, wai):
    ext = [{"url": "http://example.org/note", "valueString": "fine"}]
    wai["extension"] = wai["item"][0]["extension"] = _numeric(wai)["extension"] = ext
    assert score_response(wai, catalog).total.value == 36
