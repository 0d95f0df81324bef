"""Reading where server-wide search is not offered, on the real HAPI behind the Epic-shaped proxy.

Epic scopes QuestionnaireResponse search to a patient (the proxy refuses it without ``patient=``
or ``subject=``), so ``check`` says "per patient", ``sync --patients Group/ID`` reads each member,
and ``sync --via-export Group/ID`` reads by Group ``$export`` with ``_since``. The responses are
our own SRS and WAI-SR forms for patients of a Group, stored straight on HAPI (the EHR's own data);
the Observations go to a results store (HAPI itself, addressed directly: Epic refuses them).
Totals are hand-computed (tests/integration/test_hapi_sync.py ``caseload``: WAI-SR 12 x the value,
SRS the sum of its four lines).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from alliance_fhir import content_resources, load_catalog
from alliance_fhir.server.publish import publish_resources
from alliance_fhir.server.read_mode import read_mode_finding
from alliance_fhir.server.settings import ServerConfig

from ..integration.helpers import client, unique
from ..integration.test_hapi_sync import caseload, observations, post_all

pytestmark = pytest.mark.integration
CATALOG = load_catalog()


@pytest.fixture(scope="module")
def published(fhir_server: str) -> str:
    with client(fhir_server) as c:
        assert not [r for r in publish_resources(c, content_resources(CATALOG)) if r.action == "failed"]
    return fhir_server


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alliance_fhir", *args], capture_output=True, text=True, timeout=300)


def a_group(upstream: str, patients: list[str]) -> str:
    """A Group of ``patients`` stored on HAPI (the EHR's caseload), its id."""
    gid = unique("caseload")
    with client(upstream) as c:
        group = {
            "resourceType": "Group",
            "id": gid,
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": p}} for p in patients],
        }
        c.request("PUT", f"Group/{gid}", json=group)
    return gid


def patients_with_responses(upstream: str, count: int, each: int) -> tuple[list[str], dict[str, float]]:
    """``count`` patients with ``each`` responses; the hand-computed totals by response id."""
    patients, expected = [], {}
    for _ in range(count):
        patient = f"Patient/{unique('rm')}"
        resources, totals = caseload(patient, each)
        post_all(upstream, resources)
        patients.append(patient)
        expected.update(totals)
    return patients, expected


def synced(source: str, results: str, state: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    run = cli("sync", "--server", source, "--results-server", results, "--state", str(state), "--json", *args)
    return run.returncode, json.loads(run.stdout) if run.stdout.strip().startswith("{") else {}, run.stderr


def stored(results: str, source: str, patient: str) -> list[dict[str, Any]]:
    """The patient's Observations in the results store: they name the source's patient absolute on the
    source's base URL (docs/two-servers.md), or relative if written before; both in one OR'd search."""
    return observations(results, f"{source}/{patient},{patient}")


def scored(upstream: str, patients: list[str], source: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for patient in patients:
        for o in stored(upstream, source, patient):  # derivedFrom: <source>/QuestionnaireResponse/<id>/_history/<n>
            found[o["derivedFrom"][0]["reference"].split("/QuestionnaireResponse/")[1].split("/")[0]] = o[
                "valueQuantity"
            ]["value"]
    return found


def test_check_says_per_patient_where_the_server_wide_search_is_refused(vendor_server):
    epic = vendor_server("epic")
    config = ServerConfig(url=epic.url)
    with client(epic.url) as c:
        name, ok, detail = read_mode_finding(c, config, c.r4_capabilities())
    assert (name, ok) == ("read mode", False)
    assert detail.startswith("per patient (server-wide QuestionnaireResponse search refused: HTTP 403: ")
    assert "needs patient= or subject=" in detail
    assert "give --patients Group/ID" in detail and "--via-export Group/ID (Bulk Data Group $export offered)" in detail
    assert epic.proxy.log.refused[-1][2] == 403


def test_the_open_server_gets_the_server_wide_search(vendor_server):
    opened = vendor_server("open")
    with client(opened.url) as c:
        assert read_mode_finding(c, ServerConfig(url=opened.url), c.r4_capabilities()) == (
            "read mode",
            True,
            "server-wide search (QuestionnaireResponse search by questionnaire offered)",
        )


def test_sync_without_a_read_mode_is_refused_and_per_patient_scores_every_member_once(
    vendor_server, published, tmp_path
):
    epic = vendor_server("epic")
    patients, expected = patients_with_responses(epic.upstream, 2, 3)
    assert sorted(expected.values()) == sorted([12, 25.8, 36] * 2)  # WAI-SR 12 x 1, SRS 9.5+8+7.3+1, WAI-SR 12 x 3
    gid = a_group(epic.upstream, patients)
    state = tmp_path / "state.sqlite"

    code, _report, stderr = synced(epic.url, epic.upstream, state)
    assert code == 2 and "needs patient= or subject=" in stderr  # the server-wide search is refused

    code, report, stderr = synced(epic.url, epic.upstream, state, "--patients", f"Group/{gid}")
    assert code == 0, stderr
    assert (report["patients"], report["patients_read"], report["found"], report["written"], report["failed"]) == (
        2,
        2,
        6,
        6,
        0,
    )
    assert scored(epic.upstream, patients, epic.url) == expected
    # nothing was written to the EHR: its only refusals are reads (the server-wide search, and the
    # batch in which sync asks for /metadata and our Questionnaires at once, then asks one by one)
    assert {reason for _m, _p, _s, reason in epic.proxy.log.refused} == {
        "QuestionnaireResponse search needs patient= or subject=: this server searches per patient",
        "Bundle batch is not supported by this server",
    }

    code, again, _stderr = synced(epic.url, epic.upstream, state, "--patients", f"Group/{gid}")
    assert code == 0
    assert (again["written"], again["failed"]) == (0, 0)  # a re-run writes nothing


def test_group_export_mode_scores_new_responses_and_a_rerun_writes_nothing(vendor_server, published, tmp_path):
    epic = vendor_server("epic")
    patients, expected = patients_with_responses(epic.upstream, 2, 2)
    gid = a_group(epic.upstream, patients)
    state = tmp_path / "state.sqlite"
    export = ("--via-export", f"Group/{gid}", "--poll-interval", "1", "--max-wait", "240")

    code, first, stderr = synced(epic.url, epic.upstream, state, *export)
    assert code == 0, stderr
    assert (first["responses"]["written"], first["responses"]["failed"], first["complete"]) == (4, 0, True)
    assert scored(epic.upstream, patients, epic.url) == expected  # 12, 25.8 for each patient
    assert first["checkpoint"] == first["transaction_time"]  # the Group's mark for the next run

    code, again, stderr = synced(epic.url, epic.upstream, state, *export)
    assert code == 0, stderr
    assert again["since"] is not None  # exported since the Group's last export
    assert again["responses"]["written"] == 0  # a re-run writes nothing

    newest = caseload(patients[0], 3)[0][2]  # i = 2: a WAI-SR answered 3 on every item
    newest["id"] = f"{newest['id']}-new"
    post_all(epic.upstream, [newest])
    code, later, stderr = synced(epic.url, epic.upstream, state, *export)
    assert code == 0, stderr
    assert later["responses"]["written"] == 1
    assert scored(epic.upstream, [patients[0]], epic.url)[newest["id"]] == 36  # 12 items x 3


def test_a_per_patient_sync_killed_mid_run_and_run_again_converges(vendor_server, published, tmp_path):
    epic = vendor_server("epic")
    patients, expected = patients_with_responses(epic.upstream, 6, 4)
    gid = a_group(epic.upstream, patients)
    state = tmp_path / "state.sqlite"
    command = [
        sys.executable,
        "-m",
        "alliance_fhir",
        "sync",
        "--server",
        epic.url,
        "--results-server",
        epic.upstream,
        "--state",
        str(state),
        "--patients",
        f"Group/{gid}",
        "--concurrency",
        "1",
        "--batch-size",
        "1",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        _wait_for_first_write(epic.upstream, epic.url, patients, timeout=120)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    code, report, stderr = synced(epic.url, epic.upstream, state, "--patients", f"Group/{gid}")
    assert code == 0, stderr
    assert report["failed"] == 0
    assert scored(epic.upstream, patients, epic.url) == expected  # every response once, with its hand-computed total
    for patient in patients:
        assert len(stored(epic.upstream, epic.url, patient)) == 4  # one Observation a response, none twice


def _wait_for_first_write(upstream: str, source: str, patients: list[str], timeout: float) -> None:
    """Until one Observation of these patients exists (a bounded poll of the results store)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(stored(upstream, source, p) for p in patients[:2]):
            return
        time.sleep(0.05)  # the poll interval of a bounded wait
    raise AssertionError(f"no Observation was written within {timeout:.0f} s")
