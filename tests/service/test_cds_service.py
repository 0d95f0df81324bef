"""The CDS Hooks HTTP layer: discovery, the hook (prefetch, own read, who may see), the report link.

The FHIR server is a MockTransport here (it records every request, so "no round trip" is
checked); tests/integration/test_hapi_cds.py runs the same against the real HAPI.
"""

from __future__ import annotations

import base64
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from starlette.applications import Starlette

from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.server.settings import ServerConfig
from alliance_fhir.server.state import StateStore
from alliance_fhir.service.cds import SERVICE_ID, CdsService, cds_routes
from alliance_fhir.service.cds_auth import CdsClient, CdsSettings
from alliance_fhir.service.metrics import ServeMetrics
from alliance_fhir.service.report_links import ReportLinks

from ..support.asgi_server import serving
from ..support.cds_client import CdsTestClient
from ..support.cds_schema import discovery_problems, response_problems
from ..trajectory_builders import series_obs

FHIR = "http://fhir.test/fhir"
PUBLIC = "http://cds.test"
AUD = f"{PUBLIC}/cds-services/{SERVICE_ID}"
PATIENT_ID = "c1"  # the builders' Patient/c1


def bundle(resources: list[dict[str, Any]], next_link: bool = False) -> dict[str, Any]:
    page: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }
    if next_link:
        page["link"] = [{"relation": "next", "url": f"{FHIR}/Observation?page=2"}]
    return page


PATIENT = {"resourceType": "Patient", "id": "c1", "name": [{"given": ["Robin"], "family": "Rupture"}]}


class FakeFhir:
    """Serves one patient's score Observations, the Patient (named) and no DetectedIssues; records each request."""

    def __init__(self, observations: list[dict[str, Any]]) -> None:
        self.observations = observations
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith("/Observation"):
            return httpx.Response(200, json=bundle(self.observations))
        if request.url.path.endswith("/Patient") and request.url.params.get("_id") == "c1":
            return httpx.Response(200, json=bundle([PATIENT]))
        return httpx.Response(200, json=bundle([]))


RUPTURE = series_obs("wai-sr", [48, 50, 41, 44])  # 50 -> 41: an open rupture and an early warning


@pytest.fixture(scope="module")
def ehr() -> CdsTestClient:
    return CdsTestClient()


@pytest.fixture
def setup(tmp_path: Path, ehr: CdsTestClient, catalog):
    fake = FakeFhir(RUPTURE)
    settings = CdsSettings(clients=[CdsClient(issuer=ehr.issuer, jwks_file=ehr.write_jwks(tmp_path / "jwks.json"))])
    with (
        StateStore(tmp_path / "s.db") as store,
        FhirClient(ServerConfig(url=FHIR), transport=httpx.MockTransport(fake)) as client,
    ):
        service = CdsService.build(client, catalog, store, settings, PUBLIC, ServeMetrics(lambda: 0.0))
        app = Starlette(routes=cds_routes(service, max_body_bytes=1024 * 1024))
        with serving(app) as url, httpx.Client(base_url=url, timeout=30) as http:
            yield http, fake, service


def call(http, ehr, body: dict[str, Any], token: str | None = "fresh") -> httpx.Response:
    headers = {"Authorization": f"Bearer {ehr.token(AUD) if token == 'fresh' else token}"} if token else {}
    return http.post(f"/cds-services/{SERVICE_ID}", json=body, headers=headers)


def request(user: str = "Practitioner/p1", prefetch: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "fhirServer": FHIR,
        "fhirAuthorization": {
            "access_token": "ehr-token-never-used",
            "token_type": "Bearer",
            "scope": "x",
            "subject": "s",
        },
        "context": {"userId": user, "patientId": PATIENT_ID},
    }
    if prefetch is not None:
        body["prefetch"] = prefetch
    body.update(changes)
    return body


def test_discovery(setup):
    http, _, _ = setup
    document = http.get("/cds-services").json()
    assert discovery_problems(document) == []
    (service,) = document["services"]
    assert (service["hook"], service["id"]) == ("patient-view", SERVICE_ID)
    assert set(service["prefetch"]) == {"scores", "issues", "patient", "user"}
    assert "{{context.patientId}}" in service["prefetch"]["scores"]
    assert "Patient or RelatedPerson" in service["usageRequirements"]


def test_cards_from_the_prefetch_need_no_fhir_round_trip(setup, ehr):
    http, fake, _ = setup
    answer = call(http, ehr, request(prefetch={"scores": bundle(RUPTURE), "issues": bundle([])}))
    assert answer.status_code == 200, answer.text
    assert response_problems(answer.json()) == []
    codes = [c["source"]["topic"]["code"] for c in answer.json()["cards"]]
    assert codes == ["alliance-rupture"]  # one situation (rupture and early warning together): one card
    assert fake.requests == []
    exposition = setup[2].metrics.exposition().decode()
    assert 'alliance_fhir_cds_calls_total{outcome="cards"} 1.0' in exposition
    assert 'alliance_fhir_cds_seconds_count{source="prefetch"} 1.0' in exposition


def test_without_prefetch_the_service_reads_the_server_with_its_own_credentials(setup, ehr):
    http, fake, _ = setup
    answer = call(http, ehr, request())
    assert [c["source"]["topic"]["code"] for c in answer.json()["cards"]] == ["alliance-rupture"]
    # the scores, our issues, and the names of the client and the therapist (PractitionerRole/t1)
    assert {r.url.path for r in fake.requests} == {
        "/fhir/Observation",
        "/fhir/DetectedIssue",
        "/fhir/Patient",
        "/fhir/PractitionerRole",
    }
    assert all("ehr-token-never-used" not in r.headers.get("authorization", "") for r in fake.requests)
    scoped = [r for r in fake.requests if r.url.path in ("/fhir/Observation", "/fhir/DetectedIssue")]
    assert all(r.url.params.get("subject", r.url.params.get("patient")) == "Patient/c1" for r in scoped)
    named = {
        r.url.path: r.url.params.get("_id")
        for r in fake.requests
        if r.url.path not in ("/fhir/Observation", "/fhir/DetectedIssue")
    }
    assert named == {"/fhir/Patient": "c1", "/fhir/PractitionerRole": "t1"}


@pytest.mark.parametrize(
    "prefetch", [{"scores": None}, {"issues": bundle([])}, {"scores": bundle(RUPTURE, next_link=True)}]
)
def test_an_incomplete_prefetch_falls_back_to_the_server(setup, ehr, prefetch):
    http, fake, _ = setup
    assert len(call(http, ehr, request(prefetch=prefetch)).json()["cards"]) == 1
    assert fake.requests


def test_prefetched_scores_of_another_patient_are_ignored(setup, ehr):
    http, _, _ = setup
    other = series_obs("wai-sr", [48, 50, 41, 44], subject="Patient/someone-else")
    assert call(http, ehr, request(prefetch={"scores": bundle(other)})).json() == {"cards": []}


@pytest.mark.parametrize("user", ["Patient/c1", "RelatedPerson/r9", "http://fhir.test/fhir/Patient/c1"])
def test_a_patient_or_related_person_user_gets_no_alliance_cards(setup, ehr, user, caplog):
    http, fake, _ = setup
    caplog.set_level(logging.INFO, "alliance_fhir.cds")
    answer = call(http, ehr, request(user=user, prefetch={"scores": bundle(RUPTURE)}))
    assert answer.status_code == 200 and answer.json() == {"cards": []}
    assert fake.requests == []
    assert "user: no alliance cards" in caplog.text and "c1" not in caplog.text


def test_a_patient_with_no_scores_gets_no_cards(setup, ehr):
    http, fake, _ = setup
    fake.observations = []
    assert call(http, ehr, request()).json() == {"cards": []}
    assert call(http, ehr, request(prefetch={"scores": bundle([])})).json() == {"cards": []}


@pytest.mark.parametrize("server", ["http://other.test/fhir", None])
def test_another_fhir_server_is_a_412_not_an_empty_answer_and_a_log_line(setup, ehr, server, caplog):
    # CDS Hooks 2.0, HTTP status codes: 412 when the service cannot get the FHIR data it needs; an empty card
    # list would read as "nothing to report" for a patient whose scores were never looked at
    http, fake, _ = setup
    body = request(prefetch={"scores": bundle(RUPTURE)})
    if server is None:
        del body["fhirServer"]
    else:
        body["fhirServer"] = server
    caplog.set_level(logging.INFO, "alliance_fhir.cds")
    answer = call(http, ehr, body)
    assert answer.status_code == 412 and "cards" not in answer.json()
    assert answer.json() == {"error": "fhirServer is not the FHIR server this service scores"}
    assert "another FHIR server than the one configured" in caplog.text and "c1" not in caplog.text
    assert fake.requests == []


def test_the_fhir_server_may_differ_by_a_trailing_slash(setup, ehr):
    http, _, _ = setup
    body = request(prefetch={"scores": bundle(RUPTURE)}, fhirServer=FHIR + "/")
    assert len(call(http, ehr, body).json()["cards"]) == 1


def test_refusals_are_401_without_detail(setup, ehr, caplog):
    http, _, _ = setup
    caplog.set_level(logging.WARNING, "alliance_fhir.cds")
    now = int(time.time())
    for token in (None, "garbage", ehr.token(AUD, exp=now - 100, iat=now - 200), ehr.token(PUBLIC + "/cds-services")):
        answer = call(http, ehr, request(prefetch={"scores": bundle(RUPTURE)}), token=token)
        assert answer.status_code == 401 and answer.content == b""
        assert answer.headers["www-authenticate"] == "Bearer"
    assert "token expired" in caplog.text and "aud is not this service's URL" in caplog.text
    assert "c1" not in caplog.text
    exposition = setup[2].metrics.exposition().decode()
    assert 'alliance_fhir_cds_calls_total{outcome="refused"} 4.0' in exposition


def test_bad_requests(setup, ehr):
    http, _, _ = setup
    assert call(http, ehr, request(hook="order-select")).status_code == 400
    assert call(http, ehr, request(context={"userId": "Practitioner/p"})).status_code == 400
    assert call(http, ehr, request(context={"patientId": "c1"})).status_code == 400
    assert call(http, ehr, request(context={"patientId": "../x", "userId": "Practitioner/p"})).status_code == 400
    answer = http.post(
        f"/cds-services/{SERVICE_ID}", content=b"{", headers={"Authorization": f"Bearer {ehr.token(AUD)}"}
    )
    assert answer.status_code == 400
    assert http.post("/cds-services/other", json={}).status_code == 404


def test_the_report_link_opens_the_patients_report_and_only_while_valid(setup, ehr):
    http, _, service = setup
    cards = call(http, ehr, request(prefetch={"scores": bundle(RUPTURE)})).json()["cards"]
    url = cards[0]["links"][0]["url"]
    assert (
        url.startswith(f"{PUBLIC}/cds-report?token=") and "Patient" not in url
    )  # the token is random base64: "c1" may occur by chance; the reference may not
    page = http.get(url.replace(PUBLIC, ""))
    # the client's name from the server, never the reference; the page loads nothing from elsewhere
    assert page.status_code == 200 and "<h1>Alliance report: Robin Rupture</h1>" in page.text
    assert "Patient/c1" not in page.text and "<script" not in page.text
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
    token = url.split("token=", 1)[1]
    assert http.get(f"/cds-report?token={token[:-2]}xx").status_code == 401
    assert http.get("/cds-report").status_code == 401
    forged = jwt.encode(
        {"sub": "Patient/c2", "exp": int(time.time()) + 60, "iat": 0}, "a-guessed-key-" * 3, algorithm="HS256"
    )
    assert http.get(f"/cds-report?token={forged}").status_code == 401
    assert service.links.patient(token) == "Patient/c1"


def test_a_report_link_expires_and_hides_the_patient():
    clock = [1_800_000_000.0]
    links = ReportLinks("a-link-key-of-enough-length-0123456789", PUBLIC, minutes=15, now=lambda: clock[0])
    token = links.token("Patient/c1")
    decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert b"c1" not in decoded and b"Patient" not in decoded  # sealed, not merely encoded
    assert links.patient(token) == "Patient/c1"
    clock[0] += 15 * 60 - 1
    assert links.patient(token) == "Patient/c1"
    clock[0] += 1
    assert links.patient(token) is None
    clock[0] -= 60
    assert ReportLinks("another-key-of-enough-length-0123456789", PUBLIC, 15).patient(token) is None
    assert ReportLinks("a-link-key-of-enough-length-0123456789", "http://elsewhere", 15).patient(token) is None


STORE = "http://results.test/fhir"


def on_the_ehr(obs: dict[str, Any]) -> dict[str, Any]:
    """A score as sync writes it to a results store beside the EHR: the EHR's resources named absolute on it."""
    absolute = {key: {"reference": f"{FHIR}/{obs[key]['reference']}"} for key in ("subject", "encounter")}
    return {**obs, **absolute, "focus": [{"reference": f"{FHIR}/{f['reference']}"} for f in obs["focus"]]}


def test_beside_a_results_store_the_hook_finds_the_scores_that_name_the_ehrs_patient_absolute(tmp_path, catalog):
    source, store = FakeFhir([]), FakeFhir([on_the_ehr(o) for o in RUPTURE])
    with (
        StateStore(tmp_path / "s.db") as state,
        FhirClient(ServerConfig(url=FHIR), transport=httpx.MockTransport(source)) as ehr_client,
        FhirClient(ServerConfig(url=STORE), transport=httpx.MockTransport(store)) as store_client,
    ):
        service = CdsService.build(ehr_client, catalog, state, CdsSettings(), PUBLIC, None, store_client)
        cards = service.answer(request())["cards"]
        # the same card as on one server: the stored Patient is the hook's Patient/c1
        assert [c["source"]["topic"]["code"] for c in cards] == ["alliance-rupture"]
        # WAI-SR 48, 50, 41, 44: the latest 44 at session 4, the best recent 50, 6 lower two sessions later
        assert (
            cards[0]["summary"]
            == "WAI-SR 44 at session 4, down 6 from 50 in 2 sessions; in the first sessions. Moderate concern."
        )
        assert cards[0]["detail"].startswith("**Robin Rupture**")  # the name read from the EHR
        scoped = [r for r in store.requests if r.url.path in ("/fhir/Observation", "/fhir/DetectedIssue")]
        assert {r.url.path for r in scoped} == {"/fhir/Observation", "/fhir/DetectedIssue"}
        # the store is asked for the absolute form (what sync writes) and the relative one (older results)
        assert all(
            r.url.params.get("subject", r.url.params.get("patient")) == "http://fhir.test/fhir/Patient/c1,Patient/c1"
            for r in scoped
        )
        assert not any(r.url.path.endswith(("/Observation", "/DetectedIssue")) for r in source.requests)
        page = service.report(service.links.token("Patient/c1"))
        assert page is not None and b"<h1>Alliance report: Robin Rupture</h1>" in page
