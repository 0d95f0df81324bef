"""Write-back routes through the vendor-shaped servers, on real HAPI: the EHR gets only what it accepts.

The EHR is the suite's HAPI behind a vendor proxy; the results store is a second HAPI
(``ALLIANCE_FHIR_TEST_RESULTS_SERVER``). The client answered our SRS: session 1 lines 9.1, 8.4,
6.0, 7.5 = 31.0, below 36 (hand-computed); a corrected form says 9.1, 8.4, 7.0, 7.5 = 32.0.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from dataclasses import replace
from typing import Any

import httpx
import pytest

from alliance_fhir.signals.writeback import WRITEBACK_IDENTIFIER_SYSTEM

from .profiles import EPIC, ResourceRule
from .server import run_vendor_server

pytestmark = pytest.mark.integration

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
SESSION = {1: 9.1, 2: 8.4, 3: 6.0, 4: 7.5}
CORRECTED = {1: 9.1, 2: 8.4, 3: 7.0, 4: 7.5}


@pytest.fixture
def store(results_fhir_server: str) -> str:
    """The results store: the suite's second HAPI (tests/conftest.py)."""
    return results_fhir_server


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alliance_fhir", *args], capture_output=True, text=True, timeout=300)


def put(base: str, resource: dict[str, Any]) -> None:
    answer = httpx.put(
        f"{base}/{resource['resourceType']}/{resource['id']}", json=resource, headers=FHIR_JSON, timeout=30
    )
    assert answer.status_code in (200, 201), answer.text


@pytest.fixture
def client_on_the_ehr(fhir_server: str, store: str, make_response):
    """A patient with one SRS response on the EHR; the store holds copies (references only)."""
    patient = f"wb-{uuid.uuid4().hex[:10]}"
    rid = f"wbqr-{uuid.uuid4().hex[:10]}"

    def answer(values: dict[int, float]) -> None:
        response = make_response("srs", values, rid=rid, subject={"reference": f"Patient/{patient}"})
        for base in (fhir_server, store):
            put(base, response)

    for base in (fhir_server, store):
        put(base, {"resourceType": "Patient", "id": patient})
    answer(SESSION)
    return patient, answer


def ours(base: str, rtype: str, patient: str) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{base}/{rtype}",
        params={"subject": f"Patient/{patient}", "_count": "50"},
        headers={**FHIR_JSON, "Cache-Control": "no-cache"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    resources = [e["resource"] for e in answer.json().get("entry", [])]
    return [
        r for r in resources if any(i.get("system") == WRITEBACK_IDENTIFIER_SYSTEM for i in r.get("identifier", []))
    ]


def sync(url: str, store: str, patient: str, state: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli(
        "sync", "--server", url, "--results-server", store, "--state", state, "--patient", f"Patient/{patient}", *extra
    )


def refused_writes(ehr: Any) -> list[tuple[Any, ...]]:
    """Writes of resources the proxy refused. Left out: the base-URL batch sync's plan sends to read /metadata
    and our Questionnaires in one request (a read; on a refusal it reads them one by one)."""
    base = ehr.url.split("://", 1)[1].split("/", 1)[1]
    return [r for r in ehr.proxy.log.refused if r[0] in ("POST", "PUT") and r[1].rstrip("/") != "/" + base.rstrip("/")]


def text_of(note: dict[str, Any]) -> str:
    import base64

    return base64.b64decode(note["content"][0]["attachment"]["data"]).decode("utf-8")


def test_epic_gets_one_note_per_session_across_reruns_and_a_changed_score_replaces_it(
    vendor_server, fhir_server, store, client_on_the_ehr, tmp_path
):
    patient, answer = client_on_the_ehr
    ehr = vendor_server("epic")
    state = str(tmp_path / "state.db")

    plan = cli("check", "--server", ehr.url, "--results-server", store, "--json")
    routes = {r["kind"]: r["route"] for r in json.loads(plan.stdout)["routes"]}
    assert routes == {"scores": "note", "signals": "note"}

    first = sync(ehr.url, store, patient, state)
    assert first.returncode == 0, first.stderr
    notes = ours(fhir_server, "DocumentReference", patient)
    assert len(notes) == 1
    assert "Total 31 of 40: below 36, the level of concern." in text_of(notes[0])
    assert refused_writes(ehr) == []  # zero refused writes after check's plan

    again = sync(ehr.url, store, patient, state)
    assert again.returncode == 0, again.stderr
    assert len(ours(fhir_server, "DocumentReference", patient)) == 1  # a re-run writes nothing

    answer(CORRECTED)
    changed = sync(ehr.url, store, patient, state)
    assert changed.returncode == 0, changed.stderr
    notes = ours(fhir_server, "DocumentReference", patient)
    assert len(notes) == 2, (
        changed.stderr + changed.stdout
    )  # Epic offers no Clinical Notes update: a successor replaces the first note
    successor = next(n for n in notes if n.get("relatesTo"))
    first_note = next(n for n in notes if not n.get("relatesTo"))
    assert successor["relatesTo"][0] == {
        "code": "replaces",
        "target": {"reference": f"DocumentReference/{first_note['id']}"},
    }
    assert "Total 32 of 40" in text_of(successor)
    assert refused_writes(ehr) == []


def test_meditech_gets_a_communication(vendor_server, fhir_server, store, client_on_the_ehr, tmp_path):
    patient, _ = client_on_the_ehr
    ehr = vendor_server("meditech")
    state = str(tmp_path / "state.db")
    run = sync(ehr.url, store, patient, state)
    assert run.returncode == 0, run.stderr
    messages = ours(fhir_server, "Communication", patient)
    assert len(messages) == 1 and "Total 31 of 40" in messages[0]["payload"][0]["contentString"]
    assert sync(ehr.url, store, patient, state).returncode == 0
    assert len(ours(fhir_server, "Communication", patient)) == 1
    assert refused_writes(ehr) == []


def test_openemr_gets_nothing_and_the_store_everything(vendor_server, fhir_server, store, client_on_the_ehr, tmp_path):
    patient, _ = client_on_the_ehr
    ehr = vendor_server("openemr")
    run = sync(ehr.url, store, patient, str(tmp_path / "state.db"))
    assert run.returncode == 0, run.stderr
    assert "scores: none" in run.stderr
    assert ours(fhir_server, "DocumentReference", patient) == [] and ours(fhir_server, "Communication", patient) == []
    observations = httpx.get(
        f"{store}/Observation",
        params={"subject": f"{ehr.url}/Patient/{patient}", "_summary": "count"},  # absolute on the EHR
        headers=FHIR_JSON,
        timeout=30,
    )
    assert observations.json()["total"] == 1
    assert refused_writes(ehr) == []


def test_the_open_server_is_its_own_results_store_on_the_observation_route(vendor_server):
    run = cli("check", "--server", vendor_server("open").url, "--json")
    assert run.returncode == 0
    routes = {r["kind"]: (r["route"], r["reason"]) for r in json.loads(run.stdout)["routes"]}
    assert routes["scores"] == ("observation", "one server: the source is its own results store")


def refuse_notes(resource: dict[str, Any]) -> str | None:
    return "this note type is not built at this site"


def test_a_note_the_ehr_refuses_is_a_failure_that_failures_lists(fhir_server, store, client_on_the_ehr, tmp_path):
    patient, _ = client_on_the_ehr
    strict = replace(
        EPIC,
        name="epic-strict",
        resources={
            **(EPIC.resources or {}),
            "DocumentReference": ResourceRule(frozenset({"read", "search-type", "create"}), guard=refuse_notes),
        },
    )
    state = str(tmp_path / "state.db")
    with run_vendor_server(strict, fhir_server) as ehr:
        run = sync(ehr.url, store, patient, state)
        assert run.returncode == 1
        failed = [line for line in run.stderr.splitlines() if line.startswith("failed:")]
        assert len(failed) == 1 and "EHR note (DocumentReference): refused: HTTP 403" in failed[0]
        assert "this note type is not built at this site" in failed[0]
        listed = cli("failures", "--server", ehr.url, "--results-server", store, "--state", state)
    assert listed.returncode == 1
    assert "not built at this site" in listed.stdout + listed.stderr
    assert ours(fhir_server, "DocumentReference", patient) == []
