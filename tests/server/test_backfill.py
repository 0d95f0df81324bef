"""Back-fill through Bulk Data $export against the fake server: the happy path, resuming, cancelling,
and the hostile servers a real one will not play (endless 202, bad manifests, foreign and huge files)."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import pytest

from alliance_fhir.errors import ConfigError, UnexpectedResponse
from alliance_fhir.fhirclient.bulk import ExportRequest, parse_manifest, supports_operation
from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.server.backfill import BackfillOptions, BackfillReport, cancel_backfill, run_backfill
from alliance_fhir.server.settings import ServerConfig
from alliance_fhir.server.state import StateStore

from ..conftest import all_items
from ..fake_bulk import STAMP, STATUS, FakeBulk
from ..fake_fhir import BASE


def client_for(bulk: FakeBulk, **settings: Any) -> FhirClient:
    config = ServerConfig(url=BASE, page_size=5, batch_size=3, **settings)
    return FhirClient(config, transport=httpx.MockTransport(bulk), sleep=lambda _s: None)


def wai(make_response: Any, n: int, prefix: str = "qr") -> list[dict[str, Any]]:
    """n WAI-SR responses with every item answered ``1 + i % 5`` (total 12 x that)."""
    out = []
    for i in range(n):
        response = make_response("wai-sr", all_items(12, 1 + i % 5), rid=f"{prefix}{i}")
        response["meta"] = {"versionId": "1", "lastUpdated": "2026-11-10T10:00:00.000+00:00"}
        out.append(response)
    return out


def backfill(bulk: FakeBulk, store: StateStore, catalog: Any, **options: Any) -> BackfillReport:
    sleeps: list[float] = options.pop("sleeps", [])
    with client_for(bulk) as client:
        return run_backfill(client, catalog, store, BackfillOptions(sleep=sleeps.append, **options))


def observations(bulk: FakeBulk) -> list[dict[str, Any]]:
    return list(bulk.fhir.store["Observation"].values())


# ---------------------------------------------------------------- the happy path


def test_two_files_become_one_observation_per_response_and_a_rerun_writes_none(bulk, store, catalog, make_response):
    responses = wai(make_response, 12)
    bulk.files = [responses[:7], responses[7:]]
    report = backfill(bulk, store, catalog)
    assert report.ok and report.complete and report.sync.written == 12 and report.lines == 12
    values = sorted(o["valueQuantity"]["value"] for o in observations(bulk))
    assert values == sorted(12 * (1 + i % 5) for i in range(12))  # WAI-SR total: the sum of 12 items
    assert store.checkpoint(BASE) == STAMP and store.bulk_job(BASE) is None
    kickoff = bulk.kickoffs[0]["body"]["parameter"]
    assert {"name": "_type", "valueString": "QuestionnaireResponse"} in kickoff
    filters = [p["valueString"] for p in kickoff if p["name"] == "_typeFilter"]
    assert f"QuestionnaireResponse?questionnaire={catalog.get('wai-sr').url}" in filters
    assert len(filters) == len({i.url for i in catalog})

    again = backfill(bulk, store, catalog)  # the fake ignores _since: older responses are dropped here
    assert again.ok and again.sync.written == 0 and again.ignored == 12 and len(observations(bulk)) == 12
    since = [p for p in bulk.kickoffs[1]["body"]["parameter"] if p["name"] == "_since"]
    assert since and since[0]["valueInstant"] < STAMP  # from sync's checkpoint, minus the overlap window
    everything = backfill(bulk, store, catalog, since="2000-01-01")
    assert everything.ok and everything.sync.written == 0 and everything.sync.unchanged == 12
    assert len(observations(bulk)) == 12


def test_the_server_ignoring_type_filter_and_since_is_filtered_here(bulk, store, catalog, make_response):
    ours = wai(make_response, 3)
    foreign = {**ours[0], "id": "other", "questionnaire": "http://example.org/Questionnaire/phq-9"}
    srs = make_response("srs", {1: 9.5, 2: 9, 3: 8.1, 4: 7}, rid="srs1")
    old = {**ours[1], "id": "old", "meta": {"versionId": "1", "lastUpdated": "2020-01-01T00:00:00Z"}}
    bulk.files = [[*ours, foreign, srs, old]]
    report = backfill(bulk, store, catalog, instruments=("wai-sr",), since="2026-01-01")
    assert report.sync.written == 3 and report.ignored == 3 and report.ok
    assert report.checkpoint is None and "partial" in report.checkpoint_note  # one instrument: sync's checkpoint stays


def test_polling_honours_retry_after_and_reports_x_progress(bulk, store, catalog, make_response):
    bulk.files = [wai(make_response, 2)]
    bulk.polls = 3
    sleeps: list[float] = []
    seen: list[str] = []
    with client_for(bulk) as client:
        run_backfill(client, catalog, store, BackfillOptions(sleep=sleeps.append), lambda what, _r: seen.append(what))
    assert sleeps == [7.0, 7.0, 7.0]
    assert any("50% done" in s for s in seen)


def test_retry_after_is_capped_by_poll_interval_and_zero_is_not_a_busy_loop(bulk, store, catalog, make_response):
    bulk.files = [wai(make_response, 1)]
    bulk.polls = 2
    bulk.poll_headers = {"Retry-After": "120"}
    sleeps: list[float] = []
    backfill(bulk, store, catalog, poll_interval=2.0, sleeps=sleeps)
    assert sleeps == [2.0, 2.0]
    bulk.polls, bulk.poll_headers, sleeps[:] = 1, {"Retry-After": "0"}, []
    backfill(bulk, store, catalog, sleeps=sleeps)
    assert sleeps == [1.0]


def test_patient_and_group_levels(bulk, store, catalog, make_response):
    responses = wai(make_response, 2)
    responses[1]["subject"] = {"reference": "Patient/p2"}
    bulk.files = [responses]
    report = backfill(bulk, store, catalog, patient="p1")
    assert bulk.kickoffs[0]["path"].endswith("/Patient/$export") and report.sync.written == 1 and report.ignored == 1
    patient = [p for p in bulk.kickoffs[0]["body"]["parameter"] if p["name"] == "patient"]
    assert patient == [{"name": "patient", "valueReference": {"reference": "Patient/p1"}}]
    backfill(bulk, store, catalog, group="g7")
    assert bulk.kickoffs[1]["path"].endswith("/Group/g7/$export")
    assert ExportRequest().path == "$export"
    with pytest.raises(ConfigError, match="exclude each other"):
        backfill(bulk, store, catalog, group="g7", patient="p1")


# ---------------------------------------------------------------- resuming and cancelling


def test_a_killed_backfill_resumes_without_a_new_export_or_rewrites(bulk, store, catalog, make_response):
    responses = wai(make_response, 10)
    bulk.files = [responses[:5], responses[5:]]
    fail_second = {"left": 1}

    def broken(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/Binary/f1") and fail_second["left"]:
            fail_second["left"] -= 1
            return httpx.Response(400, json={"resourceType": "OperationOutcome", "issue": []})
        return None

    bulk.faults.append(broken)
    original = bulk.__call__
    first = backfill(bulk, store, catalog)
    assert not first.ok and not first.complete and first.sync.written == 5
    assert "Binary/f1" in first.failures[0].resource and "download failed" in first.failures[0].reason
    assert store.bulk_job(BASE) is not None and store.checkpoint(BASE) is None
    assert original is not None

    bulk.downloads.clear()
    second = backfill(bulk, store, catalog)
    assert second.ok and second.resumed and second.complete and second.files_done_before == 1
    assert len(bulk.kickoffs) == 1 and bulk.downloads == [f"{BASE}/Binary/f1"]
    assert second.sync.written == 5 and len(observations(bulk)) == 10
    assert store.checkpoint(BASE) == STAMP and store.bulk_job(BASE) is None


def test_resume_of_a_half_done_file_rewrites_nothing(bulk, store, catalog, make_response):
    bulk.files = [wai(make_response, 8)]
    with client_for(bulk) as client:
        report = run_backfill(client, catalog, store, BackfillOptions(sleep=lambda _s: None))
    assert report.sync.written == 8
    store.bulk_start(BASE, json.dumps({"asked": BackfillOptions().asked(), "since": None}), STATUS)  # as if killed
    puts_before = sum(1 for r in bulk.fhir.requests if r.method == "POST" and r.url.path == "/fhir")
    again = backfill(bulk, store, catalog)
    assert again.resumed and again.sync.unchanged == 8 and again.sync.written == 0 and len(bulk.kickoffs) == 1
    assert sum(1 for r in bulk.fhir.requests if r.method == "POST" and r.url.path == "/fhir") == puts_before


def test_other_options_while_a_job_is_pending_are_refused(bulk, store, catalog):
    store.bulk_start(BASE, json.dumps({"asked": BackfillOptions().asked()}), STATUS)
    with pytest.raises(ConfigError, match="other options is in progress"):
        backfill(bulk, store, catalog, instruments=("srs",))


def test_cancel_deletes_the_job_and_forgets_it(bulk, store):
    with client_for(bulk) as client:
        assert cancel_backfill(client, store) is None
        store.bulk_start(BASE, "{}", STATUS)
        store.bulk_file_done(BASE, f"{BASE}/Binary/f0")
        assert cancel_backfill(client, store) == "/fhir/$export-poll-status?_jobId="
    assert bulk.deleted == [STATUS] and store.bulk_job(BASE) is None and store.bulk_files_done(BASE) == set()


def test_a_job_the_server_forgot_is_forgotten_here_too(bulk, store, catalog):
    store.bulk_start(BASE, json.dumps({"asked": BackfillOptions().asked()}), STATUS)
    bulk.faults.append(lambda r: httpx.Response(404) if "poll-status" in r.url.path else None)
    with pytest.raises(UnexpectedResponse, match="gone on the server"):
        backfill(bulk, store, catalog)
    assert store.bulk_job(BASE) is None


# ---------------------------------------------------------------- hostile servers


def test_endless_202_gives_up_within_max_wait_and_keeps_the_job(bulk, store, catalog, make_response):
    bulk.polls = 10**6
    clock = iter(range(0, 10**7, 7))
    sleeps: list[float] = []
    with client_for(bulk) as client, pytest.raises(UnexpectedResponse, match="did not complete within 60 s"):
        from alliance_fhir.fhirclient import bulk as bulk_module

        bulk_module.poll_job(client, STATUS, max_wait=60, sleep=sleeps.append, clock=lambda: float(next(clock)))
    assert len(sleeps) < 10
    waited: list[float] = []  # the same fake time for the whole run: it moves only by what the run sleeps
    with pytest.raises(UnexpectedResponse, match="last progress: 50% done"):
        backfill(bulk, store, catalog, max_wait=20, sleeps=waited, clock=lambda: float(sum(waited)))
    assert store.bulk_job(BASE) is not None  # kept: the next run goes on polling it


def test_a_cross_origin_file_is_refused_and_the_rest_goes_on(bulk, store, catalog, make_response):
    responses = wai(make_response, 4)
    bulk.files = [responses[:2], responses[2:]]
    bulk.file_url = lambda i: f"{BASE}/Binary/f{i}" if i else f"https://evil.example/Binary/f{i}"
    report = backfill(bulk, store, catalog)
    assert report.sync.written == 2 and not report.ok and not report.complete
    assert len(report.failures) == 1 and "another origin" in report.failures[0].reason
    assert not any("evil.example" in d for d in bulk.downloads) and store.checkpoint(BASE) is None


def test_a_cross_origin_status_url_is_refused(bulk, store, catalog):
    bulk.status_url = "https://evil.example/status/1"
    with pytest.raises(UnexpectedResponse, match="another origin"):
        backfill(bulk, store, catalog)
    assert store.bulk_job(BASE) is None


@pytest.mark.parametrize("declared", [True, False])
def test_a_file_over_the_size_limit_is_one_line_and_the_rest_goes_on(bulk, store, catalog, make_response, declared):
    responses = wai(make_response, 3)
    big = b"".join(json.dumps(r).encode() + b"\n" for r in responses[:2]) * 200  # ~ 1 MB
    bulk.files = [big, responses[2:]]
    if not declared:
        bulk.file_headers = {"Content-Encoding": "gzip"}
        bulk.files[0] = gzip.compress(big)
        bulk.files[1] = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in responses[2:]))
    report = backfill(bulk, store, catalog, max_file_bytes=100_000)
    assert len(report.failures) == 1 and "larger than the limit of 100000 bytes" in report.failures[0].reason
    assert report.files_done == 1 and not report.complete


def test_a_gzip_file_is_decoded(bulk, store, catalog, make_response):
    responses = wai(make_response, 3)
    bulk.files = [gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in responses))]
    bulk.file_headers = {"Content-Encoding": "gzip"}
    assert backfill(bulk, store, catalog).sync.written == 3


def test_bad_lines_are_one_line_each_and_the_rest_goes_on(bulk, store, catalog, make_response):
    good = wai(make_response, 2)
    lines = [json.dumps(good[0]).encode(), b"{not json", b"[1, 2]", json.dumps({"resourceType": "Patient"}).encode()]
    bulk.files = [b"\n".join([*lines, json.dumps(good[1]).encode()]) + b"\n\n"]
    report = backfill(bulk, store, catalog)
    assert report.sync.written == 2 and len(report.failures) == 3 and not report.ok
    assert [f.resource.rsplit(" ", 1)[1] for f in report.failures] == ["2", "3", "4"]
    # resuming cannot mend them (the job is cleared), but they stay outstanding and keep the checkpoint
    assert not report.complete and store.bulk_job(BASE) is None and store.checkpoint(BASE) is None
    assert len(store.outstanding(BASE)) == 3


@pytest.mark.parametrize(
    ("manifest", "reason"),
    [
        ({"output": []}, "transactionTime"),
        ({"transactionTime": "yesterday", "output": []}, "transactionTime"),
        ({"transactionTime": STAMP, "output": {}}, "output is not a list"),
        ({"transactionTime": STAMP, "output": [{"type": "QuestionnaireResponse", "url": "/Binary/1"}]}, "absolute"),
        ({"transactionTime": STAMP, "output": [{"url": f"{BASE}/Binary/1"}]}, "type is missing"),
        ({"transactionTime": STAMP, "requiresAccessToken": "yes", "output": []}, "boolean"),
        ({"transactionTime": STAMP, "output": [{"type": "X", "url": f"{BASE}/b", "count": -1}]}, "count"),
    ],
)
def test_a_bad_manifest_is_refused(manifest, reason):
    with pytest.raises(UnexpectedResponse, match=reason):
        parse_manifest(manifest, "/status")


def test_a_manifest_that_is_not_json_is_refused(bulk, store, catalog):
    bulk.faults.append(lambda r: httpx.Response(200, content=b"<html>") if "poll-status" in r.url.path else None)
    with pytest.raises(UnexpectedResponse, match="not JSON"):
        backfill(bulk, store, catalog)


def test_export_errors_are_reported_and_keep_the_checkpoint(bulk, store, catalog, make_response):
    bulk.files = [
        wai(make_response, 2),
        b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","diagnostics":"disk full"}]}\n',
    ]
    manifest = bulk.manifest()
    manifest["error"] = [manifest["output"].pop()]
    manifest["error"][0]["type"] = "OperationOutcome"
    bulk.manifest_override = manifest
    report = backfill(bulk, store, catalog)
    assert report.sync.written == 2 and not report.ok and not report.complete
    assert "disk full" in report.failures[0].reason and store.checkpoint(BASE) is None
    assert store.bulk_job(BASE) is None  # resuming cannot repair the server's export errors


def test_kick_off_must_be_202_with_a_status_url(bulk, store, catalog):
    bulk.status_url = ""
    with pytest.raises(UnexpectedResponse, match="without a Content-Location"):
        backfill(bulk, store, catalog)
    bulk.faults.append(lambda r: httpx.Response(200, json={}) if r.url.path.endswith("$export") else None)
    with pytest.raises(UnexpectedResponse, match="expected 202"):
        backfill(bulk, store, catalog)


def test_import_needs_the_operation_in_the_capability_statement(bulk, store, catalog):
    assert not supports_operation(bulk.fhir.capabilities, "import")
    with pytest.raises(ConfigError, match="does not offer \\$import"):
        backfill(bulk, store, catalog, via="import")
    statement = {"rest": [{"mode": "server", "operation": [{"name": "import", "definition": "x"}]}]}
    assert supports_operation(statement, "import")


def test_a_response_without_a_fhir_id_keeps_its_file_open(bulk, store, catalog, make_response):
    """Issue 23, case 17: sync's id rule on backfill's path; the file is not done, so a re-run reads it again."""
    good = wai(make_response, 2)
    bad = {**good[0], "id": "x\ny"}
    bulk.files = [[good[0], bad, good[1]]]
    report = backfill(bulk, store, catalog)
    assert report.sync.written == 2 and report.sync.failed == 1 and not report.ok
    [failure] = report.sync.failures
    assert failure.resource == "QuestionnaireResponse/x\\x0ay" and "not a FHIR id" in failure.reason
    assert not report.complete and store.checkpoint(BASE) is None
