"""Our score Observations on a real HAPI FHIR server: every link the peer survey (section 2.4) asks
for is set and findable by standard search, and a standards-based extraction of the same response
would not write a second Observation.

One client session (Patient, Practitioner, PractitionerRole, Encounter) and a WAI-SR and an SRS
response are posted; each is scored by our code, its Observation (:func:`build_observation`) is
written the way sync writes it (conditional update on our identifier) and then searched for by
``derived-from``, ``focus``, ``performer``, ``encounter``, ``code`` (project and SNOMED),
``component-code``, ``value-quantity`` and more.

What HAPI 8.8 does (recorded in docs/extraction.md): a versioned reference in
``Observation.derivedFrom`` is stored as written (``QuestionnaireResponse/1/_history/1``) but indexed
without its version, so ``derived-from=QuestionnaireResponse/1`` finds it, and so does a search that
names any version of the response, even one that does not exist. HAPI has no ``$extract`` (clinical
reasoning is not part of our harness), so the SDC side is the transaction entry an extractor
builds from our Questionnaire (LHC-Forms builds the same one: tests/browser/test_lhc_extraction.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from alliance_fhir import build_observation, content_resources, load_catalog, score_response
from alliance_fhir._ids import FOCUS_EXTENSION, IDENTIFIER_SYSTEM, PROJECT_CODESYSTEM, UCUM
from alliance_fhir.content.extraction import OBSERVATION_EXTRACT_ENTRY
from alliance_fhir.errors import Conflict
from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.instruments.catalog import walk_items
from alliance_fhir.server.publish import publish_resources

from .helpers import client, errors, unique, validate

pytestmark = pytest.mark.integration
CATALOG = load_catalog()
INSTANTIATES = "http://hl7.org/fhir/StructureDefinition/workflow-instantiatesCanonical"
SNOMED = "http://snomed.info/sct"
# WAI-SR answers (raw values) for items 1..12 and the scores computed by hand:
# total 4+4+5+3+5+3+5+3+5+4+3+4 = 48; Task (1, 2, 10, 12) 4+4+4+4 = 16; Bond (3, 5, 7, 9) 5+5+5+5 = 20;
# Goal (4, 6, 8, 11) 3+3+3+3 = 12.
WAI_SR = {1: 4, 2: 4, 3: 5, 4: 3, 5: 5, 6: 3, 7: 5, 8: 3, 9: 5, 10: 4, 11: 3, 12: 4}
WAI_SR_SCORES = {"total": 48, "task": 16, "bond": 20, "goal": 12}
# SRS lines 8.5 + 9 + 8.2 + 9.9 = 35.6: below the cutoff of 36.
SRS = {1: 8.5, 2: 9.0, 3: 8.2, 4: 9.9}
# Everything this module creates, deleted again at its end (newest first, so nothing is still referred
# to): server-wide runs later in the session (e.g. `signals --server`) must not see these clients.
CREATED: list[str] = []


def ref(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def ids(c: FhirClient, params: dict[str, str]) -> list[str]:
    return sorted(r["id"] for r in c.search("Observation", params))


def create(c: FhirClient, resource: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = c.request("POST", resource["resourceType"], json=resource).json()
    CREATED.append(ref(created))
    return created


def new_session(c: FhirClient) -> dict[str, Any]:
    """A client, a therapist (Practitioner and PractitionerRole) and a session (Encounter), on the server."""
    tag = unique("extraction")
    patient = create(c, {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": tag}]})
    practitioner = create(c, {"resourceType": "Practitioner", "name": [{"family": tag}]})
    role = create(
        c,
        {
            "resourceType": "PractitionerRole",
            "practitioner": {"reference": ref(practitioner)},
            "code": [{"text": "psychotherapist"}],
        },
    )
    encounter = create(
        c,
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": ref(patient)},
            "participant": [{"individual": {"reference": ref(role)}}],
        },
    )
    return {
        "base": str(c.base_url),
        "patient": patient,
        "practitioner": practitioner,
        "role": role,
        "encounter": encounter,
    }


@pytest.fixture(scope="module")
def session(fhir_server: str) -> Iterator[dict[str, Any]]:
    with client(fhir_server) as c:
        publish_resources(c, content_resources(CATALOG))  # the Questionnaires the responses name
        made = {**new_session(c), "base": fhir_server}
    yield made
    with client(fhir_server) as c:
        for reference in reversed(CREATED):
            _delete(c, reference)
    CREATED.clear()


def _delete(c: FhirClient, reference: str, attempts: int = 3) -> None:
    """Clean-up DELETE; HAPI may answer 409 (HAPI-0550 version constraint) while its own
    background work still touches the resource, so a conflict is retried a bounded few times."""
    for attempt in range(1, attempts + 1):
        try:
            c.request("DELETE", reference)
            return
        except Conflict:
            if attempt == attempts:
                raise
            time.sleep(1.0)


def post_response(c: FhirClient, session: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    response = {
        **response,
        "subject": {"reference": ref(session["patient"])},
        "encounter": {"reference": ref(session["encounter"])},
        "author": {"reference": ref(session["patient"])},  # client-rated: the client answered
        "extension": [{"url": FOCUS_EXTENSION, "valueReference": {"reference": ref(session["role"])}}],
    }
    response.pop("id")
    assert errors(validate(c, response)) == []
    return create(c, response)


def write_observation(c: FhirClient, stored_response: dict[str, Any]) -> dict[str, Any]:
    """Score the stored response and write its Observation as sync does (conditional update on our identifier)."""
    observation = build_observation(score_response(stored_response, CATALOG), stored_response)
    assert errors(validate(c, observation)) == []
    identifier = observation["identifier"][0]
    c.conditional_update("Observation", {"identifier": f"{identifier['system']}|{identifier['value']}"}, observation)
    (stored,) = c.search("Observation", {"identifier": f"{identifier['system']}|{identifier['value']}"})
    if ref(stored) not in CREATED:
        CREATED.append(ref(stored))
    return stored  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def wai_sr(session: dict[str, Any], make_response) -> dict[str, Any]:
    """A WAI-SR response as a form filler exports it: the subscales nested in the total's answer."""
    response = make_response("wai-sr", WAI_SR)
    response["item"].append(
        {
            "linkId": "total",
            "answer": [
                {
                    "valueDecimal": 48,
                    "item": [
                        {"linkId": link, "answer": [{"valueDecimal": WAI_SR_SCORES[link]}]}
                        for link in ("task", "bond", "goal")
                    ],
                }
            ],
        }
    )
    with client(session["base"]) as c:
        stored_response = post_response(c, session, response)
        return {"response": stored_response, "observation": write_observation(c, stored_response)}


@pytest.fixture(scope="module")
def srs(session: dict[str, Any], make_response) -> dict[str, Any]:
    with client(session["base"]) as c:
        stored_response = post_response(c, session, make_response("srs", SRS))
        return {"response": stored_response, "observation": write_observation(c, stored_response)}


# ---------------------------------------------------------------- what the Observation says


def test_observation_carries_every_link(session, wai_sr):
    obs, qr = wai_sr["observation"], wai_sr["response"]
    assert qr["meta"]["versionId"] == "1"
    assert obs["derivedFrom"] == [
        {"reference": f"QuestionnaireResponse/{qr['id']}/_history/1"}
    ]  # kept versioned as written
    assert obs["focus"] == [{"reference": ref(session["role"])}]
    assert obs["performer"] == [{"reference": ref(session["patient"])}]
    assert obs["subject"] == {"reference": ref(session["patient"])}
    assert obs["encounter"] == {"reference": ref(session["encounter"])}
    assert obs["effectiveDateTime"] == qr["authored"]
    assert obs["extension"] == [
        {"url": INSTANTIATES, "valueCanonical": "http://alliance-fhir.org/fhir/Questionnaire/wai-sr|1.0.0"}
    ]
    assert obs["valueQuantity"] == {"value": 48, "unit": "{score}", "system": UCUM, "code": "{score}"}
    assert {c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"] for c in obs["component"]} == {
        "wai-sr-task": 16,
        "wai-sr-bond": 20,
        "wai-sr-goal": 12,
    }


# ---------------------------------------------------------------- found by standard search


def test_found_by_derived_from_with_and_without_version(session, wai_sr):
    qr_id, obs_id = wai_sr["response"]["id"], wai_sr["observation"]["id"]
    with client(session["base"]) as c:
        assert ids(c, {"derived-from": f"QuestionnaireResponse/{qr_id}"}) == [obs_id]
        assert ids(c, {"derived-from": f"QuestionnaireResponse/{qr_id}/_history/1"}) == [obs_id]
        # HAPI 8.8 drops the version from the search too: a version that does not exist still matches.
        assert ids(c, {"derived-from": f"QuestionnaireResponse/{qr_id}/_history/99"}) == [obs_id]


def test_found_by_focus_performer_encounter_and_patient(session, wai_sr, srs):
    both = sorted([wai_sr["observation"]["id"], srs["observation"]["id"]])
    with client(session["base"]) as c:
        assert ids(c, {"focus": ref(session["role"])}) == both
        assert ids(c, {"performer": ref(session["patient"])}) == both
        assert ids(c, {"encounter": ref(session["encounter"])}) == both
        assert ids(c, {"patient": ref(session["patient"])}) == both
        # The therapist is the focus, not a performer: a client-rated form names no practitioner there.
        assert ids(c, {"performer": ref(session["role"])}) == []


def test_found_by_project_and_snomed_codes(session, wai_sr, srs):
    patient = ref(session["patient"])
    with client(session["base"]) as c:
        assert ids(c, {"patient": patient, "code": f"{PROJECT_CODESYSTEM}|wai-sr-total"}) == [
            wai_sr["observation"]["id"]
        ]
        assert ids(c, {"patient": patient, "code": f"{PROJECT_CODESYSTEM}|srs-total"}) == [srs["observation"]["id"]]
        assert ids(c, {"patient": patient, "code": f"{SNOMED}|720482000"}) == [srs["observation"]["id"]]
        assert ids(c, {"patient": patient, "category": "survey"}) == sorted(
            [wai_sr["observation"]["id"], srs["observation"]["id"]]
        )
        assert ids(c, {"patient": patient, "category": f"{PROJECT_CODESYSTEM}|therapeutic-alliance"}) == sorted(
            [wai_sr["observation"]["id"], srs["observation"]["id"]]
        )


def test_found_by_component_code_and_value(session, wai_sr, srs):
    patient, obs_id = ref(session["patient"]), wai_sr["observation"]["id"]
    with client(session["base"]) as c:
        for subscale in ("task", "bond", "goal"):
            assert ids(c, {"patient": patient, "component-code": f"{PROJECT_CODESYSTEM}|wai-sr-{subscale}"}) == [obs_id]
        assert ids(
            c, {"patient": patient, "component-code-value-quantity": f"{PROJECT_CODESYSTEM}|wai-sr-bond$20"}
        ) == [obs_id]
        assert (
            ids(c, {"patient": patient, "component-code-value-quantity": f"{PROJECT_CODESYSTEM}|wai-sr-bond$19"}) == []
        )
        # WAI-SR Goal 12; the SRS Observation's four lines (0-10 each) are components too
        assert sorted(ids(c, {"patient": patient, "component-value-quantity": "lt13"})) == sorted(
            [obs_id, srs["observation"]["id"]]
        )
        assert ids(
            c, {"patient": patient, "code": f"{PROJECT_CODESYSTEM}|wai-sr-total", "component-value-quantity": "lt13"}
        ) == [obs_id]


def test_found_by_value_quantity(session, wai_sr, srs):
    patient = ref(session["patient"])
    with client(session["base"]) as c:
        assert ids(c, {"patient": patient, "value-quantity": f"48|{UCUM}|{{score}}"}) == [wai_sr["observation"]["id"]]
        assert ids(c, {"patient": patient, "value-quantity": "35.6"}) == [srs["observation"]["id"]]
        assert ids(c, {"patient": patient, "value-quantity": "lt36"}) == [
            srs["observation"]["id"]
        ]  # below the SRS cutoff
        assert ids(c, {"patient": patient, "code-value-quantity": f"{PROJECT_CODESYSTEM}|srs-total$lt36"}) == [
            srs["observation"]["id"]
        ]


def test_found_by_identifier_and_method(session, wai_sr):
    obs = wai_sr["observation"]
    with client(session["base"]) as c:
        assert ids(c, {"identifier": f"{IDENTIFIER_SYSTEM}|{obs['identifier'][0]['value']}"}) == [obs["id"]]
        method = f"{PROJECT_CODESYSTEM}|wai-sr-scoring"
        assert ids(c, {"patient": ref(session["patient"]), "method": method}) == [obs["id"]]


def test_srs_interpretation_is_searchable_as_written(session, srs):
    obs = srs["observation"]
    assert [c["code"] for c in obs["interpretation"][0]["coding"]] == ["L", "below-cutoff"]
    assert obs["code"]["coding"][1] == {"system": SNOMED, "code": "720482000", "display": "Session Rating Scale score"}


# ---------------------------------------------------------------- the same Observation by SDC extraction


def if_none_exist(questionnaire: dict[str, Any], response: dict[str, Any]) -> str:
    """The total item's observationExtractEntry.ifNoneExist, evaluated for ``response``.

    Our expression is a concatenation of string literals and ``%resource.id``; that subset is
    evaluated here (a FHIRPath engine, LHC-Forms', evaluates the full expression in the browser tests).
    """
    total = next(i for i in walk_items(questionnaire["item"]) if i["linkId"] == "total")
    (entry,) = [e for e in total["extension"] if e["url"] == OBSERVATION_EXTRACT_ENTRY]
    (expression,) = [e["valueString"] for e in entry["extension"] if e["url"] == "ifNoneExist"]
    parts = re.split(r"\s*\+\s*", expression)
    assert all(p == "%resource.id" or re.fullmatch(r"'[^']*'", p) for p in parts), (
        f"use a FHIRPath engine for {expression!r}"
    )
    return "".join(response["id"] if p == "%resource.id" else p[1:-1] for p in parts)


# What observation-based extraction does not write (server fields, and ours beyond SDC; docs/extraction.md).
SDC_CANNOT_WRITE = ("id", "meta", "identifier", "extension", "focus", "method", "referenceRange", "note")


def extracted_entry(instrument: str, response: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """The transaction entry an SDC observation-based extractor makes of our Questionnaire for ``response``."""
    questionnaire = CATALOG.get(instrument).questionnaire
    resource = {k: v for k, v in ours.items() if k not in SDC_CANNOT_WRITE}
    resource["derivedFrom"] = [{"reference": f"QuestionnaireResponse/{response['id']}"}]  # SDC: unversioned
    request = {"method": "POST", "url": "Observation", "ifNoneExist": if_none_exist(questionnaire, response)}
    return {"resource": resource, "request": request}


@pytest.mark.parametrize("instrument", ["wai-sr", "srs"])
def test_sdc_extraction_finds_our_observation_and_writes_nothing(session, wai_sr, srs, instrument):
    written = {"wai-sr": wai_sr, "srs": srs}[instrument]
    response, ours = written["response"], written["observation"]
    entry = extracted_entry(instrument, response, ours)
    code = CATALOG.get(instrument).mapping.total.codes[0]
    assert (
        entry["request"]["ifNoneExist"]
        == f"derived-from=QuestionnaireResponse/{response['id']}&code={code.system}|{code.code}"
    )
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
    with client(session["base"]) as c:
        assert errors(validate(c, entry["resource"])) == []
        result = c.transaction(bundle, idempotent=True)
        (outcome,) = result["entry"]
        assert outcome["response"]["status"].startswith("200")  # matched: nothing created
        assert outcome["response"]["location"].startswith(f"Observation/{ours['id']}/")
        assert ids(c, {"derived-from": f"QuestionnaireResponse/{response['id']}"}) == [ours["id"]]


def test_an_amended_response_is_rescored_by_us_but_not_by_conditional_create(session, make_response):
    """The gap: our conditional update amends the Observation; SDC's ifNoneExist sees it exists and stops."""
    with client(session["base"]) as c:
        session = new_session(c)  # its own client and session: the searches above count exactly
        response = post_response(c, session, make_response("srs", SRS))
        first = write_observation(c, response)
        amended = {
            **response,
            "status": "amended",
            "item": make_response("srs", {1: 9.5, 2: 9.0, 3: 8.2, 4: 9.9})["item"],
        }
        amended = c.request("PUT", f"QuestionnaireResponse/{response['id']}", json=amended).json()
        assert amended["meta"]["versionId"] == "2"
        second = write_observation(c, amended)
        assert second["id"] == first["id"] and second["status"] == "amended"  # same identifier: updated, not duplicated
        assert second["valueQuantity"]["value"] == 36.6  # 9.5 + 9 + 8.2 + 9.9
        assert second["derivedFrom"] == [{"reference": f"QuestionnaireResponse/{response['id']}/_history/2"}]
        entry = extracted_entry("srs", amended, second)
        result = c.transaction({"resourceType": "Bundle", "type": "transaction", "entry": [entry]}, idempotent=True)
        assert result["entry"][0]["response"]["status"].startswith("200")  # conditional create: no write
        assert ids(c, {"derived-from": f"QuestionnaireResponse/{response['id']}"}) == [first["id"]]
