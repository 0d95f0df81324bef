"""CDS Hooks conformance of our own, against the real HAPI with the demo caseload and a real `serve`.

The demo (``alliance-fhir demo``) posts the synthetic clinic, syncs it and writes its
DetectedIssues; `serve` runs as a process with a config file trusting two CDS clients: one with a
JWKS file, one whose JWKS URL (a loopback server) answers more than the size cap. The test plays
the EHR: it signs tokens with fresh keys and fills the discovery's prefetch templates by querying
HAPI itself, as an EHR does.

Demo clients used (mappings' rules; totals per session from ``server/demo.py``):
- ``afdemo-rupture``, WAI-SR 48, 50, 41, 44, 51: the rupture (50 -> 41) is repaired by the last
  session (51 >= 50): one ``info`` repair card;
- ``afdemo-couple-b``, SRS 33.1, 30.2, 31.0 in joint sessions with couple-a (38.0, 37.5, 38.4):
  open rupture (33.1 -> 30.2, not back to 33.1), low alliance (all < 36), early warning (session 1
  low), split (37.5 - 30.2 = 7.3 >= 5): four ``warning`` cards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from alliance_fhir._ids import PROJECT_CODESYSTEM, SIGNAL_IDENTIFIER_SYSTEM, SIGNAL_STATUS_EXTENSION
from alliance_fhir.service.cds import SERVICE_ID

from ..support.cds_client import CdsTestClient
from ..support.cds_schema import discovery_problems, response_problems
from .helpers import client, unique
from .test_hapi_serve import Service

pytestmark = pytest.mark.integration
RUPTURE, COUPLE_B = "afdemo-rupture", "afdemo-couple-b"


class _BigJwks(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = json.dumps({"keys": [], "padding": "x" * 200_000}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def big_jwks_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BigJwks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def demo(fhir_server: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("cds-demo")
    command = [sys.executable, "-m", "alliance_fhir", "demo", "--server", fhir_server, "--state", str(folder / "s.db")]
    env = {**os.environ, "XDG_DATA_HOME": str(folder)}  # the demo's CDS client files: not in the user's home
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return fhir_server


@pytest.fixture(scope="module")
def ehr() -> CdsTestClient:
    return CdsTestClient("https://ehr.test.example")


def serving(demo: str, ehr: CdsTestClient, big_jwks_url: str, folder: Path, cds: str = "") -> Iterator[Service]:
    """`serve` trusting the two CDS clients; ``cds``: more lines of its ``[cds]`` table."""
    jwks = ehr.write_jwks(folder / "ehr-jwks.json")
    config = folder / "alliance-fhir.toml"
    config.write_text(
        f"""[cds]
{cds}

[[cds.clients]]
issuer = "{ehr.issuer}"
jwks_file = "{jwks}"

[[cds.clients]]
issuer = "https://big-jwks.test.example"
jwks_url = "{big_jwks_url}"
""",
        encoding="utf-8",
    )
    running = Service(demo, folder, "--no-subscribe", "--config", str(config)).start()
    yield running
    if running.proc is not None and running.proc.poll() is None:
        assert running.stop() == 0


@pytest.fixture(scope="module")
def service(
    demo: str, ehr: CdsTestClient, big_jwks_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    yield from serving(demo, ehr, big_jwks_url, tmp_path_factory.mktemp("cds-serve"))


@pytest.fixture(scope="module")
def reading_service(
    demo: str, ehr: CdsTestClient, big_jwks_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """A `serve` without stored reads: every hook without prefetch reads HAPI (what a test of that read needs)."""
    folder = tmp_path_factory.mktemp("cds-serve-reading")
    yield from serving(demo, ehr, big_jwks_url, folder, "stored_read_max_age_seconds = 0")


def aud(service: Service) -> str:
    return f"{service.url}/cds-services/{SERVICE_ID}"


def hook_request(
    fhir: str, patient: str, prefetch: dict[str, Any] | None = None, user: str = "Practitioner/afdemo-t1"
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": fhir,
        "context": {"userId": user, "patientId": patient},
    }
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def call(service: Service, body: dict[str, Any], token: str) -> httpx.Response:
    return httpx.post(aud(service), json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def prefetch_from_hapi(
    service: Service, fhir: str, patient: str, user: str = "Practitioner/afdemo-t1"
) -> dict[str, Any]:
    """What an EHR sends: each discovery template (the patient's and the user's) filled in and read from its FHIR server."""
    templates = httpx.get(f"{service.url}/cds-services", timeout=10).json()["services"][0]["prefetch"]
    filled = {}
    with client(fhir) as c:
        for key, template in templates.items():
            # fresh, as an EHR reads its own data (HAPI would otherwise answer a repeated search from its cache)
            query = template.replace("{{context.patientId}}", patient).replace("{{context.userId}}", user)
            filled[key] = c.request("GET", query, headers={"Cache-Control": "no-cache"}).json()
    return filled


def codes(answer: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["source"]["topic"]["code"], c["indicator"]) for c in answer["cards"]]


def test_discovery(service):
    document = httpx.get(f"{service.url}/cds-services", timeout=10).json()
    assert discovery_problems(document) == []
    assert [(s["hook"], s["id"]) for s in document["services"]] == [("patient-view", SERVICE_ID)]


def test_signed_request_with_prefetch(service, demo, ehr):
    prefetch = prefetch_from_hapi(service, demo, COUPLE_B)
    assert prefetch["scores"]["resourceType"] == "Bundle" and prefetch["scores"]["entry"]
    answer = call(service, hook_request(demo, COUPLE_B, prefetch), ehr.token(aud(service)))
    assert answer.status_code == 200, answer.text
    assert response_problems(answer.json()) == []
    # one situation, one card: Kim's SRS 33.1, 30.2, 31.0 is low, fell, early and split (the rupture leads)
    assert codes(answer.json()) == [("alliance-rupture", "warning")]
    card = answer.json()["cards"][0]
    # where Kim is now: 31 at session 3, 31.0 - 33.1 = -2.1 from the best of sessions 1-3 (session 1), below 36;
    # below the level of concern with a drop not yet repaired: high
    assert card["summary"] == (
        "SRS 31 at session 3, down 2.1 from 33.1 in 2 sessions; below 36, the level of concern; "
        "lower than others in joint sessions. High concern."
    )
    for rule in ("Alliance rupture", "Low alliance", "Early alliance warning", "Split alliance"):
        assert f"- {rule}, since session" in card["detail"]  # each rule that fired, in the one card
    assert "DetectedIssue/" not in card["detail"] and "Patient/" not in card["detail"]  # no internal ids


def test_the_rupture_client_gets_its_repair_card(service, demo, ehr):
    prefetch = prefetch_from_hapi(service, demo, RUPTURE)
    answer = call(service, hook_request(demo, RUPTURE, prefetch), ehr.token(aud(service), alg="RS384")).json()
    assert codes(answer) == [("alliance-repair", "info")]
    # WAI-SR 48, 50, 41, 44, 51: the drop to 41 at session 3 is repaired by 51 at session 5 (>= 50)
    assert answer["cards"][0]["summary"] == (
        "WAI-SR back to 51 at session 5 after falling to 41 at session 3. Alliance repaired."
    )


def test_without_prefetch_the_service_reads_hapi_and_says_the_same(service, demo, ehr):
    # the user is Kim's own therapist: the prefetched user names the therapist as the server's read does
    lee = "Practitioner/afdemo-t2"
    prefetch = prefetch_from_hapi(service, demo, COUPLE_B, user=lee)
    with_prefetch = call(service, hook_request(demo, COUPLE_B, prefetch, user=lee), ehr.token(aud(service))).json()
    without = call(service, hook_request(demo, COUPLE_B, user=lee), ehr.token(aud(service))).json()
    assert response_problems(without) == []
    strip = lambda cards: [{k: v for k, v in c.items() if k not in ("uuid", "links")} for c in cards]  # noqa: E731
    assert strip(without["cards"]) == strip(with_prefetch["cards"])
    lines = [line.get("message", "") for line in service.log_lines()]
    assert any("card(s) from the FHIR server" in m for m in lines) and any(
        "card(s) from the prefetch" in m for m in lines
    )


def test_the_report_link_opens_the_report(service, demo, ehr):
    answer = call(service, hook_request(demo, RUPTURE), ehr.token(aud(service))).json()
    link = answer["cards"][0]["links"][0]
    assert link["type"] == "absolute" and RUPTURE not in link["url"]
    page = httpx.get(link["url"], timeout=60)
    # the demo's Patient is named on the server: the page says the name, never the reference
    assert page.status_code == 200 and "<h1>Alliance report: Robin Rupture</h1>" in page.text
    assert f"Patient/{RUPTURE}" not in page.text and "<svg" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert httpx.get(link["url"][:-3] + "abc", timeout=10).status_code == 401


def test_refused_tokens_are_401_without_detail(service, demo, ehr):
    now = int(time.time())
    stranger = CdsTestClient("https://unknown.test.example", name="ehr")
    big = CdsTestClient("https://big-jwks.test.example")
    replayed = ehr.token(aud(service))
    assert call(service, hook_request(demo, RUPTURE), replayed).status_code == 200
    cases = {
        "bad signature": CdsTestClient(ehr.issuer, name="ehr").token(aud(service)),
        "token expired": ehr.token(aud(service), iat=now - 400, exp=now - 200),
        "aud is not this service's URL": ehr.token(f"{service.url}/cds-services"),
        "unknown issuer": stranger.token(aud(service)),
        "replayed jti": replayed,
        "larger than 65536 bytes": big.token(aud(service)),
    }
    for reason, token in cases.items():
        answer = call(service, hook_request(demo, RUPTURE), token)
        assert (answer.status_code, answer.content) == (401, b""), reason
    logged = [line.get("message", "") for line in service.log_lines() if "refused (401)" in line.get("message", "")]
    for reason in cases:
        assert any(reason in m for m in logged), (reason, logged)
    assert "afdemo" not in service.log.read_text()  # no patient id in the log, ever
    assert service.metric('alliance_fhir_cds_calls_total{outcome="refused"}') >= len(cases)


@pytest.mark.parametrize("user", [f"Patient/{RUPTURE}", "RelatedPerson/afdemo-parent", f"Patient/{RUPTURE}/_history/1"])
def test_a_patient_or_related_person_user_gets_no_cards(service, demo, ehr, user):
    answer = call(service, hook_request(demo, COUPLE_B, user=user), ehr.token(aud(service)))
    assert answer.status_code == 200 and answer.json() == {"cards": []}


@pytest.mark.parametrize("user", ["Patient/", "Patient", f"Patient/{RUPTURE}/_history/"])
def test_a_malformed_user_is_400_not_500(service, demo, ehr, user):
    answer = call(service, hook_request(demo, COUPLE_B, user=user), ehr.token(aud(service)))
    assert answer.status_code == 400 and answer.json() == {
        "error": "context.userId is missing or not a FHIR reference (Type/id)"
    }


def test_a_patient_with_no_scores_gets_no_cards(service, demo, ehr):
    patient = unique("noscores")
    with client(demo) as c:
        c.request("PUT", f"Patient/{patient}", json={"resourceType": "Patient", "id": patient})
    for prefetch in (None, prefetch_from_hapi(service, demo, patient)):
        answer = call(service, hook_request(demo, patient, prefetch), ehr.token(aud(service)))
        assert answer.status_code == 200 and answer.json() == {"cards": []}


def test_another_fhir_server_is_412_not_an_empty_answer(service, demo, ehr):
    # CDS Hooks 2.0 "HTTP Status Codes": 412 when the service cannot get the FHIR data it needs
    answer = call(service, hook_request("https://elsewhere.example/fhir", COUPLE_B), ehr.token(aud(service)))
    assert answer.status_code == 412 and "cards" not in answer.json()
    assert any("another FHIR server" in line.get("message", "") for line in service.log_lines())


HOSTILE_DETAIL = (
    "Call [the hotline](http://evil.example/phish) ![pixel](http://evil.example/p.png) "
    '<img src=x onerror="alert(1)"> <script>alert(2)</script> <http://evil.example/auto> &lt;b&gt;'
)


def forged_split_issue(patient: str, cites: list[str]) -> dict[str, Any]:
    """What anyone who can write DetectedIssues can write: our identifier system, our code, any text."""
    return {
        "resourceType": "DetectedIssue",
        "extension": [{"url": SIGNAL_STATUS_EXTENSION, "valueCode": "active"}],
        "identifier": [{"system": SIGNAL_IDENTIFIER_SYSTEM, "value": unique("forged")}],
        "status": "final",
        "code": {"coding": [{"system": PROJECT_CODESYSTEM, "code": "split-alliance"}]},
        "severity": "high",
        "patient": {"reference": f"Patient/{patient}"},
        "identifiedPeriod": {"start": "2026-09-14T10:00:00+00:00"},
        "evidence": [{"detail": [{"reference": ref} for ref in cites]}],
        "detail": HOSTILE_DETAIL,
    }


def test_a_forged_detected_issue_makes_no_card_and_its_text_reaches_none(reading_service, demo, ehr):
    # a split "recorded" for the rupture client, citing one of couple-a's real scores: detected again from the
    # cited scores there is no split (no joint session), so no card; and no server text is ever shown.
    # The service keeps no stored reads, so the call without prefetch reads HAPI, the forged issue with it.
    service = reading_service
    read_hapi = 'alliance_fhir_cds_seconds_count{source="fhir-server"}'
    with client(demo) as c:
        couple_a = next(iter(c.search("Observation", {"subject": "Patient/afdemo-couple-a", "_count": "1"})))
        made = c.request("POST", "DetectedIssue", json=forged_split_issue(RUPTURE, [f"Observation/{couple_a['id']}"]))
        forged = made.json()["id"]
        try:
            for prefetch in (prefetch_from_hapi(service, demo, RUPTURE), None):
                if prefetch is not None:
                    held = [e["resource"]["id"] for e in prefetch["issues"].get("entry", [])]
                    assert forged in held  # the EHR's prefetch carries the forged issue to the service
                reads = service.metric(read_hapi)
                answer = call(service, hook_request(demo, RUPTURE, prefetch), ehr.token(aud(service)))
                assert answer.status_code == 200, answer.text
                assert service.metric(read_hapi) == reads + (prefetch is None)  # without prefetch: read from HAPI
                assert codes(answer.json()) == [("alliance-repair", "info")]
                text = json.dumps(answer.json())
                assert "evil.example" not in text and "<img" not in text and "<script" not in text
                assert f"DetectedIssue/{forged}" not in text
        finally:
            c.request("DELETE", f"DetectedIssue/{forged}")


def test_the_split_card_is_the_split_detected_again_from_the_scores_its_issue_cites(service, demo, ehr):
    # couple-b's split needs couple-a's scores: the service reads those its issue cites and detects the split again;
    # the split is a rule of Kim's one card (split in session 2: 37.5 - 30.2 = 7.3 >= 5), and the card's numbers
    # are the recomputed ones (session 3: Jo 38.4, Kim 31.0), whether or not the EHR sent a prefetch
    for prefetch in (prefetch_from_hapi(service, demo, COUPLE_B), None):
        answer = call(service, hook_request(demo, COUPLE_B, prefetch), ehr.token(aud(service))).json()
        assert codes(answer) == [("alliance-rupture", "warning")]
        detail = answer["cards"][0]["detail"]
        assert "- Split alliance, since session 2:" in detail
        assert "the other member rated it 38.4; Kim Couple rated it 31." in detail
        assert "Jo Couple" not in detail  # the other member is never named in Kim's card


# ---- a third-party client: HealthChain's SandboxClient, in its own virtualenv -------------------

ROOT = Path(__file__).resolve().parents[2]
HEALTHCHAIN = "healthchain==0.16.1"  # pins fhir.resources < 8.2 and httpx < 0.28: never in our venv
HC_VENV = ROOT / ".cache" / "healthchain-venv"


@pytest.fixture(scope="module")
def healthchain_python() -> Path:
    """HealthChain's venv under .cache/ (git-ignored), made once per checkout from PyPI."""
    python, stamp = HC_VENV / "bin" / "python", HC_VENV / f".installed-{HEALTHCHAIN}"
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(HC_VENV)], check=True, timeout=300)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", HEALTHCHAIN]
        done = subprocess.run(pip, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"pip install {HEALTHCHAIN} failed: {done.stderr[-2000:]}"
        stamp.touch()
    return python


def test_healthchain_sandbox_client_sends_real_hook_requests(service, demo, ehr, healthchain_python, tmp_path):
    key = tmp_path / "ehr-key.pem"
    key.write_bytes(
        ehr.ec_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    command = [
        str(healthchain_python),
        str(ROOT / "scripts" / "healthchain_cds.py"),
        "--service",
        service.url,
        "--fhir-server",
        demo,
        "--key",
        str(key),
        "--kid",
        "ehr-es",
        "--issuer",
        ehr.issuer,
        "--expect",
        f"{RUPTURE}=alliance-repair",
        "--expect",
        "afdemo-steady=alliance-on-track",  # the quiet info card with the link (on by default)
        "--expect",
        f"{COUPLE_B}=alliance-rupture",  # one card for the situation: low, fallen, early and split
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "3 request(s)" in done.stdout and "0 failed" in done.stdout


def test_a_per_patient_signals_run_keeps_the_split_it_cannot_see(demo):
    """serve re-runs signals per patient; one client's scores cannot show a split, so it must stay open."""
    from alliance_fhir import load_catalog
    from alliance_fhir.server.demo import DEMO_TAG
    from alliance_fhir.server.signal_sync import run_signals

    with client(demo) as c:
        report, _, _ = run_signals(c, load_catalog(), patient=f"Patient/{COUPLE_B}", tag=DEMO_TAG)
        assert report.withdrawn == 0
        splits = [
            i
            for i in c.search("DetectedIssue", {"patient": f"Patient/{COUPLE_B}", "code": "split-alliance"})
            if i.get("status") == "final"
        ]
    assert len(splits) == 1
