"""Sync against the in-memory fake server: incremental, idempotent, resumable, failures isolated."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import httpx
import pytest

from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.instruments.catalog import Catalog
from alliance_fhir.server import sync_pipeline as pipeline_module
from alliance_fhir.server.settings import ServerConfig
from alliance_fhir.server.state import StateStore
from alliance_fhir.server.sync import SyncOptions, process_responses, run_sync

from ..conftest import all_items
from ..fake_fhir import BASE, FakeFhir, fail_times

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def server() -> FakeFhir:
    return FakeFhir()


@pytest.fixture
def store(tmp_path: Path):  # noqa: ANN201
    with StateStore(tmp_path / "state.sqlite") as s:
        yield s


def client_for(server: FakeFhir, **settings) -> FhirClient:  # noqa: ANN003
    config = ServerConfig(
        url=BASE, page_size=settings.pop("page_size", 7), batch_size=settings.pop("batch_size", 3), **settings
    )
    return FhirClient(config, transport=httpx.MockTransport(server), sleep=lambda _s: None)


def post_responses(server: FakeFhir, make_response, n: int) -> None:  # noqa: ANN001
    for i in range(n):
        instrument, answers = [("wai-sr", all_items(12, 1 + i % 5)), ("srs", {1: 9.5, 2: 9, 3: 8.1, 4: i % 10})][i % 2]
        server.put(make_response(instrument, answers, rid=f"qr{i}"))


def observations(server: FakeFhir) -> list[dict]:
    return list(server.store["Observation"].values())


def qr_search(server: FakeFhir) -> httpx.Request:
    return next(r for r in server.requests if r.url.path.endswith("/QuestionnaireResponse"))


def sync(server, catalog, store, **options):  # noqa: ANN001, ANN003, ANN201
    with client_for(server) as client:
        return run_sync(client, catalog, store, SyncOptions(**options))


def test_first_sync_writes_one_observation_per_response(server, catalog, store, make_response):
    post_responses(server, make_response, 20)  # 20 > page size 7: three pages
    report = sync(server, catalog, store)
    assert (report.found, report.scored, report.written, report.failed) == (20, 20, 20, 0)
    assert len(observations(server)) == 20
    by_response = {
        o["derivedFrom"][0]["reference"].split("/")[1]: o["valueQuantity"]["value"] for o in observations(server)
    }
    assert by_response["qr0"] == 12  # WAI-SR all Seldom: 12 x 1
    assert by_response["qr2"] == 36  # WAI-SR all Fairly often: 12 x 3
    assert by_response["qr3"] == 29.6  # SRS 9.5 + 9 + 8.1 + 3
    assert report.checkpoint is not None


def test_a_sync_asked_to_stop_reads_no_further_page_settles_its_writes_and_keeps_the_checkpoint(
    server, catalog, store, make_response
):
    """serve's catch-up must not hold a stopping service: it stops at the next page, nothing lost."""
    post_responses(server, make_response, 20)  # three pages of 7
    pages_handed: list[int] = []

    def stop_after_the_first_page() -> bool:
        pages_handed.append(1)
        return len(pages_handed) > 1

    with client_for(server) as client:
        report = run_sync(client, catalog, store, SyncOptions(), should_stop=stop_after_the_first_page)
    assert (report.found, report.written, report.failed) == (7, 7, 0)  # the first page, all of it landed
    assert len(observations(server)) == 7
    assert report.checkpoint is None and store.checkpoint(BASE) is None
    assert [w.reason for w in report.warnings] == [
        "stopped before the last page (the service is stopping); the checkpoint was not moved"
    ]
    again = sync(server, catalog, store)  # the next run reads what the stopped one did not
    assert (again.found, again.written, again.unchanged) == (20, 13, 7)
    assert len(observations(server)) == 20 and again.checkpoint is not None


def test_responses_handed_over_at_once_are_written_in_batches_like_a_page(server, catalog, store, make_response):
    """serve drains its inbox through process_responses: batches of batch_size, several in flight, each verified."""
    post_responses(server, make_response, 10)
    with client_for(server, concurrency=2) as client:  # batch_size 3: four transactions
        report = process_responses(client, catalog, store, list(server.store["QuestionnaireResponse"].values()))
    assert (report.found, report.written, report.failed) == (10, 10, 0)
    bundles = [json.loads(r.content) for r in server.requests if r.method == "POST" and r.url.path == "/fhir"]
    assert sorted(len(b["entry"]) for b in bundles if b["type"] == "transaction") == [1, 3, 3, 3]
    assert len(observations(server)) == 10 and report.subjects == {"Patient/p1"}
    assert {e.outcome for e in store.lookup(BASE, [f"qr{i}" for i in range(10)]).values()} == {"written"}


def test_second_sync_writes_nothing(server, catalog, store, make_response):
    post_responses(server, make_response, 20)
    sync(server, catalog, store)
    server.requests.clear()
    report = sync(server, catalog, store)
    assert (report.written, report.unchanged, report.failed) == (0, 20, 0)
    reads = [r for r in server.requests if r.method == "POST" and not r.url.path.endswith("/_search")]
    assert all(e["request"]["method"] == "GET" for r in reads for e in json.loads(r.content)["entry"])  # reads only
    # One batch (/metadata + our Questionnaires' ids), one search per page, the ledger checked once: 2 + 1 per page.
    assert len(server.requests) == 2 + 3
    assert len(observations(server)) == 20


def test_lost_ledger_still_converges_without_duplicates(server, catalog, store, make_response, tmp_path):
    post_responses(server, make_response, 10)
    sync(server, catalog, store)
    with StateStore(tmp_path / "other.sqlite") as fresh:  # e.g. a run killed before recording
        report = sync(server, catalog, fresh)
    assert report.written == 10 and len(observations(server)) == 10
    assert all(o["meta"]["versionId"] == "1" for o in observations(server))  # identical content: no new versions


def test_amended_response_updates_its_observation(server, catalog, store, make_response):
    server.put(make_response("wai-sr", all_items(12, 3), rid="qr-a"))
    sync(server, catalog, store)
    amended = copy.deepcopy(server.store["QuestionnaireResponse"]["qr-a"])
    amended["status"] = "amended"
    amended["item"][0]["answer"] = [{"valueInteger": 5}]
    server.put(amended)
    report = sync(server, catalog, store)
    assert report.written == 1
    [obs] = observations(server)
    assert obs["status"] == "amended" and obs["valueQuantity"]["value"] == 38  # 36 - 3 + 5
    assert obs["derivedFrom"] == [{"reference": "QuestionnaireResponse/qr-a/_history/2"}]


def test_observations_from_before_the_srs_lines_were_kept_gain_them_in_place_after_a_reset(
    server, catalog, store, make_response
):
    """Keeping the SRS lines added components but changed no score and no identifier (the algorithm
    version stayed 1.0.0). Sync's change detection keys on the response version and the Observation
    identifier, so an ordinary sync leaves an earlier Observation as it is; `sync --reset` then a sync
    rewrites each once, in place (same identifier, same resource, a new version), with no duplicate."""
    srs = catalog.get("srs")
    before = Catalog(  # the catalog as it was: the SRS total alone
        instruments={
            **catalog.instruments,
            srs.canonical: dataclasses.replace(
                srs, mapping=srs.mapping.model_copy(update={"scales": [srs.mapping.total]})
            ),
        },
        codesystems=catalog.codesystems,
    )
    server.put(make_response("srs", {1: 9.1, 2: 8.4, 3: 6.0, 4: 7.5}, rid="qr-lines"))  # 31.0
    assert sync(server, before, store).written == 1
    [old] = observations(server)
    assert "component" not in old and old["valueQuantity"]["value"] == 31.0

    again = sync(server, catalog, store)  # the next run, with the lines kept: nothing about the response changed
    # read again (the checkpoint's overlap) and judged unchanged: same response version, same identifier
    assert (again.written, again.unchanged) == (0, 1)
    assert observations(server) == [old]

    store.reset(BASE)
    report = sync(server, catalog, store)
    assert (report.found, report.written, report.failed) == (1, 1, 0)
    [new] = observations(server)
    assert (new["id"], new["identifier"]) == (old["id"], old["identifier"]) and new["meta"]["versionId"] == "2"
    assert new["valueQuantity"]["value"] == 31.0
    assert [(c["code"]["coding"][0]["code"], c["valueQuantity"]["value"]) for c in new["component"]] == [
        ("srs-relationship", 9.1),
        ("srs-goals", 8.4),
        ("srs-approach", 6.0),
        ("srs-overall", 7.5),
    ]
    assert sync(server, catalog, store).written == 0  # and once only


def test_entered_in_error_response_retracts_its_observation(server, catalog, store, make_response):
    server.put(make_response("srs", {1: 9, 2: 9, 3: 9, 4: 9}, rid="qr-e"))
    sync(server, catalog, store)
    retracted = copy.deepcopy(server.store["QuestionnaireResponse"]["qr-e"])
    retracted["status"] = "entered-in-error"
    server.put(retracted)
    report = sync(server, catalog, store)
    assert report.retracted == 1
    [obs] = observations(server)
    assert obs["status"] == "entered-in-error"
    assert sync(server, catalog, store).retracted == 0


def test_bad_responses_are_reported_and_do_not_block_the_rest(server, catalog, store, make_response):
    post_responses(server, make_response, 6)
    bad = make_response("wai-sr", all_items(12, 3), rid="qr-bad")
    bad["item"][2]["answer"] = [{"valueInteger": 9}]
    server.put(bad)
    unknown = make_response("srs", {1: 9, 2: 9, 3: 9, 4: 9}, rid="qr-unknown-version")
    unknown["questionnaire"] = unknown["questionnaire"].replace("1.0.0", "7.0")
    server.put(unknown)
    report = sync(server, catalog, store, since="2000-01-01")
    assert report.written == 6 and report.failed == 2
    reasons = {f.resource: f.reason for f in report.failures}
    assert (
        "item '3'" in reasons["QuestionnaireResponse/qr-bad"]
        and "out of range" in reasons["QuestionnaireResponse/qr-bad"]
    )
    assert "unknown version '7.0'" in reasons["QuestionnaireResponse/qr-unknown-version"]
    again = sync(server, catalog, store)
    assert again.failed == 0 and again.unchanged == 8  # not retried until they change


def test_changed_failed_response_is_retried(server, catalog, store, make_response):
    bad = make_response("wai-sr", all_items(12, 3), rid="qr-fix")
    bad["item"][2]["answer"] = [{"valueInteger": 9}]
    server.put(bad)
    assert sync(server, catalog, store).failed == 1
    bad["item"][2]["answer"] = [{"valueInteger": 4}]
    server.put(bad)
    report = sync(server, catalog, store)
    assert report.failed == 0 and report.written == 1


def test_transient_errors_are_retried_with_the_same_result(server, catalog, store, make_response):
    post_responses(server, make_response, 10)
    server.faults.append(fail_times(3, 503, {"Retry-After": "1"}))
    server.faults.append(fail_times(2, 429, when=lambda r: r.method == "POST"))
    report = sync(server, catalog, store)
    assert report.written == 10 and report.failed == 0
    assert len(observations(server)) == 10


def test_invalid_batch_falls_back_to_one_by_one(server, catalog, store, make_response, monkeypatch):
    post_responses(server, make_response, 3)
    import alliance_fhir.server.sync_pipeline as sync_module

    real = sync_module.build_observation  # type: ignore[attr-defined]

    def poison(result, response, **options):  # noqa: ANN001, ANN202, ANN003
        obs = real(result, response, **options)
        if response["id"] == "qr1":
            obs["status"] = "invalid"  # the fake server rejects the whole transaction
        return obs

    monkeypatch.setattr(sync_module, "build_observation", poison)
    report = sync(server, catalog, store)
    assert report.written == 2 and report.failed == 1
    assert "write failed" in report.failures[0].reason and "qr1" in report.failures[0].resource
    assert report.checkpoint is None  # a failed write keeps the checkpoint, so the next run retries it


def test_dry_run_writes_nothing(server, catalog, store, make_response):
    post_responses(server, make_response, 5)
    report = sync(server, catalog, store, dry_run=True)
    assert report.written == 5 and report.dry_run and observations(server) == []
    assert store.checkpoint(BASE) is None


def test_checkpoint_with_overlap_limits_the_search(server, catalog, store, make_response):
    post_responses(server, make_response, 4)
    sync(server, catalog, store)
    server.requests.clear()
    sync(server, catalog, store)
    search = qr_search(server)
    assert "_lastUpdated" in dict(search.url.params)


def test_patient_and_instrument_filters(server, catalog, store, make_response):
    server.put(make_response("srs", {1: 9, 2: 9, 3: 9, 4: 9}, rid="mine", subject={"reference": "Patient/a"}))
    server.put(make_response("srs", {1: 9, 2: 9, 3: 9, 4: 9}, rid="theirs", subject={"reference": "Patient/b"}))
    server.put(make_response("wai-sr", all_items(12, 2), rid="wai", subject={"reference": "Patient/a"}))
    report = sync(server, catalog, store, patient="Patient/a", instruments=("srs",))
    assert report.written == 1
    params = dict(qr_search(server).url.params)
    assert params["subject"] == "Patient/a"
    # every version, of the full form and of the client-facing one (a portal's responses)
    assert params["questionnaire"] == (
        "http://alliance-fhir.org/fhir/Questionnaire/srs,http://alliance-fhir.org/fhir/Questionnaire/srs-for-client"
    )


def test_the_shipped_catalog_has_no_form_maps_so_sync_searches_only_our_questionnaires(server, catalog, store):
    """The example form maps (invented vendor ids) live in form-maps/examples/ and are never loaded by default."""
    assert list(catalog.forms) == []
    sync(server, catalog, store)
    values = dict(qr_search(server).url.params)["questionnaire"].split(",")
    ids = ["cors", "csrs", "gsrs", "haq-ii", "ors", "srs", "wai-sr"]  # the seven shipped instruments
    ours = [f"http://alliance-fhir.org/fhir/Questionnaire/{i}{suffix}" for i in ids for suffix in ("", "-for-client")]
    assert sorted(values) == sorted(ours)  # 7 x 2 = 14 canonicals, no vendor id


def test_report_as_json_has_counts_and_failures(server, catalog, store, make_response):
    post_responses(server, make_response, 2)
    data = sync(server, catalog, store).as_dict()
    assert json.loads(json.dumps(data))["written"] == 2 and data["failures"] == []


def test_reset_forgets_one_server(server, catalog, store, make_response):
    post_responses(server, make_response, 2)
    sync(server, catalog, store)
    store.reset(BASE)
    assert store.checkpoint(BASE) is None and store.counts(BASE) == {}


def test_observations_gone_from_the_server_are_written_again(server, catalog, store, make_response):
    """A reset or cleaned-up server: the ledger says written, the server says otherwise; the server wins."""
    post_responses(server, make_response, 6)
    sync(server, catalog, store)
    for key in list(server.store["Observation"])[:4]:
        del server.store["Observation"][key]
    report = sync(server, catalog, store)
    assert (report.written, report.unchanged) == (4, 2)
    assert len(observations(server)) == 6


def test_a_cleaned_server_is_noticed_on_the_first_page_and_checked_on_every_page(server, catalog, store, make_response):
    post_responses(server, make_response, 20)  # 3 pages of 7
    sync(server, catalog, store)
    server.store["Observation"].clear()
    report = sync(server, catalog, store)
    assert (report.written, report.unchanged) == (20, 0)
    assert len(observations(server)) == 20


def test_what_a_run_keeps_per_response_is_let_go_once_its_write_settles(
    server, catalog, store, make_response, monkeypatch
):
    """A sync of 10^6 responses must run in constant memory: the subject kept for each response
    (serve refreshes those patients' signals) is held only while its write is in flight."""
    post_responses(server, make_response, 120)
    held_after_each_settle: list[int] = []
    settle = pipeline_module.Pipeline.settle

    def counting_settle(run, results):  # noqa: ANN001, ANN202
        settle(run, results)
        held_after_each_settle.append(len(run._subjects_by_id))

    monkeypatch.setattr(pipeline_module.Pipeline, "settle", counting_settle)
    report = sync(server, catalog, store)
    assert report.written == 120 and report.subjects == {"Patient/p1"}
    page_size, batch_size, in_flight = 7, 3, 2 * ServerConfig(url=BASE).concurrency
    assert max(held_after_each_settle) <= page_size + in_flight * batch_size
    assert held_after_each_settle[-1] == 0
