"""Score Observations follow the team's synthesis (peers.md 2.4) and validate as FHIR."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alliance_fhir import build_observation, observation_identifier, score_response, validate_resource
from alliance_fhir._refs import References
from alliance_fhir.errors import FhirValidationError
from alliance_fhir.scoring.observations import observation_json

from ..conftest import CS
from ..shipped import shipped_ids

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
UCUM = "http://unitsofmeasure.org"


def example(instrument: str, kind: str) -> dict:
    return json.loads((EXAMPLES / instrument / f"{kind}.json").read_text())


def observe(catalog, response):  # noqa: ANN001, ANN201
    return build_observation(score_response(response, catalog), response)


def test_wai_sr_observation(catalog):
    response = example("wai-sr", "complete")
    obs = observe(catalog, response)
    assert obs["status"] == "final"
    assert obs["category"][0]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
        "code": "survey",
        "display": "Survey",
    }
    assert obs["code"]["coding"][0] == {"system": CS, "code": "wai-sr-total", "display": "WAI-SR total score"}
    assert obs["valueQuantity"] == {"value": 46, "unit": "{score}", "system": UCUM, "code": "{score}"}
    components = {c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"] for c in obs["component"]}
    assert components == {"wai-sr-task": 12, "wai-sr-bond": 19, "wai-sr-goal": 15}
    assert obs["subject"] == response["subject"] and obs["encounter"] == response["encounter"]
    assert obs["performer"] == [response["author"]]
    assert obs["effectiveDateTime"] == response["authored"]
    assert obs["derivedFrom"] == [{"reference": "QuestionnaireResponse/example-wai-sr-complete/_history/1"}]
    assert obs["focus"] == [{"reference": "PractitionerRole/example-therapist"}]
    assert obs["method"]["coding"][0]["version"] == "1.0.0"
    assert "WAI-SR scoring algorithm 1.0.0" in obs["method"]["text"]
    assert obs["extension"] == [
        {
            "url": "http://hl7.org/fhir/StructureDefinition/workflow-instantiatesCanonical",
            "valueCanonical": "http://alliance-fhir.org/fhir/Questionnaire/wai-sr|1.0.0",
        }
    ]
    assert obs["referenceRange"][0]["low"]["value"] == 12 and obs["referenceRange"][0]["high"]["value"] == 60
    assert "interpretation" not in obs  # WAI-SR has no published cutoff


def test_snomed_is_a_second_coding_where_listed(catalog):
    obs = observe(catalog, example("srs", "complete"))
    assert obs["code"]["coding"][1] == {
        "system": "http://snomed.info/sct",
        "code": "720482000",
        "display": "Session Rating Scale score",
    }


def test_cutoff_becomes_an_interpretation_and_says_which_rule(catalog):
    obs = observe(catalog, example("srs", "complete"))  # 8.5 + 9.1 + 7.6 + 9.0 = 34.2
    assert obs["valueQuantity"]["value"] == 34.2
    interpretation = obs["interpretation"][0]
    assert interpretation["coding"][0]["code"] == "L"
    assert "total < 36" in interpretation["text"]
    assert any("boundary" in n["text"] or "36 or below" in n["text"] for n in obs["note"])
    cutoff_range = obs["referenceRange"][1]
    assert cutoff_range["low"]["value"] == 36 and "C2" in cutoff_range["text"]


def test_amended_response_gives_an_amended_observation_with_the_same_identity(catalog):
    complete = example("wai-sr", "complete")
    amended = json.loads(json.dumps(complete))
    amended.update(status="amended", meta={"versionId": "2"})
    amended["item"][9]["answer"] = [{"valueCoding": {"system": CS, "code": "wai-sr-fairly-often"}}]
    first, second = observe(catalog, complete), observe(catalog, amended)
    assert second["status"] == "amended" and second["valueQuantity"]["value"] == 47
    assert first["identifier"] == second["identifier"]
    assert second["derivedFrom"] == [{"reference": "QuestionnaireResponse/example-wai-sr-complete/_history/2"}]


def test_identifier_is_deterministic_and_changes_with_the_algorithm(catalog):
    response = example("haq-ii", "complete")
    result = score_response(response, catalog)
    assert observation_identifier(response, result) == observation_identifier(json.loads(json.dumps(response)), result)
    other_response = dict(response, id="another")
    assert observation_identifier(other_response, result) != observation_identifier(response, result)
    newer = type(result)(**{f: getattr(result, f) for f in result.__slots__})  # same result ...
    object.__setattr__(newer, "mapping", result.mapping.model_copy(update={"algorithm_version": "1.1.0"}))
    assert observation_identifier(response, newer) != observation_identifier(response, result)


def test_prorating_is_stated_in_the_observation(catalog):
    obs = observe(catalog, example("wai-sr", "incomplete"))
    assert obs["valueQuantity"]["value"] == 46.8
    notes = " ".join(n["text"] for n in obs["note"])
    assert "prorated" in notes and "project decision" in notes and "task not reported" in notes


def test_unconfirmed_labels_are_stated(catalog):
    obs = observe(catalog, example("haq-ii", "complete"))
    assert any("labels-unconfirmed" in n["text"] for n in obs["note"])
    assert "project decision" in obs["method"]["text"]


@pytest.mark.parametrize("instrument", shipped_ids())
@pytest.mark.parametrize("kind", ["complete", "amended"])
def test_observations_validate_as_fhir(catalog, instrument, kind):
    validate_resource(observe(catalog, example(instrument, kind)))


def test_validation_failure_is_our_error():
    with pytest.raises(FhirValidationError, match="Observation is not valid FHIR"):
        validate_resource({"resourceType": "Observation", "code": {"text": "x"}})  # status missing


def test_response_without_id_still_gets_a_stable_identifier(catalog):
    response = example("srs", "complete")
    del response["id"]
    a, b = observe(catalog, response), observe(catalog, json.loads(json.dumps(response)))
    assert a["identifier"] == b["identifier"]
    assert "reference" not in a["derivedFrom"][0]


def test_editing_one_observation_never_changes_the_next(catalog):
    """Prepared parts are copied into each Observation, never shared (sync adds meta, retraction edits status)."""
    response = example("srs", "complete")
    first = observe(catalog, response)

    def scribble(node):  # noqa: ANN001, ANN202
        if isinstance(node, dict):
            for key in list(node):
                scribble(node[key])
            node["scribbled"] = True
        elif isinstance(node, list):
            for child in node:
                scribble(child)
            node.append("scribbled")

    scribble(first)
    assert "scribbled" not in json.dumps(observe(catalog, response))


EHR = "https://ehr.example.org/fhir"
BESIDE_THE_EHR = References.between(EHR, "https://results.example.org/fhir")


def test_an_observation_for_a_results_store_names_the_ehrs_resources_absolute_on_it(catalog):
    response = example("wai-sr", "complete")
    result = score_response(response, catalog)
    obs = build_observation(result, response, references=BESIDE_THE_EHR)
    assert obs["subject"] == {"reference": "https://ehr.example.org/fhir/Patient/example-client"}
    assert obs["encounter"] == {"reference": "https://ehr.example.org/fhir/Encounter/example-session-3"}
    assert obs["performer"] == [{"reference": "https://ehr.example.org/fhir/Patient/example-client"}]
    assert obs["focus"] == [{"reference": "https://ehr.example.org/fhir/PractitionerRole/example-therapist"}]
    assert obs["derivedFrom"] == [
        {"reference": "https://ehr.example.org/fhir/QuestionnaireResponse/example-wai-sr-complete/_history/1"}
    ]
    # the same score, the same identity: only where the references point changed
    one_server = build_observation(result, response)
    assert obs["identifier"] == one_server["identifier"] == [observation_identifier(response, result)]
    assert obs["valueQuantity"] == one_server["valueQuantity"]
    assert response["subject"] == {"reference": "Patient/example-client"}  # the response is not edited
    validate_resource(obs)


def test_the_fast_serialiser_writes_the_same_absolute_references(catalog):
    response = example("srs", "complete")
    result = score_response(response, catalog)
    fast = observation_json(result, response, references=BESIDE_THE_EHR)
    assert json.loads(fast) == build_observation(result, response, references=BESIDE_THE_EHR)
    assert json.loads(fast)["subject"]["reference"].startswith("https://ehr.example.org/fhir/Patient/")
