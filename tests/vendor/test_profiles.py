"""The vendor-shaped test servers themselves, against the real HAPI behind them.

Each profile is our reading of a vendor's public documents (tests/vendor/profiles.py cites them).
These tests prove the proxies do what the profiles say: the CapabilityStatement lists exactly the
profile, a refused write is refused with its status and an OperationOutcome and never reaches HAPI,
an allowed write lands on HAPI unchanged, and Epic searches QuestionnaireResponses per patient only.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from .profiles import EPIC, PROFILES, ResourceRule
from .proxy import MAX_BODY
from .seed import seed, store_questionnaire

pytestmark = pytest.mark.integration

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
TAG = "http://alliance-fhir.org/fhir/test/vendor-proxy"
VITAL_SIGNS = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]
}
SURVEY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey"}]}


def marked(resource: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """``resource`` with a unique tag, so HAPI can be asked afterwards whether it arrived (every type searches ``_tag``)."""
    value = uuid.uuid4().hex
    return {**resource, "meta": {"tag": [{"system": TAG, "code": value}]}}, value


def count(base: str, resource_type: str, **params: str) -> int:
    answer = httpx.get(
        f"{base}/{resource_type}",
        params={"_summary": "count", "_total": "accurate", **params},
        headers=FHIR_JSON,
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["total"])


def observation(category: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [category],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/vendor-proxy-p1"},
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
    }


NOTE = {
    "resourceType": "DocumentReference",
    "status": "current",
    "subject": {"reference": "Patient/vendor-proxy-p1"},
    "content": [{"attachment": {"contentType": "text/plain", "data": "U2Vzc2lvbiAz"}}],
}
DETECTED_ISSUE = {
    "resourceType": "DetectedIssue",
    "status": "final",
    "patient": {"reference": "Patient/vendor-proxy-p1"},
}
TASK = {
    "resourceType": "Task",
    "status": "requested",
    "intent": "order",
    "for": {"reference": "Patient/vendor-proxy-p1"},
}
COMMUNICATION = {
    "resourceType": "Communication",
    "status": "completed",
    "subject": {"reference": "Patient/vendor-proxy-p1"},
}
QR = {
    "resourceType": "QuestionnaireResponse",
    "status": "completed",
    "subject": {"reference": "Patient/vendor-proxy-p1"},
    "questionnaire": "Questionnaire/epic-srs-1234",
}
PATIENT = {"resourceType": "Patient", "active": True}
SUBSCRIPTION = {
    "resourceType": "Subscription",
    "status": "requested",
    "reason": "test",
    "criteria": "QuestionnaireResponse?status=completed",
    "channel": {"type": "rest-hook", "endpoint": "https://example.org/hook"},
}


@pytest.fixture(scope="module", autouse=True)
def _patient(fhir_server: str) -> None:
    """The patient the written resources point at (HAPI checks references)."""
    answer = httpx.put(
        f"{fhir_server}/Patient/vendor-proxy-p1",
        json={"resourceType": "Patient", "id": "vendor-proxy-p1"},
        headers=FHIR_JSON,
        timeout=30,
    )
    assert answer.status_code in (200, 201), answer.text
    with httpx.Client(base_url=f"{fhir_server}/", timeout=30) as client:
        store_questionnaire(client, "epic-srs-qr")  # the QR the tests write names Epic's form


# ---------------------------------------------------------------- the CapabilityStatement


def test_the_open_profile_answers_hapis_own_capability_statement(vendor_server, fhir_server):
    server = vendor_server("open")
    through = httpx.get(f"{server.url}/metadata", headers=FHIR_JSON, timeout=30).json()
    direct = httpx.get(f"{fhir_server}/metadata", headers=FHIR_JSON, timeout=30).json()
    assert through["software"] == direct["software"]
    assert {r["type"] for r in through["rest"][0]["resource"]} == {r["type"] for r in direct["rest"][0]["resource"]}
    assert {"code": "transaction"} in through["rest"][0]["interaction"]


@pytest.mark.parametrize("name", ["epic", "oracle", "meditech", "athena", "openemr"])
def test_each_vendor_capability_statement_lists_exactly_its_profile(vendor_server, name):
    profile = PROFILES[name]
    assert profile.resources is not None
    server = vendor_server(name)
    statement = httpx.get(f"{server.url}/metadata", headers=FHIR_JSON, timeout=30).json()
    rest = statement["rest"][0]
    listed = {r["type"]: r for r in rest["resource"]}

    assert list(listed) == list(profile.resources)
    for resource_type, rule in profile.resources.items():
        entry = listed[resource_type]
        assert {i["code"] for i in entry["interaction"]} == set(rule.interactions), resource_type
        assert not any(key.startswith("conditional") for key in entry), (
            f"{resource_type} advertises a conditional write"
        )
        assert "updateCreate" not in entry
        if rule.search_params is not None:
            assert [p["name"] for p in entry["searchParam"]] == list(rule.search_params)
    assert {i["code"] for i in rest["interaction"]} == set(profile.system_interactions)
    assert {o["name"] for o in rest.get("operation", [])} == set(profile.system_operations)
    assert statement["software"]["name"].startswith(profile.title)


def test_epic_lists_no_subscription_detected_issue_or_transaction(vendor_server):
    statement = httpx.get(f"{vendor_server('epic').url}/metadata", headers=FHIR_JSON, timeout=30).json()
    types = {r["type"] for r in statement["rest"][0]["resource"]}
    assert "Subscription" not in types and "DetectedIssue" not in types
    assert statement["rest"][0]["interaction"] == []
    qr = next(r for r in statement["rest"][0]["resource"] if r["type"] == "QuestionnaireResponse")
    assert "questionnaire" not in {p["name"] for p in qr["searchParam"]}


def test_athena_statement_says_backport_subscriptions_id_only(vendor_server):
    statement = httpx.get(f"{vendor_server('athena').url}/metadata", headers=FHIR_JSON, timeout=30).json()
    assert statement["instantiates"] == [
        "http://hl7.org/fhir/uv/subscriptions-backport/CapabilityStatement/backport-subscription-server"
    ]
    subscription = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription")
    assert subscription["supportedProfile"] == [
        "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"
    ]
    assert "id-only" in subscription["documentation"] and subscription["interaction"] == []


# ---------------------------------------------------------------- refused writes never reach HAPI

# (profile, method, path below the base, resource, extra headers, expected status, the reason's words)
REFUSED = [
    ("epic", "POST", "Observation", observation(SURVEY), {}, 403, "vital signs"),
    ("epic", "POST", "DetectedIssue", DETECTED_ISSUE, {}, 404, "not supported"),
    ("epic", "POST", "Task", TASK, {}, 403, "create of Task"),
    ("epic", "POST", "Communication", COMMUNICATION, {}, 403, "create of Communication"),
    ("epic", "POST", "Subscription", SUBSCRIPTION, {}, 404, "not supported"),
    ("epic", "PUT", "Observation?identifier=x", observation(VITAL_SIGNS), {}, 403, "conditional update"),
    ("epic", "POST", "DocumentReference", NOTE, {"If-None-Exist": "identifier=x"}, 403, "conditional create"),
    ("oracle", "POST", "Task", TASK, {}, 404, "not supported"),
    ("oracle", "POST", "DetectedIssue", DETECTED_ISSUE, {}, 404, "not supported"),
    ("meditech", "POST", "Observation", observation(SURVEY), {}, 403, "create of Observation"),
    ("meditech", "POST", "DocumentReference", NOTE, {}, 403, "create of DocumentReference"),
    ("meditech", "POST", "DetectedIssue", DETECTED_ISSUE, {}, 404, "not supported"),
    ("athena", "POST", "Observation", observation(SURVEY), {}, 403, "create of Observation"),
    ("athena", "POST", "Subscription", SUBSCRIPTION, {}, 403, "create of Subscription"),
    ("openemr", "POST", "Observation", observation(SURVEY), {}, 403, "create of Observation"),
    ("openemr", "POST", "QuestionnaireResponse", QR, {}, 403, "create of QuestionnaireResponse"),
    ("openemr", "POST", "DocumentReference", NOTE, {}, 403, "create of DocumentReference"),
]


@pytest.mark.parametrize(
    ("name", "method", "path", "resource", "headers", "status", "words"),
    REFUSED,
    ids=[f"{r[0]}-{r[1]}-{r[2].split('?')[0]}" + ("-conditional" if "?" in r[2] or r[4] else "") for r in REFUSED],
)
def test_a_refused_write_is_refused_with_an_outcome_and_never_reaches_hapi(
    vendor_server, fhir_server, name, method, path, resource, headers, status, words
):
    server = vendor_server(name)
    body, value = marked(resource)
    resource_type = path.split("?")[0]
    before = count(fhir_server, resource_type)

    answer = httpx.request(method, f"{server.url}/{path}", json=body, headers={**FHIR_JSON, **headers}, timeout=30)

    assert answer.status_code == status
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error" and words in outcome["issue"][0]["diagnostics"]
    assert count(fhir_server, resource_type) == before
    assert count(fhir_server, resource_type, _tag=f"{TAG}|{value}") == 0
    assert server.proxy.log.refused[-1][2] == status and server.proxy.log.forwarded == 0


def test_oracle_refuses_a_questionnaire_response_update_that_is_not_in_progress(vendor_server, fhir_server):
    """mfrap op-questionnaireresponse-id-put: the update body allows status in-progress only."""
    stored = httpx.post(
        f"{fhir_server}/QuestionnaireResponse", json={**QR, "status": "in-progress"}, headers=FHIR_JSON, timeout=30
    )
    assert stored.status_code == 201
    rid = stored.json()["id"]
    server = vendor_server("oracle")

    refused = httpx.put(
        f"{server.url}/QuestionnaireResponse/{rid}",
        json={**QR, "id": rid, "status": "completed"},
        headers=FHIR_JSON,
        timeout=30,
    )
    assert refused.status_code == 403 and "in-progress only" in refused.json()["issue"][0]["diagnostics"]
    assert (
        httpx.get(f"{fhir_server}/QuestionnaireResponse/{rid}", headers=FHIR_JSON, timeout=30).json()["status"]
        == "in-progress"
    )

    kept = httpx.put(
        f"{server.url}/QuestionnaireResponse/{rid}",
        json={**QR, "id": rid, "status": "in-progress", "authored": "2026-11-02T10:00:00Z"},
        headers=FHIR_JSON,
        timeout=30,
    )
    assert kept.status_code == 200
    assert (
        httpx.get(f"{fhir_server}/QuestionnaireResponse/{rid}", headers=FHIR_JSON, timeout=30)
        .json()["authored"]
        .startswith("2026-11-02")
    )


def test_a_transaction_is_refused_where_the_vendor_lists_none(vendor_server, fhir_server):
    server = vendor_server("epic")
    body, value = marked(NOTE)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": body, "request": {"method": "POST", "url": "DocumentReference"}}],
    }
    answer = httpx.post(server.url, json=bundle, headers=FHIR_JSON, timeout=30)
    assert answer.status_code == 403 and answer.json()["resourceType"] == "OperationOutcome"
    assert count(fhir_server, "DocumentReference", _tag=f"{TAG}|{value}") == 0


def test_a_body_over_the_bound_is_refused_unread(vendor_server):
    server = vendor_server("open")
    forwarded = server.proxy.log.forwarded  # the start-up poll of /metadata went through
    answer = httpx.post(f"{server.url}/Observation", content=b"x" * (MAX_BODY + 1), headers=FHIR_JSON, timeout=60)
    assert answer.status_code == 413 and answer.json()["resourceType"] == "OperationOutcome"
    assert server.proxy.log.forwarded == forwarded


# ---------------------------------------------------------------- allowed writes land on HAPI

ALLOWED = [
    ("open", "DetectedIssue", DETECTED_ISSUE),
    ("epic", "Observation", observation(VITAL_SIGNS)),
    ("epic", "DocumentReference", NOTE),
    ("oracle", "DocumentReference", NOTE),
    ("oracle", "Observation", observation(SURVEY)),
    ("meditech", "Communication", COMMUNICATION),
    ("meditech", "QuestionnaireResponse", QR),
    ("openemr", "Patient", PATIENT),
]


@pytest.mark.parametrize(("name", "resource_type", "resource"), ALLOWED, ids=[f"{a[0]}-{a[1]}" for a in ALLOWED])
def test_an_allowed_write_lands_on_hapi(vendor_server, fhir_server, name, resource_type, resource):
    server = vendor_server(name)
    body, value = marked(resource)
    answer = httpx.post(f"{server.url}/{resource_type}", json=body, headers=FHIR_JSON, timeout=30)
    assert answer.status_code == 201, answer.text
    rid = answer.json()["id"]
    assert answer.headers["location"].startswith(f"{server.url}/{resource_type}/{rid}")  # HAPI's links name the proxy
    stored = httpx.get(f"{fhir_server}/{resource_type}/{rid}", headers=FHIR_JSON, timeout=30).json()
    assert {"system": TAG, "code": value} in [{k: t[k] for k in ("system", "code")} for t in stored["meta"]["tag"]]
    assert server.proxy.log.refused == []


def test_meditech_updates_a_questionnaire_response(vendor_server, fhir_server):
    server = vendor_server("meditech")
    created = httpx.post(
        f"{server.url}/QuestionnaireResponse", json={**QR, "status": "in-progress"}, headers=FHIR_JSON, timeout=30
    )
    rid = created.json()["id"]
    updated = httpx.put(
        f"{server.url}/QuestionnaireResponse/{rid}", json={**QR, "id": rid}, headers=FHIR_JSON, timeout=30
    )
    assert updated.status_code == 200
    assert (
        httpx.get(f"{fhir_server}/QuestionnaireResponse/{rid}", headers=FHIR_JSON, timeout=30).json()["status"]
        == "completed"
    )


# ---------------------------------------------------------------- Epic: QuestionnaireResponses per patient


def test_epic_refuses_a_server_wide_questionnaire_response_search_and_answers_per_patient(vendor_server, fhir_server):
    seeded = seed(fhir_server, "epic-srs-qr", ["2026-11-03T10:00:00Z", "2026-11-10T10:00:00Z"])
    server = vendor_server("epic")

    for refused in (
        httpx.get(
            f"{server.url}/QuestionnaireResponse",
            params={"questionnaire": "Questionnaire/epic-srs-1234"},
            headers=FHIR_JSON,
            timeout=30,
        ),
        httpx.post(f"{server.url}/QuestionnaireResponse/_search", data={"status": "completed"}, timeout=30),
    ):
        assert refused.status_code == 403
        assert "patient=" in refused.json()["issue"][0]["diagnostics"]

    for scope in ("patient", "subject"):
        bundle = httpx.get(
            f"{server.url}/QuestionnaireResponse",
            params={scope: f"Patient/{seeded.patient}", "_count": "1"},
            headers=FHIR_JSON,
            timeout=30,
        ).json()
        assert bundle["total"] == 2
        next_link = next(link["url"] for link in bundle["link"] if link["relation"] == "next")
        assert next_link.startswith(server.url)  # paging goes through the proxy
        following = httpx.get(next_link, headers=FHIR_JSON, timeout=30)
        assert following.status_code == 200 and len(following.json()["entry"]) == 1


def test_seeded_epic_responses_carry_epic_ids_and_decimals(vendor_server, fhir_server):
    seeded = seed(fhir_server, "epic-srs-qr", ["2026-11-03T10:00:00Z"])
    server = vendor_server("epic")
    response = httpx.get(
        f"{server.url}/QuestionnaireResponse/{seeded.response_ids[0]}", headers=FHIR_JSON, timeout=30
    ).json()
    assert response["questionnaire"] == "Questionnaire/epic-srs-1234"
    assert [(i["linkId"], i["answer"][0]["valueDecimal"]) for i in response["item"]] == [
        ("10001001", 8.5),
        ("10001002", 9.0),
        ("10001003", 7.5),
        ("10001004", 9.5),
    ]


def test_seeded_openemr_responses_carry_labels_as_strings(vendor_server, fhir_server):
    seeded = seed(fhir_server, "openemr-wai-sr-qr", ["2026-11-03T10:00:00Z"])
    server = vendor_server("openemr")
    response = httpx.get(
        f"{server.url}/QuestionnaireResponse/{seeded.response_ids[0]}", headers=FHIR_JSON, timeout=30
    ).json()
    assert response["questionnaire"] == "Questionnaire/openemr-wai-sr-12"
    assert response["item"][0] == {"linkId": "/wai-sr-q01", "answer": [{"valueString": "Very often"}]}
    assert len(response["item"]) == 12


def test_a_read_passes_through_byte_for_byte(vendor_server, fhir_server):
    seeded = seed(fhir_server, "openemr-wai-sr-qr", ["2026-11-03T10:00:00Z"])
    server = vendor_server("openemr")
    path = f"QuestionnaireResponse/{seeded.response_ids[0]}"
    assert (
        httpx.get(f"{server.url}/{path}", headers=FHIR_JSON, timeout=30).content
        == httpx.get(f"{fhir_server}/{path}", headers=FHIR_JSON, timeout=30).content
    )


def test_epic_profile_rules_are_the_documented_ones():
    """The table itself: what the Epic catalogue lists (open.epic.com/Interface/FHIR)."""
    assert EPIC.resources is not None
    rules: dict[str, ResourceRule] = dict(EPIC.resources)
    assert "DetectedIssue" not in rules and "Subscription" not in rules
    assert "create" not in rules["Task"].interactions and "create" not in rules["Flag"].interactions
    assert "create" in rules["DocumentReference"].interactions
    assert rules["QuestionnaireResponse"].scoped_by == ("patient", "subject")
