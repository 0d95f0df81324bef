"""Issue 26's acceptance matrix, end to end on the real HAPI: every vendor profile, two servers.

The EHR is the suite's HAPI behind a vendor proxy; the results store is a second HAPI
(``ALLIANCE_FHIR_TEST_RESULTS_SERVER``). Per profile, one client with:

- Epic: a response in Epic's shape, read through the example form map
  ``form-maps/examples/epic-like-srs.json`` (``Questionnaire/example-epic-srs-9990000``, linkIds
  9990001-9990004, ``valueDecimal``): lines 8.5, 9.0, 7.5, 9.5 = SRS total 34.5, below 36.
- OpenEMR: a response in OpenEMR's shape, read through ``form-maps/examples/openemr-like-wai-sr.json``
  (its canonical, linkIds wai_q01-wai_q12, ``valueString`` labels): Very often, Very often, Always,
  Fairly often, Very often, Very often, Always, Fairly often, Very often, Very often, Fairly often,
  Very often = 4+4+5+3+4+4+5+3+4+4+3+4 = WAI-SR total 47; and our own SRS form (below).
- open, Oracle, MEDITECH, athenahealth: no vendor shape to read (Oracle documents social history
  only; MEDITECH's and athenahealth's form shapes are not public), so our own SRS form:
  9.1 + 8.4 + 6.0 + 7.5 = 31.0, below 36.

Every SRS total here is below 36, the level of concern, at the client's first session, so each
client has two signals (two DetectedIssues in the results store): low alliance (the authors' rule)
and the early alliance warning (low in the first 3 sessions; docs/signals.md). docs/your-ehr.md ("The acceptance matrix") holds the table.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from alliance_fhir import content_resources, load_catalog
from alliance_fhir.server.publish import publish_resources
from alliance_fhir.server.state import StateStore
from alliance_fhir.service.cds import CdsService
from alliance_fhir.service.cds_auth import CdsSettings
from alliance_fhir.signals.writeback import WRITEBACK_IDENTIFIER_SYSTEM

from ..conftest import ROOT
from ..integration.helpers import client
from .profiles import EPIC, ResourceRule
from .server import VendorServer, run_vendor_server

pytestmark = pytest.mark.integration

EXAMPLES = str(ROOT / "form-maps" / "examples")
CATALOG = load_catalog([EXAMPLES])
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json", "Cache-Control": "no-cache"}
EPIC_FORM = "Questionnaire/example-epic-srs-9990000"  # the example map's reference
OPENEMR_FORM = "http://example.org/openemr-like/Questionnaire/example-wai-sr"  # the example map's canonical
LABELS = {1: "Seldom", 2: "Sometimes", 3: "Fairly often", 4: "Very often", 5: "Always"}
WAI_ANSWERS = (4, 4, 5, 3, 4, 4, 5, 3, 4, 4, 3, 4)  # = 47
OWN_SRS = {1: 9.1, 2: 8.4, 3: 6.0, 4: 7.5}  # = 31.0

# What check plans per profile (the results store beside the EHR; open: one server), as check prints it.
PLAN = {
    "open": ("ok", "server-wide search", "observation", "one server: the source is its own results store"),
    "epic": ("MISSING", "per patient", "note", "DocumentReference create offered; Observation create offered"),
    "oracle": (
        "MISSING",
        "server-wide search answers, but the questionnaire search parameter is not listed",
        "note",
        "DocumentReference create offered; Observation create offered",
    ),
    "meditech": (
        "ok",
        "server-wide search",
        "communication",
        "Communication create offered; DocumentReference create not offered; Observation create not offered",
    ),
    "athena": (
        "ok",
        "server-wide search",
        "none",
        "no create of Observation, DocumentReference or Communication offered: results store only",
    ),
    "openemr": (
        "ok",
        "server-wide search",
        "none",
        "no create of Observation, DocumentReference or Communication offered: results store only",
    ),
}
# What the EHR receives per route: the resource type of one write-back per scored form.
WRITTEN_BACK = {"note": "DocumentReference", "communication": "Communication"}
SIGNALS = ["early-alliance-warning", "low-alliance"]
# The card of a client whose only SRS is below 36 at session 1: low, in the first sessions, high concern
# (docs/signals.md: below the level of concern is high concern; names and numbers, no ids).
CARD_SUMMARY = "SRS {total} at session 1; below 36, the level of concern; in the first sessions. High concern."
PER_PATIENT = {"epic", "oracle"}  # check's read mode says these need --patients


@pytest.fixture
def store(results_fhir_server: str) -> str:
    """The results store: the suite's second HAPI (tests/conftest.py)."""
    return results_fhir_server


@pytest.fixture(scope="module")
def published(fhir_server: str) -> str:
    """Our Questionnaires and the vendors' own forms on the EHR (an EHR holds its forms)."""
    with client(fhir_server) as c:
        assert not [r for r in publish_resources(c, content_resources(CATALOG)) if r.action == "failed"]
    put(fhir_server, {"resourceType": "Questionnaire", "id": EPIC_FORM.split("/")[1], "status": "active"})
    return fhir_server


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alliance_fhir", *args], capture_output=True, text=True, timeout=300)


def put(base: str, resource: dict[str, Any]) -> None:
    answer = httpx.put(
        f"{base}/{resource['resourceType']}/{resource['id']}", json=resource, headers=FHIR_JSON, timeout=30
    )
    assert answer.status_code in (200, 201), answer.text


def post(base: str, resource: dict[str, Any]) -> str:
    answer = httpx.post(f"{base}/{resource['resourceType']}", json=resource, headers=FHIR_JSON, timeout=30)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def epic_response(patient: str) -> dict[str, Any]:
    lines = {"9990001": 8.5, "9990002": 9.0, "9990003": 7.5, "9990004": 9.5}  # = 34.5
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": EPIC_FORM,
        "status": "completed",
        "subject": {"reference": f"Patient/{patient}"},
        "authored": "2026-11-02T10:00:00Z",
        "item": [{"linkId": k, "answer": [{"valueDecimal": v}]} for k, v in lines.items()],
    }


def openemr_response(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": OPENEMR_FORM,
        "status": "completed",
        "subject": {"reference": f"Patient/{patient}"},
        "authored": "2026-11-02T10:00:00Z",
        "item": [
            {"linkId": f"wai_q{n:02d}", "answer": [{"valueString": LABELS[value]}]}
            for n, value in enumerate(WAI_ANSWERS, start=1)
        ],
    }


@dataclass(frozen=True)
class Client:
    """A client on the EHR: its id and the hand-computed total of each of its responses (by server id)."""

    patient: str
    totals: dict[str, float]


def a_client(upstream: str, profile: str, make_response: Any) -> Client:
    """One patient with the profile's responses, stored straight on HAPI (the EHR's own data)."""
    patient = f"mx-{profile}-{uuid.uuid4().hex[:8]}"
    put(upstream, {"resourceType": "Patient", "id": patient, "name": [{"given": ["Sam"], "family": "Matrix"}]})
    totals: dict[str, float] = {}
    if profile == "epic":
        totals[post(upstream, epic_response(patient))] = 34.5
        return Client(patient, totals)
    if profile == "openemr":
        totals[post(upstream, openemr_response(patient))] = 47
    own = make_response("srs", OWN_SRS, subject={"reference": f"Patient/{patient}"})
    own.pop("id")
    totals[post(upstream, own)] = 31.0
    return Client(patient, totals)


def sync(ehr: VendorServer, store: str, state: Path, who: Client, *extra: str) -> subprocess.CompletedProcess[str]:
    """sync as check's plan says: per patient (a file of one) where the server-wide read is refused."""
    if ehr.profile.name.split("-")[0] in PER_PATIENT:
        listing = state.with_suffix(".patients")
        listing.write_text(f"Patient/{who.patient}\n")
        reads = ("--patients", str(listing))
    else:
        reads = ("--patient", f"Patient/{who.patient}")
    target = ("--results-server", store) if ehr.profile.name != "open" else ()
    return cli(
        "sync", "--server", ehr.url, *target, "--state", str(state), "--instruments", EXAMPLES, "--signals", "--json",
        *reads, *extra,
    )  # fmt: skip


def search(base: str, rtype: str, params: dict[str, str]) -> list[dict[str, Any]]:
    answer = httpx.get(f"{base}/{rtype}", params={**params, "_count": "100"}, headers=FHIR_JSON, timeout=30)
    assert answer.status_code == 200, answer.text
    return [e["resource"] for e in answer.json().get("entry", [])]


def results_of(store: str, source: str, rtype: str, patient: str, *, one_server: bool) -> list[dict[str, Any]]:
    """Our results for the patient in the store, found by the source's absolute reference (one server: relative)."""
    subject = f"Patient/{patient}" if one_server else f"{source}/Patient/{patient}"
    key = "patient" if rtype == "DetectedIssue" else "subject"
    return search(store, rtype, {key: subject})


def written_back(upstream: str, rtype: str, patient: str) -> list[dict[str, Any]]:
    found = search(upstream, rtype, {"subject": f"Patient/{patient}"})
    return [r for r in found if any(i.get("system") == WRITEBACK_IDENTIFIER_SYSTEM for i in r.get("identifier", []))]


def refused_writes(ehr: VendorServer) -> list[tuple[str, str, int, str]]:
    """Writes the proxy refused. Left out: the base-URL batch in which sync's plan reads /metadata and our
    Questionnaires at once (a read: refused where the vendor offers no batch, it reads them one by one)."""
    base = "/" + ehr.url.split("://", 1)[1].split("/", 1)[1].rstrip("/")
    return [r for r in ehr.proxy.log.refused if r[0] in ("POST", "PUT", "PATCH", "DELETE") and r[1].rstrip("/") != base]


def check_lines(stdout: str) -> dict[str, tuple[str, str]]:
    """check's text output: each tab-separated row (check or route) by its first column."""
    rows = [line.split("\t") for line in stdout.splitlines() if line.count("\t") == 2]
    return {row[0]: (row[1], row[2]) for row in rows}


def versions(resources: list[dict[str, Any]]) -> dict[str, str]:
    return {r["id"]: r["meta"]["versionId"] for r in resources}


def total_of(observation: dict[str, Any]) -> float:
    return float(observation["valueQuantity"]["value"])


@pytest.mark.parametrize("profile", ["open", "epic", "oracle", "meditech", "athena", "openemr"])
def test_matrix(profile, vendor_server, published, store, make_response, tmp_path):
    """check's plan, then sync: exact scores and signals in the store, the EHR only what it accepts,
    a re-run writes nothing, and the CDS card computed from the store."""
    ehr = vendor_server(profile)
    one_server = profile == "open"
    results = ehr.upstream if one_server else store
    read_ok, read_mode, route, why = PLAN[profile]

    # 8. check prints the read mode and each write route with its reason
    args = ("check", "--server", ehr.url) + (() if one_server else ("--results-server", store))
    plan = check_lines(cli(*args).stdout)
    assert plan["read mode"][0] == read_ok and plan["read mode"][1].startswith(read_mode)
    assert plan["scores"] == (route, why)
    assert plan["signals"][0] == ("observation" if one_server else route)

    who = a_client(ehr.upstream, profile, make_response)
    state = tmp_path / "state.sqlite"
    first = sync(ehr, store, state, who)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert (report["written"], report["failed"]) == (len(who.totals), 0)

    # 1. + 2. scored exactly (hand-computed above), full results in the results store
    scores = results_of(results, ehr.url, "Observation", who.patient, one_server=one_server)
    by_response = {o["derivedFrom"][0]["reference"].split("/")[-3]: total_of(o) for o in scores}
    assert by_response == who.totals
    issues = results_of(results, ehr.url, "DetectedIssue", who.patient, one_server=one_server)
    assert sorted(i["code"]["coding"][0]["code"] for i in issues) == SIGNALS
    if not one_server:
        assert written_back(ehr.upstream, "Observation", who.patient) == []  # no score Observation in the EHR

    # 3. the EHR receives only what it accepts: one write-back per scored form on the planned route
    back = WRITTEN_BACK.get(route)
    if back:
        assert len(written_back(ehr.upstream, back, who.patient)) == len(who.totals)
    assert refused_writes(ehr) == []  # zero refused writes after check's plan

    # 4. a re-run writes nothing, in the store or the EHR
    before = versions(scores + issues)
    again = sync(ehr, store, state, who)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["written"] == 0
    after = results_of(results, ehr.url, "Observation", who.patient, one_server=one_server)
    after += results_of(results, ehr.url, "DetectedIssue", who.patient, one_server=one_server)
    assert versions(after) == before
    if back:
        assert len(written_back(ehr.upstream, back, who.patient)) == len(who.totals)
    assert refused_writes(ehr) == []

    # 6. the CDS card comes from the results store (the EHR holds no score: the card could come from nowhere else)
    with StateStore(tmp_path / "cds.sqlite") as cds_state, client(ehr.url) as source, client(results) as kept:
        cds = CdsService.build(source, CATALOG, cds_state, CdsSettings(), "http://127.0.0.1:9", None, kept)
        request = {
            "hook": "patient-view",
            "hookInstance": f"matrix-{profile}",
            "fhirServer": ehr.url,
            "context": {"patientId": who.patient, "userId": "Practitioner/matrix"},
        }
        cards = cds.answer(request)["cards"]
    srs_total = 34.5 if profile == "epic" else 31
    expected = [CARD_SUMMARY.format(total=f"{srs_total:g}")]
    if profile == "openemr":
        expected.append("WAI-SR 47 at session 1, on track.")  # no WAI-SR cutoff (docs/signals.md): no signal
    assert [card["summary"] for card in cards] == expected
    assert who.patient not in cards[0]["summary"]


def test_matrix_epic_killed_mid_run_and_run_again_converges(vendor_server, published, store, make_response, tmp_path):
    """5. SIGKILL once the results store has a score, then a re-run: exactly one Observation per response
    in the store and one note per session in the EHR (a note whose EHR answer came after the kill is
    adopted by the re-run's search by patient: docs/write-back.md, "The one race that remains")."""
    ehr = vendor_server("epic")
    clients = [a_client(ehr.upstream, "epic", make_response) for _ in range(8)]
    listing = tmp_path / "caseload.patients"
    listing.write_text("".join(f"Patient/{c.patient}\n" for c in clients))
    state = tmp_path / "state.sqlite"
    command = [
        sys.executable, "-m", "alliance_fhir", "sync", "--server", ehr.url, "--results-server", store,
        "--state", str(state), "--instruments", EXAMPLES, "--patients", str(listing),
        "--concurrency", "1", "--batch-size", "1",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        _until_a_score_lands(store, ehr.url, clients, process, timeout=120)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    killed_before_the_end = sum(bool(written_back(ehr.upstream, "DocumentReference", c.patient)) for c in clients)
    assert killed_before_the_end < len(clients)  # the kill came mid-run: some sessions had no note yet

    run = cli(
        "sync", "--server", ehr.url, "--results-server", store, "--state", str(state), "--instruments", EXAMPLES,
        "--patients", str(listing), "--json",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    for c in clients:
        scores = results_of(store, ehr.url, "Observation", c.patient, one_server=False)
        assert [total_of(o) for o in scores] == [34.5]  # one Observation per response, none twice
        assert len(written_back(ehr.upstream, "DocumentReference", c.patient)) == 1  # one note per session
    assert refused_writes(ehr) == []


def _until_a_score_lands(store: str, source: str, clients: list[Client], process: Any, timeout: float) -> None:
    """Poll the results store (each search's round trip paces the loop) until one of the clients has a
    score; bounded by ``timeout`` and by the process still running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(results_of(store, source, "Observation", c.patient, one_server=False) for c in clients[:2]):
            return
        if process.poll() is not None:
            raise AssertionError(f"sync ended (exit {process.returncode}) before a score was seen in the store")
    raise AssertionError(f"no Observation reached the results store within {timeout:.0f} s")


def _refuse_notes(resource: dict[str, Any]) -> str | None:
    return "this note type is not built at this site"


def test_matrix_a_note_the_ehr_refuses_is_listed_by_failures(published, fhir_server, store, make_response, tmp_path):
    """7. The Epic-shaped EHR refuses the note (a site that has not built the note type): sync exits 1 with
    one failed line, the score is in the results store all the same, and failures lists the refused write."""
    strict = replace(
        EPIC,
        name="epic-no-note-type",  # read per patient, as Epic
        resources={
            **(EPIC.resources or {}),
            "DocumentReference": ResourceRule(frozenset({"read", "search-type", "create"}), guard=_refuse_notes),
        },
    )
    with run_vendor_server(strict, fhir_server) as ehr:
        who = a_client(ehr.upstream, "epic", make_response)
        state = tmp_path / "state.sqlite"
        run = sync(ehr, store, state, who)
        assert run.returncode == 1
        failed = [line for line in run.stderr.splitlines() if line.startswith("failed:")]
        assert len(failed) == 1 and "EHR note (DocumentReference): refused: HTTP 403" in failed[0], run.stderr
        listed = cli("failures", "--server", ehr.url, "--results-server", store, "--state", str(state))
        refused = refused_writes(ehr)
    assert listed.returncode == 1
    assert "this note type is not built at this site" in listed.stdout + listed.stderr
    assert [total_of(o) for o in results_of(store, ehr.url, "Observation", who.patient, one_server=False)] == [34.5]
    assert written_back(fhir_server, "DocumentReference", who.patient) == []
    assert [(m, p.rsplit("/", 1)[-1], s) for m, p, s, _ in refused] == [("POST", "DocumentReference", 403)]
