"""Sync over a patient list (``sync --patients``) against the in-memory fake server.

The list comes from a Group, a List or a file; each patient is searched on its own (``patient=``)
with the same filters as the server-wide search, and each has its own checkpoint. SRS totals are
the sum of the four 0-10 lines (/work/shared/instruments.md §4a), computed by hand below.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from alliance_fhir.errors import ConfigError, FhirTransportError
from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.server import patient_list
from alliance_fhir.server.patient_list import patient_source, read_patients
from alliance_fhir.server.settings import ServerConfig
from alliance_fhir.server.state import StateStore
from alliance_fhir.server.sync import SyncOptions
from alliance_fhir.server.sync_patients import run_patient_sync

from ..fake_fhir import BASE, FakeFhir

# Each patient's SRS answers and their hand-computed total (relationship, goals, approach, overall).
ANSWERS = {
    "p1": ({1: 9.5, 2: 9, 3: 8.1, 4: 7}, 33.6),  # 9.5 + 9 + 8.1 + 7
    "p2": ({1: 5, 2: 6, 3: 7, 4: 8}, 26.0),  # 5 + 6 + 7 + 8
    "p3": ({1: 10, 2: 10, 3: 10, 4: 10}, 40.0),
}


@pytest.fixture
def server(make_response) -> FakeFhir:  # noqa: ANN001
    fake = FakeFhir()
    for patient, (answers, _total) in ANSWERS.items():
        fake.put(make_response("srs", answers, rid=f"qr-{patient}", subject={"reference": f"Patient/{patient}"}))
    fake.put(
        {
            "resourceType": "Group",
            "id": "caseload",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": f"Patient/{p}"}} for p in ANSWERS],
        }
    )
    return fake


@pytest.fixture
def store(tmp_path: Path):  # noqa: ANN201
    with StateStore(tmp_path / "state.sqlite") as s:
        yield s


def client_for(server: FakeFhir) -> FhirClient:
    # no overlap window: the fake's clock has no late commits, and a re-read is then visible as such
    config = ServerConfig(url=BASE, page_size=7, batch_size=3, concurrency=2, overlap_seconds=0)
    return FhirClient(config, transport=httpx.MockTransport(server), sleep=lambda _s: None)


def sync_patients(server: FakeFhir, catalog, store: StateStore, source: str = "Group/caseload"):  # noqa: ANN001, ANN201
    with client_for(server) as client:
        return run_patient_sync(client, catalog, store, read_patients(client, source), SyncOptions())


def totals(server: FakeFhir) -> dict[str, float]:
    """The SRS total Observation of each patient, by patient."""
    return {
        o["subject"]["reference"].removeprefix("Patient/"): o["valueQuantity"]["value"]
        for o in server.store["Observation"].values()
        if "srs-total" in str(o["code"]) or o["code"]["coding"][0]["code"].endswith("total")
    }


def response_searches(server: FakeFhir) -> list[dict[str, list[str]]]:
    return [
        parse_qs(r.url.query.decode())
        for r in server.requests
        if r.method == "GET" and r.url.path.endswith("/QuestionnaireResponse")
    ]


# ---------------------------------------------------------------- the list


def test_a_group_s_active_patient_members_are_read_once_and_other_members_are_one_line_each(server):
    server.put(
        {
            "resourceType": "Group",
            "id": "mixed",
            "type": "person",
            "actual": True,
            "member": [
                {"entity": {"reference": "Patient/p1"}},
                {"entity": {"reference": "Patient/p2"}, "inactive": True},
                {"entity": {"reference": "Practitioner/t1"}},
                {"entity": {"display": "no reference"}},
                {"entity": {"reference": "Patient/p1"}},
                {"entity": {"reference": f"{BASE}/Patient/p3"}},
                {"entity": {"reference": "https://elsewhere.example/fhir/Patient/p9"}},
            ],
        }
    )
    with client_for(server) as client:
        found = read_patients(client, "Group/mixed")
    assert found.patients == ["Patient/p1", "Patient/p3"]
    assert found.duplicates == 1
    assert [(f.resource, f.reason) for f in found.refused] == [
        ("Group/mixed member 3", "a Practitioner reference, not a Patient (only patients are read)"),
        ("Group/mixed member 4", "no literal reference (only Patient/ID references are read)"),
        ("Group/mixed member 7", "a Patient on another server (only the source's patients are read)"),
    ]


def test_a_list_s_deleted_entries_are_not_read(server):
    server.put(
        {
            "resourceType": "List",
            "id": "weekly",
            "status": "current",
            "mode": "working",
            "entry": [{"item": {"reference": "Patient/p2"}}, {"item": {"reference": "Patient/p3"}, "deleted": True}],
        }
    )
    with client_for(server) as client:
        assert read_patients(client, "List/weekly").patients == ["Patient/p2"]


def test_a_patients_file_takes_references_and_ids_skips_comments_and_names_each_bad_line(server, tmp_path):
    listed = tmp_path / "patients.txt"
    listed.write_text(
        "# this week's caseload\n"
        "Patient/p1\n"
        "\n"
        "p2   # a bare id is a Patient id\n"
        "Observation/o1\n"
        "not a reference\n"
        f"{BASE}/Patient/p3\n" + "x" * 600 + "\n"
    )
    with client_for(server) as client:
        found = read_patients(client, str(listed))
    assert found.patients == ["Patient/p1", "Patient/p2", "Patient/p3"]
    assert [(f.resource, f.reason) for f in found.refused] == [
        ("patients.txt line 5", "a Observation reference, not a Patient (only patients are read)"),
        ("patients.txt line 6", "'not a reference' is not a Patient reference"),
        ("patients.txt line 8", "longer than 512 characters: not a reference"),
    ]


def test_a_list_longer_than_the_limit_is_refused_before_anything_is_searched(server, tmp_path, monkeypatch):
    monkeypatch.setattr(patient_list, "MAX_PATIENTS", 2)
    with client_for(server) as client, pytest.raises(ConfigError, match="more than 2 patients"):
        read_patients(client, "Group/caseload")
    assert response_searches(server) == []


def test_a_missing_group_or_file_and_a_bad_group_id_are_configuration_errors(server, tmp_path):
    with client_for(server) as client:
        with pytest.raises(ConfigError, match="Group/nobody: not found"):
            read_patients(client, "Group/nobody")
        with pytest.raises(ConfigError, match="cannot be read"):
            read_patients(client, str(tmp_path / "missing.txt"))
    with pytest.raises(ConfigError, match="needs a FHIR id"):
        patient_source("Group/a b")


# ---------------------------------------------------------------- the sync


def test_each_patient_is_searched_with_patient_and_scored_exactly(server, catalog, store):
    report = sync_patients(server, catalog, store)
    assert (report.patients, report.patients_read, report.found, report.written, report.failed) == (3, 3, 3, 3, 0)
    assert totals(server) == {p: total for p, (_answers, total) in ANSWERS.items()}
    searches = response_searches(server)
    assert sorted(s["patient"][0] for s in searches) == ["Patient/p1", "Patient/p2", "Patient/p3"]
    assert all("questionnaire" in s and "_lastUpdated" not in s for s in searches)  # first read: from the start


def test_each_patient_has_its_own_checkpoint_and_a_rerun_writes_nothing(server, catalog, store):
    sync_patients(server, catalog, store)
    marks = {p: store.read_checkpoints.get(BASE, f"Patient/{p}") for p in ANSWERS}
    assert all(mark is not None for mark in marks.values())
    assert store.checkpoint(BASE) is None  # the server-wide checkpoint is the search mode's, untouched
    server.requests.clear()
    again = sync_patients(server, catalog, store)
    assert (again.found, again.written, again.unchanged, again.failed) == (0, 0, 0, 0)
    assert all("_lastUpdated" in s for s in response_searches(server))


def test_a_patient_whose_search_fails_is_one_line_and_the_others_go_on(server, catalog, store):
    def refuse_p2(request: httpx.Request) -> httpx.Response | None:
        if "patient=Patient%2Fp2" in str(request.url) or "patient=Patient/p2" in str(request.url):
            return httpx.Response(
                403,
                json={
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "forbidden", "diagnostics": "not your patient"}],
                },
            )
        return None

    server.faults.append(refuse_p2)
    report = sync_patients(server, catalog, store)
    assert (report.patients_read, report.written, report.failed, report.ok) == (2, 2, 1, False)
    assert [f.resource for f in report.failures] == ["Patient/p2"]
    assert "HTTP 403" in report.failures[0].reason and "not your patient" in report.failures[0].reason
    assert set(totals(server)) == {"p1", "p3"}
    assert store.read_checkpoints.get(BASE, "Patient/p2") is None  # read again from the start next run

    server.faults.clear()
    server.requests.clear()
    later = sync_patients(server, catalog, store)
    assert (later.written, later.failed, later.ok) == (1, 0, True)
    assert totals(server)["p2"] == 26.0
    from_start = [s["patient"][0] for s in response_searches(server) if "_lastUpdated" not in s]
    assert from_start == ["Patient/p2"]


def test_a_run_that_stops_part_way_resumes_without_re_reading_the_patients_it_finished(server, catalog, store):
    def drop_p3(request: httpx.Request) -> httpx.Response | None:
        if "Patient%2Fp3" in str(request.url) or "Patient/p3" in str(request.url):
            raise httpx.ConnectError("the connection dropped", request=request)
        return None

    server.faults.append(drop_p3)
    with pytest.raises(FhirTransportError):
        sync_patients(server, catalog, store)
    assert store.read_checkpoints.get(BASE, "Patient/p1") is not None
    assert store.read_checkpoints.get(BASE, "Patient/p3") is None

    server.faults.clear()
    server.requests.clear()
    resumed = sync_patients(server, catalog, store)
    assert (resumed.found, resumed.written, resumed.failed) == (1, 1, 0)  # only p3's response is read
    assert set(totals(server)) == {"p1", "p2", "p3"}


def test_a_changed_response_is_read_from_its_patient_s_checkpoint(server, catalog, store, make_response):
    sync_patients(server, catalog, store)
    server.put(
        make_response(
            "srs", {1: 1, 2: 2, 3: 3, 4: 4}, rid="qr-p1", status="amended", subject={"reference": "Patient/p1"}
        )
    )
    report = sync_patients(server, catalog, store)
    assert (report.found, report.written) == (1, 1)
    assert totals(server)["p1"] == 10.0  # 1 + 2 + 3 + 4


def test_refused_list_entries_make_the_run_exit_1_but_every_good_patient_is_read(server, catalog, store, tmp_path):
    listed = tmp_path / "patients.txt"
    listed.write_text("Patient/p1\nPatient/\n")
    report = sync_patients(server, catalog, store, str(listed))
    assert (report.patients_read, report.written, report.failed, report.ok) == (1, 1, 1, False)
    assert [f.resource for f in report.failures] == ["patients.txt line 2"]


def test_reset_forgets_every_patient_s_checkpoint(server, catalog, store):
    sync_patients(server, catalog, store)
    store.reset(BASE)
    assert store.read_checkpoints.get(BASE, "Patient/p1") is None
