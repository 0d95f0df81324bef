"""Sync against the real HAPI: exact values, idempotence, amendments, retractions, faults, SIGKILL."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from alliance_fhir import content_resources, load_catalog
from alliance_fhir.server.publish import publish_resources
from alliance_fhir.server.state import StateStore
from alliance_fhir.server.sync import SyncOptions, run_sync
from alliance_fhir.server.transactions import put_by_id

from ..support.proxy import ForwardingProxy, ProxyHandler
from .fault_proxy import FaultProxy
from .helpers import client, unique

pytestmark = pytest.mark.integration
CATALOG = load_catalog()
CS = "http://alliance-fhir.org/fhir/CodeSystem/alliance-fhir"
WAI = ["seldom", "sometimes", "fairly-often", "very-often", "always"]


@pytest.fixture(scope="module")
def server(fhir_server: str) -> str:
    with client(fhir_server) as c:
        assert not [r for r in publish_resources(c, content_resources(CATALOG)) if r.action == "failed"]
    return fhir_server


def wai_sr(patient: str, rid: str, value: int) -> dict[str, Any]:
    """WAI-SR with every item answered `value`: total 12 x value, subscales 4 x value."""
    return {
        "resourceType": "QuestionnaireResponse",
        "id": rid,
        "status": "completed",
        "questionnaire": "http://alliance-fhir.org/fhir/Questionnaire/wai-sr|1.0.0",
        "subject": {"reference": patient},
        "authored": "2026-11-02T10:00:00Z",
        "item": [
            {"linkId": str(n), "answer": [{"valueCoding": {"system": CS, "code": f"wai-sr-{WAI[value - 1]}"}}]}
            for n in range(1, 13)
        ],
    }


def srs(patient: str, rid: str, lines: tuple[float, float, float, float]) -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "id": rid,
        "status": "completed",
        "questionnaire": "http://alliance-fhir.org/fhir/Questionnaire/srs",  # unversioned: latest version
        "subject": {"reference": patient},
        "authored": "2026-11-02T11:00:00Z",
        "item": [{"linkId": str(n), "answer": [{"valueDecimal": v}]} for n, v in enumerate(lines, 1)],
    }


def post_all(base: str, resources: list[dict[str, Any]]) -> None:
    """PUT the responses (and their patients: HAPI refuses dangling local references) by id."""
    patients = {r["subject"]["reference"] for r in resources}
    resources = [{"resourceType": "Patient", "id": p.split("/")[1]} for p in sorted(patients)] + resources
    with client(base) as c:
        put_by_id(c, resources, batch=100)


def caseload(patient: str, n: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """n responses alternating WAI-SR and SRS, with the hand-computed total of each."""
    resources: list[dict[str, Any]] = []
    expected: dict[str, float] = {}
    for i in range(n):
        rid = f"{patient.split('/')[1]}-{i}"
        if i % 2 == 0:
            value = 1 + i % 5
            resources.append(wai_sr(patient, rid, value))
            expected[rid] = 12 * value
        else:
            lines = (9.5, 8.0, 7.3, float(i % 10))
            resources.append(srs(patient, rid, lines))
            expected[rid] = round(9.5 + 8.0 + 7.3 + i % 10, 1)
    return resources, expected


def observations(base: str, patient: str) -> list[dict[str, Any]]:
    """The patient's Observations now (no-cache: HAPI would otherwise replay a search for 60 s)."""
    with client(base) as c:
        page = c.request(
            "GET", "Observation", params={"subject": patient, "_count": "500"}, headers={"Cache-Control": "no-cache"}
        ).json()
    assert not any(link["relation"] == "next" for link in page.get("link", []))
    return [e["resource"] for e in page.get("entry", [])]


def sync(base: str, state: Path, patient: str, **settings: Any):  # noqa: ANN201
    with client(base, **settings) as c, StateStore(state) as store:
        return run_sync(c, CATALOG, store, SyncOptions(patient=patient))


class CountingProxy(ForwardingProxy):
    """Forwards to HAPI and notes each request (method, path, and a Bundle's entry methods)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.seen: list[str] = []

    def handle(self, request: ProxyHandler, body: bytes) -> None:
        shown = f"{request.command} {request.path.partition('?')[0]}"
        if body.startswith(b"{"):
            entries = json.loads(body).get("entry", [])
            shown += f" ({', '.join(e['request']['method'] for e in entries)})" if entries else ""
        with self.lock:
            self.seen.append(shown)
        super().handle(request, body)


def by_response(found: list[dict[str, Any]]) -> dict[str, Any]:
    return {o["derivedFrom"][0]["reference"].split("/")[1]: o["valueQuantity"]["value"] for o in found}


def test_round_trip_exact_values_then_nothing_to_write(server, tmp_path):
    patient = f"Patient/{unique('p')}"
    resources, expected = caseload(patient, 45)
    post_all(server, resources)
    with CountingProxy(server) as proxy:  # the no-op re-sync's requests are counted on the wire
        report = sync(proxy.url, tmp_path / "s.sqlite", patient, page_size=10, batch_size=7)  # 45: 5 pages
        assert (report.found, report.written, report.failed) == (45, 45, 0)
        found = observations(server, patient)
        assert len(found) == 45 and by_response(found) == expected
        proxy.seen.clear()
        again = sync(proxy.url, tmp_path / "s.sqlite", patient, page_size=10)
    assert (again.written, again.unchanged) == (0, 45)
    # The issue's bound, 2 requests + 1 per page: one batch (/metadata and our Questionnaires' ids),
    # the five pages, and the ledger's Observations checked once.
    assert len(proxy.seen) == again.requests == 2 + 5, proxy.seen
    assert proxy.seen.count("POST /fhir (GET, GET)") == 1 and proxy.seen.count("POST /fhir/Observation/_search") == 1


def test_amended_and_entered_in_error_propagate(server, tmp_path):
    patient = f"Patient/{unique('p')}"
    first, second = wai_sr(patient, unique("a"), 3), wai_sr(patient, unique("e"), 4)
    post_all(server, [first, second])
    sync(server, tmp_path / "s.sqlite", patient)
    amended = copy.deepcopy(first)
    amended["status"] = "amended"
    amended["item"][0]["answer"] = [{"valueCoding": {"system": CS, "code": "wai-sr-always"}}]
    retracted = dict(copy.deepcopy(second), status="entered-in-error")
    post_all(server, [amended, retracted])
    report = sync(server, tmp_path / "s.sqlite", patient)
    assert (report.written, report.retracted) == (1, 1)
    found = {o["derivedFrom"][0]["reference"].split("/")[1]: o for o in observations(server, patient)}
    assert (
        found[first["id"]]["status"] == "amended" and found[first["id"]]["valueQuantity"]["value"] == 38
    )  # 36 - 3 + 5
    assert found[first["id"]]["derivedFrom"][0]["reference"].endswith("/_history/2")
    assert found[second["id"]]["status"] == "entered-in-error"
    assert len(found) == 2


def test_response_written_during_a_sync_is_picked_up_next_time(server, tmp_path):
    patient = f"Patient/{unique('p')}"
    post_all(server, [wai_sr(patient, unique("r"), 2) for _ in range(5)])
    late = wai_sr(patient, unique("late"), 5)
    posted: list[bool] = []

    def post_late(_report) -> None:  # noqa: ANN001
        if not posted:
            post_all(server, [late])
            posted.append(True)

    with client(server, page_size=2) as c, StateStore(tmp_path / "s.sqlite") as store:
        run_sync(c, CATALOG, store, SyncOptions(patient=patient), post_late)
    report = sync(server, tmp_path / "s.sqlite", patient)
    assert late["id"] in by_response(observations(server, patient))
    assert len(observations(server, patient)) == 6 and report.failed == 0


def test_bad_data_on_the_server_is_reported_and_skipped(server, tmp_path):
    patient = f"Patient/{unique('p')}"
    good = [wai_sr(patient, unique("g"), 4) for _ in range(3)]
    bad = wai_sr(patient, unique("bad"), 4)
    bad["item"] = bad["item"][:5]  # 5 of 12 answered: too many missing
    future = wai_sr(patient, unique("v9"), 4)
    future["questionnaire"] = future["questionnaire"].replace("|1.0.0", "|9.0")  # a version we do not know
    post_all(server, good + [bad, future])
    report = sync(server, tmp_path / "s.sqlite", patient)
    assert report.written == 3 and report.failed == 2
    reasons = {f.resource: f.reason for f in report.failures}
    assert "too many missing" in reasons[f"QuestionnaireResponse/{bad['id']}"]
    assert "unknown version '9.0'" in reasons[f"QuestionnaireResponse/{future['id']}"]


def test_faults_give_the_same_final_state(server, tmp_path):
    patient = f"Patient/{unique('p')}"
    resources, expected = caseload(patient, 40)
    post_all(server, resources)
    with FaultProxy(server, slow_seconds=2.5) as proxy:
        report = sync(proxy.url, tmp_path / "s.sqlite", patient, page_size=8, batch_size=4, timeout=2.0, concurrency=3)
    assert set(proxy.injected) >= {"503", "429-date", "drop-before", "drop-after", "slow"}, proxy.injected
    assert report.failed == 0 and report.written == 40
    found = observations(server, patient)
    identifiers = Counter(o["identifier"][0]["value"] for o in found)
    assert len(found) == 40 and max(identifiers.values()) == 1  # no duplicates
    assert by_response(found) == expected


def test_sigkill_mid_sync_then_rerun_converges(server, tmp_path):
    patient = f"Patient/{unique('p')}"
    resources, expected = caseload(patient, 300)
    post_all(server, resources)
    env = {
        **os.environ,
        "ALLIANCE_FHIR_STATE_DB": str(tmp_path / "s.sqlite"),
        "ALLIANCE_FHIR_BATCH_SIZE": "5",
        "ALLIANCE_FHIR_PAGE_SIZE": "20",
        "ALLIANCE_FHIR_CONCURRENCY": "1",
    }
    command = [sys.executable, "-m", "alliance_fhir", "sync", "--server", server, "--patient", patient, "--json"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(observations(server, patient)) < 20:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(observations(server, patient))
    assert 0 < partial < 300, f"kill landed outside the run ({partial} written)"
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    found = observations(server, patient)
    assert len(found) == 300 and by_response(found) == expected
    assert max(Counter(o["identifier"][0]["value"] for o in found).values()) == 1
