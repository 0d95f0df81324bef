"""The hook's own checks: who the user is (a parsed reference), malformed requests (400, one line,
never a 500), and the hook's deadline against a FHIR server or a JWKS URL that never answers.

The deadline tests use loopback sockets that accept connections and never answer (and a closed
port): the hook must answer within ``hook_deadline_seconds`` plus a margin, measured.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.server.settings import ServerConfig
from alliance_fhir.server.state import StateStore
from alliance_fhir.service.cds import SERVICE_ID, CdsService, cds_routes
from alliance_fhir.service.cds_auth import CdsClient, CdsSettings
from alliance_fhir.service.metrics import ServeMetrics

from ..support.asgi_server import raw_request, serving
from ..support.cds_client import CdsTestClient
from .test_cds_service import AUD, FHIR, PUBLIC, RUPTURE, FakeFhir, bundle, call, request


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
        app = Starlette(routes=cds_routes(service, max_body_bytes=4 * 1024 * 1024))
        with serving(app) as url, httpx.Client(base_url=url, timeout=30) as http:
            yield http, fake, service


@pytest.mark.parametrize(
    "user",
    ["Patient/c1/_history/1", "http://fhir.test/fhir/Patient/c1/_history/7", "RelatedPerson/r9/_history/2"],
)
def test_a_versioned_patient_or_related_person_user_is_still_that_user_no_cards(setup, ehr, user):
    http, fake, _ = setup
    answer = call(http, ehr, request(user=user, prefetch={"scores": bundle(RUPTURE)}))
    assert answer.status_code == 200 and answer.json() == {"cards": []}
    assert fake.requests == []


def test_a_versioned_practitioner_user_gets_the_cards(setup, ehr):
    http, _, _ = setup
    answer = call(http, ehr, request(user="Practitioner/p1/_history/3", prefetch={"scores": bundle(RUPTURE)}))
    assert answer.status_code == 200 and len(answer.json()["cards"]) == 1


@pytest.mark.parametrize(
    "user",
    [
        "Patient/",
        "Patient",
        "/",
        "",
        "Patient//",
        "x/Patient/",
        "Practitioner/a/b",
        "patient/c1",
        "Patient/c1/_history/",
    ],
)
def test_a_malformed_user_id_is_400_with_one_line(setup, ehr, user, caplog):
    http, fake, _ = setup
    caplog.set_level(logging.WARNING, "alliance_fhir.cds")
    answer = call(http, ehr, request(user=user))
    assert answer.status_code == 400
    assert answer.json() == {"error": "context.userId is missing or not a FHIR reference (Type/id)"}
    assert fake.requests == []
    assert "Traceback" not in caplog.text and len(caplog.records) == 1


WRONG_TYPES: list[tuple[str, Any]] = [
    ("context", []),
    ("context", "Patient/c1"),
    ("context", None),
    ("context", {"userId": ["Practitioner/p1"], "patientId": "c1"}),
    ("context", {"userId": {"reference": "Practitioner/p1"}, "patientId": "c1"}),
    ("context", {"userId": "Practitioner/p1", "patientId": 1}),
    ("context", {"userId": "Practitioner/p1", "patientId": ["c1"]}),
    ("context", {"userId": "Practitioner/p1", "patientId": None}),
    ("context", {"userId": True, "patientId": "c1"}),
    ("hook", ["patient-view"]),
    ("hook", None),
]


@pytest.mark.parametrize(("field", "value"), WRONG_TYPES, ids=repr)
def test_wrong_types_in_the_request_are_400_never_500(setup, ehr, field, value):
    http, _, _ = setup
    answer = call(http, ehr, request(**{field: value}))
    assert answer.status_code == 400 and set(answer.json()) == {"error"}


@pytest.mark.parametrize("body", [[], "patient-view", 1, None, True], ids=repr)
def test_a_body_that_is_not_an_object_is_400(setup, ehr, body):
    http, _, _ = setup
    assert call(http, ehr, body).status_code == 400


SCORES = bundle(RUPTURE)
ODD_PREFETCH: list[Any] = [
    [],
    "x",
    1,
    {"scores": []},
    {"scores": "Bundle"},
    {"scores": {"resourceType": "Bundle", "entry": 5}},
    {"scores": {"resourceType": "Bundle", "entry": {"resource": {}}}},
    {"scores": {"resourceType": "Bundle", "entry": [1, "x", None, {"resource": 3}]}},
    {"scores": {"resourceType": "Bundle", "link": 5, "entry": []}},
    {"scores": {"resourceType": "Bundle", "link": "next", "entry": []}},
    {"scores": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Bundle", "entry": 3}}]}},
    {"scores": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Observation", "subject": "x"}}]}},
    {"scores": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Observation", "subject": []}}]}},
    {"scores": SCORES, "issues": 5},
    {"scores": SCORES, "issues": {"resourceType": "Bundle", "entry": "x"}},
    {
        "scores": SCORES,
        "issues": {
            "resourceType": "Bundle",
            "entry": [{"resource": {"resourceType": "DetectedIssue", "id": "i", "patient": "Patient/c1"}}],
        },
    },
    {
        "scores": SCORES,
        "issues": {
            "resourceType": "Bundle",
            "entry": [
                {
                    "resource": {
                        "resourceType": "DetectedIssue",
                        "id": "i",
                        "status": "final",
                        "patient": {"reference": "Patient/c1"},
                        "identifier": "x",
                        "extension": 3,
                        "code": [],
                        "evidence": "x",
                    }
                }
            ],
        },
    },
]


@pytest.mark.parametrize("prefetch", ODD_PREFETCH, ids=range(len(ODD_PREFETCH)))
def test_a_prefetch_of_the_wrong_shape_is_never_a_500(setup, ehr, prefetch):
    # a prefetch that cannot be used is not an error: the service reads the server (2 cards) or uses what is usable
    http, _, _ = setup
    answer = call(http, ehr, request(prefetch=prefetch))
    assert answer.status_code == 200 and len(answer.json()["cards"]) in (0, 1)


def test_fhir_authorization_of_any_shape_is_ignored(setup, ehr):
    http, _, _ = setup
    values: list[Any] = [[], "x", 5, None, {"access_token": ["t"]}]
    for value in values:
        answer = call(http, ehr, request(fhirAuthorization=value, prefetch={"scores": SCORES}))
        assert answer.status_code == 200 and len(answer.json()["cards"]) == 1


# ---- the hook's deadline ---------------------------------------------------------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield int(listener.getsockname()[1])


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def deadline_service(tmp_path: Path, ehr: CdsTestClient, catalog, fhir: str, client: CdsClient, seconds: float):
    settings = CdsSettings(clients=[client], hook_deadline_seconds=seconds, jwks_timeout_seconds=20)
    store = StateStore(tmp_path / "s.db")
    # the FHIR client's own bounds are far longer than the hook's deadline: 3 attempts of up to 20 s each
    fhir_client = FhirClient(ServerConfig(url=fhir, timeout=20, max_attempts=3, max_retry_seconds=20))
    return store, fhir_client, CdsService.build(fhir_client, catalog, store, settings, PUBLIC, None)


def timed_call(service: CdsService, ehr: CdsTestClient, body: dict[str, Any]) -> tuple[httpx.Response, float]:
    app = Starlette(routes=cds_routes(service, max_body_bytes=1024 * 1024))
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        started = time.monotonic()
        answer = call(http, ehr, body)
        return answer, time.monotonic() - started


@pytest.mark.parametrize("where", ["silent", "closed"])
def test_a_fhir_server_that_never_answers_gets_a_412_within_the_deadline(tmp_path, ehr, catalog, silent_port, where):
    port = silent_port if where == "silent" else closed_port()
    fhir = f"http://127.0.0.1:{port}/fhir"
    jwks = CdsClient(issuer=ehr.issuer, jwks_file=ehr.write_jwks(tmp_path / "jwks.json"))
    store, client, service = deadline_service(tmp_path, ehr, catalog, fhir, jwks, seconds=1.0)
    with store, client:
        answer, seconds = timed_call(service, ehr, request(fhirServer=fhir))
    assert answer.status_code == 412, answer.text
    assert answer.json()["error"].startswith("the FHIR server could not be read")
    assert seconds < 1.0 + 1.5, f"answered after {seconds:.1f} s"


def test_a_jwks_url_that_never_answers_gets_a_503_within_the_deadline(tmp_path, ehr, catalog, silent_port):
    slow_keys = CdsClient(issuer=ehr.issuer, jwks_url=f"http://127.0.0.1:{silent_port}/jwks.json")
    store, client, service = deadline_service(tmp_path, ehr, catalog, FHIR, slow_keys, seconds=1.0)
    with store, client:
        answer, seconds = timed_call(service, ehr, request())
    assert answer.status_code == 503 and answer.json() == {"error": "the request could not be checked in time"}
    assert seconds < 1.0 + 1.5, f"answered after {seconds:.1f} s"


def test_the_deadline_is_a_setting_within_what_ehrs_wait():
    assert CdsSettings().hook_deadline_seconds == 3.0
    with pytest.raises(ValueError, match="hook_deadline_seconds"):
        CdsSettings(hook_deadline_seconds=30)


@pytest.mark.parametrize("depth", [100_000, 1_000_000])
def test_an_authenticated_body_nested_deep_is_400_with_one_line(setup, ehr, depth, caplog):
    http, fake, _ = setup
    caplog.set_level(logging.WARNING, "alliance_fhir.cds")
    body = b"[" * depth + b"]" * depth
    answer = http.post(
        f"/cds-services/{SERVICE_ID}",
        content=body,
        headers={"Authorization": f"Bearer {ehr.token(AUD)}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 400 and answer.json()["error"].startswith("the body is not JSON")
    assert fake.requests == [] and "Traceback" not in caplog.text
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and messages[0].startswith("CDS request refused (400): the body is not JSON"), messages


def test_the_token_is_checked_before_the_size_no_body_is_read_for_a_refused_one(setup, ehr):
    """A refused token gets 401 although the request declares a gigabyte (none of it sent); a good one, 413."""
    http, fake, _ = setup
    url = str(http.base_url).rstrip("/")
    for token, status in (("not-a-jwt", b"401"), (ehr.token(AUD), b"413")):
        head = (
            f"POST /cds-services/{SERVICE_ID} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {10**9}\r\n\r\n"
        ).encode()
        assert raw_request(url, head).startswith(b"HTTP/1.1 " + status), token[:12]
    assert fake.requests == []
