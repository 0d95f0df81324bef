"""Our content on a real HAPI FHIR server: accepted, validated, idempotent to write."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from alliance_fhir import build_observation, content_resources, load_catalog, score_response
from alliance_fhir.server.publish import publish_resources

from .helpers import client, errors, unique, validate

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"
CATALOG = load_catalog()
QUESTIONNAIRES = [r for r in content_resources(CATALOG) if r["resourceType"] == "Questionnaire"]


@pytest.fixture(scope="module")
def published(fhir_server: str) -> str:
    with client(fhir_server) as c:
        results = publish_resources(c, content_resources(CATALOG))
    assert [r for r in results if r.action == "failed"] == []
    return fhir_server


def test_publish_is_idempotent(published):
    with client(published) as c:
        again = publish_resources(c, content_resources(CATALOG))
        assert {r.action for r in again} == {"unchanged"}
        for q in QUESTIONNAIRES:
            assert len(list(c.search("Questionnaire", {"url": q["url"], "version": q["version"]}))) == 1


@pytest.mark.parametrize("questionnaire", QUESTIONNAIRES, ids=lambda q: q["id"])
def test_questionnaire_put_by_id_and_validates(fhir_server, questionnaire):
    with client(fhir_server) as c:
        copy_ = dict(questionnaire, id=unique("q"), url=questionnaire["url"] + "-put-test")
        c.request("PUT", f"Questionnaire/{copy_['id']}", json=copy_)
        assert c.read("Questionnaire", copy_["id"])["version"] == questionnaire["version"]
        assert errors(validate(c, questionnaire)) == []


def test_codesystem_validates(fhir_server):
    codesystem = next(r for r in content_resources(CATALOG) if r["resourceType"] == "CodeSystem")
    with client(fhir_server) as c:
        assert errors(validate(c, codesystem)) == []


@pytest.mark.parametrize(
    "path",
    sorted(p for p in EXAMPLES.glob("*/*.json")),
    ids=lambda p: f"{p.parent.name}-{p.stem}",
)
def test_example_responses_validate_against_their_questionnaire(published, path):
    response = json.loads(path.read_text())
    response.pop("meta", None)
    with client(published) as c:
        assert errors(validate(c, response)) == []


def test_what_hapi_catches_in_a_bad_response(published):
    """HAPI reports an unknown linkId and an answer code outside the options; our scorer catches both too."""
    base = json.loads((EXAMPLES / "wai-sr" / "complete.json").read_text())
    base.pop("meta")
    wrong_link = copy.deepcopy(base)
    wrong_link["item"][0]["linkId"] = "99"
    wrong_code = copy.deepcopy(base)
    wrong_code["item"][1]["answer"] = [
        {"valueCoding": {"system": base["item"][1]["answer"][0]["valueCoding"]["system"], "code": "never"}}
    ]
    with client(published) as c:
        assert errors(validate(c, wrong_link)), "HAPI should report the unknown linkId"
        assert errors(validate(c, wrong_code)), "HAPI should report the code outside the answer options"
    for bad in (wrong_link, wrong_code):
        with pytest.raises(Exception, match="item"):
            score_response(bad, CATALOG)


def test_vas_out_of_range_is_caught_by_our_scorer(published):
    """Recorded in the closing note: what HAPI's $validate does with a VAS value of 10.5."""
    response = json.loads((EXAMPLES / "srs" / "complete.json").read_text())
    response.pop("meta")
    response["item"][0]["answer"] = [{"valueDecimal": 10.5}]
    with client(published) as c:
        hapi_errors = errors(validate(c, response))
    print(f"HAPI $validate on SRS item 1 = 10.5: {hapi_errors or 'no error'}")
    with pytest.raises(Exception, match="out of range"):
        score_response(response, CATALOG)


@pytest.mark.parametrize("instrument", ["wai-sr", "srs", "haq-ii", "ors"])
def test_score_observation_is_accepted_and_validates(published, instrument):
    response = json.loads((EXAMPLES / instrument / "complete.json").read_text())
    observation = build_observation(score_response(response, CATALOG), response)
    observation.pop("derivedFrom")  # the example response is not on this server
    observation.pop("focus")
    for key in ("subject", "encounter", "performer"):
        observation.pop(key, None)
    with client(published) as c:
        assert errors(validate(c, observation)) == []
        created = c.request("POST", "Observation", json=observation).json()
        assert created["identifier"] == observation["identifier"]


def test_conditional_create_transaction_applied_twice_creates_once(fhir_server):
    ident = unique("tx")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "urn:test", "value": f"{ident}-{n}"}],
                },
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier=urn:test|{ident}-{n}"},
            }
            for n in range(3)
        ],
    }
    with client(fhir_server) as c:
        first = c.transaction(bundle, idempotent=True)
        second = c.transaction(bundle, idempotent=True)
        assert [e["response"]["status"][:3] for e in first["entry"]] == ["201"] * 3
        assert [e["response"]["status"][:3] for e in second["entry"]] == ["200"] * 3
        for n in range(3):
            assert len(list(c.search("Patient", {"identifier": f"urn:test|{ident}-{n}"}))) == 1
