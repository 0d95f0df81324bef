"""Today's ``check`` and ``sync`` against the vendor-shaped servers (before issue 26's routes exist).

These record what the commands do now: ``check`` says per profile what it finds, and ``sync``
against the Epic profile fails loudly (non-zero exit, one line per failure) instead of reporting
writes that did not happen. When issue 26's read modes and write routes land, these expectations
change with them (docs/your-ehr.md keeps the matrix).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from urllib.parse import urlsplit

import httpx
import pytest

pytestmark = pytest.mark.integration

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alliance_fhir", *args], capture_output=True, text=True, timeout=300)


def checks(url: str) -> tuple[int, dict[str, bool]]:
    run = cli("check", "--server", url, "--json")
    return run.returncode, {c["check"]: c["ok"] for c in json.loads(run.stdout)["checks"]}


def test_check_on_the_open_profile_finds_everything_sync_needs(vendor_server):
    code, found = checks(vendor_server("open").url)
    assert code == 0
    assert found == dict.fromkeys(
        [
            "FHIR version",
            "transactions",
            "search responses",
            "conditional update",
            "conditional create",
            "write mode",
            "credentials",
            "read mode",
        ],
        True,
    )


@pytest.mark.parametrize("name", ["meditech", "athena", "openemr"])
def test_check_today_sees_no_transactions_or_conditional_writes_but_misses_the_refused_observation_create(
    vendor_server, name
):
    """Today's check passes these servers with write mode 'search', although they refuse Observation
    create (their profiles): it does not read the Observation interactions. Issue 26's route
    planning (another part) is what closes this; the sync of these profiles then fails per response."""
    code, found = checks(vendor_server(name).url)
    assert code == 0
    assert (found["transactions"], found["conditional update"], found["conditional create"]) == (False, False, False)
    assert found["search responses"] and found["write mode"] and found["credentials"]


def test_check_on_oracle_misses_a_server_wide_response_search(vendor_server):
    code, found = checks(vendor_server("oracle").url)
    assert code == 1
    assert found["search responses"] is False and found["transactions"] is False


def test_check_on_epic_stops_at_the_refused_server_wide_search_with_one_line(vendor_server):
    """Today's credentials probe is a server-wide QuestionnaireResponse search; Epic refuses it (403),
    which check reports as one error line and exit 2 instead of its table."""
    run = cli("check", "--server", vendor_server("epic").url)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "patient=" in lines[0]


@pytest.fixture
def our_response_on_the_ehr(fhir_server: str, make_response) -> str:
    """A patient whose SRS response (our own form: 8.5, 9.0, 7.5, 9.5) is in the EHR's store."""
    patient = f"vendor-sync-{uuid.uuid4().hex[:10]}"
    assert httpx.put(
        f"{fhir_server}/Patient/{patient}",
        json={"resourceType": "Patient", "id": patient},
        headers=FHIR_JSON,
        timeout=30,
    ).status_code in (200, 201)
    response = make_response("srs", {1: 8.5, 2: 9.0, 3: 7.5, 4: 9.5}, subject={"reference": f"Patient/{patient}"})
    response.pop("id")
    assert (
        httpx.post(f"{fhir_server}/QuestionnaireResponse", json=response, headers=FHIR_JSON, timeout=30).status_code
        == 201
    )
    return patient


def observations_of(fhir_server: str, patient: str) -> int:
    answer = httpx.get(
        f"{fhir_server}/Observation",
        params={"subject": f"Patient/{patient}", "_summary": "count"},
        headers=FHIR_JSON,
        timeout=30,
    )
    return int(answer.json()["total"])


def test_sync_against_epic_fails_loudly_at_the_server_wide_search(vendor_server, our_response_on_the_ehr, tmp_path):
    run = cli("sync", "--server", vendor_server("epic").url, "--state", str(tmp_path / "state.db"))
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "patient=" in lines[0]
    assert run.stdout.strip() == ""  # no summary that could be read as work done


def test_sync_against_epic_for_one_patient_reports_the_refused_write_and_claims_none(
    vendor_server, fhir_server, our_response_on_the_ehr, tmp_path
):
    patient = our_response_on_the_ehr
    server = vendor_server("epic")
    run = cli("sync", "--server", server.url, "--state", str(tmp_path / "state.db"), "--patient", f"Patient/{patient}")

    assert run.returncode == 1
    header, row = run.stdout.strip().splitlines()[-2:]
    summary = dict(zip(header.split("\t"), row.split("\t"), strict=True))
    assert (summary["found"], summary["scored"], summary["written"], summary["failed"]) == ("1", "1", "0", "1")
    failed = [line for line in run.stderr.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and "HTTP 403" in failed[0] and "vital signs" in failed[0]
    assert observations_of(fhir_server, patient) == 0
    assert any(r[:3] == ("POST", f"{urlsplit(server.url).path}/Observation", 403) for r in server.proxy.log.refused)
