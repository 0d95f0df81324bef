"""Two servers: responses are read from the source (the EHR), results live in the results store.

The demo caseload is made on a scratch server, then its responses, people and sessions (no
Observation, DetectedIssue or Task) are copied to the *source*; every command is then run with
``--server SOURCE --results-server STORE`` against two in-memory servers.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from alliance_fhir.cli import _common as cli_common
from alliance_fhir.cli.main import app
from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.fhirclient.config import ClientConfig

from ..fake_fhir import BASE, FakeFhir

runner = CliRunner()
STORE = "http://results.test/fhir"
RESULTS = ("Observation", "DetectedIssue", "Task", "Device")
WRITES = ("POST", "PUT", "PATCH", "DELETE")


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[FakeFhir, FakeFhir, FakeFhir]:
    """(scratch, source, store): the client factory routes each client to its server by base URL."""
    scratch, source, store = FakeFhir(), FakeFhir(), FakeFhir()
    by_url = {BASE: source, STORE: store, "http://scratch.test/fhir": scratch}

    def factory(cfg: ClientConfig) -> FhirClient:
        return FhirClient(cfg, transport=httpx.MockTransport(by_url[cfg.base_url]), sleep=lambda s: None)

    monkeypatch.setattr(cli_common, "client_factory", factory)
    monkeypatch.setenv("ALLIANCE_FHIR_STATE_DB", str(tmp_path / "state.sqlite"))
    for name in ("ALLIANCE_FHIR_RESULTS_SERVER", "ALLIANCE_FHIR_RESULTS_TOKEN", "ALLIANCE_FHIR_RESULTS_AUTH"):
        monkeypatch.delenv(name, raising=False)
    demo = runner.invoke(app, ["demo", "--server", "http://scratch.test/fhir", "--json"])
    assert demo.exit_code == 0, demo.output
    for rtype, resources in scratch.store.items():
        if rtype not in RESULTS:
            for resource in resources.values():
                source.put(copy.deepcopy({k: v for k, v in resource.items() if k != "meta"}))
    source.requests.clear()
    return scratch, source, store


def writes_to(server: FakeFhir) -> list[str]:
    """The write requests a server received: not a POSTed search, nor a batch of reads (GETs) only."""
    return [f"{r.method} {r.url.path}" for r in server.requests if r.method in WRITES and not _a_read(r)]


def _a_read(request: httpx.Request) -> bool:
    if request.url.path.endswith("/_search"):
        return True
    body = json.loads(request.content or b"{}")
    entries = body.get("entry") or [] if body.get("resourceType") == "Bundle" else [{}]
    return bool(entries) and all((e.get("request") or {}).get("method") == "GET" for e in entries)


def test_sync_reads_the_source_and_writes_every_result_to_the_store_only(servers):
    scratch, source, store = servers
    first = runner.invoke(app, ["sync", "--server", BASE, "--results-server", STORE, "--signals", "--tasks", "--json"])
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["server"] == BASE and report["results_server"] == STORE
    # the same scores and signals as on one server: one Observation per response, the same DetectedIssues
    assert len(store.store["Observation"]) == len(scratch.store["Observation"]) == report["written"] > 0
    assert len(store.store["DetectedIssue"]) == len(scratch.store["DetectedIssue"]) > 0
    assert len(store.store["Task"]) >= 1
    assert not any(source.store.get(rtype) for rtype in RESULTS)  # the source holds none of our results
    assert writes_to(source) == []  # and was never written to
    assert any(r.url.path.endswith("/QuestionnaireResponse") for r in source.requests)
    assert not any(r.url.path.endswith("/QuestionnaireResponse") for r in store.requests)
    assert any("/Encounter" in r.url.path for r in source.requests)  # the sessions are the source's


def identifiers(server: FakeFhir, rtype: str) -> set[str]:
    return {i["value"] for r in server.store[rtype].values() for i in r["identifier"]}


def test_results_in_the_store_name_the_sources_resources_absolute_with_the_same_identifiers(servers):
    scratch, _source, store = servers
    args = ["sync", "--server", BASE, "--results-server", STORE, "--signals", "--tasks", "--json"]
    assert runner.invoke(app, args).exit_code == 0
    for obs in store.store["Observation"].values():
        assert obs["subject"]["reference"].startswith("http://fhir.test/fhir/Patient/afdemo-")
        assert obs["encounter"]["reference"].startswith("http://fhir.test/fhir/Encounter/afdemo-")
        assert obs["derivedFrom"][0]["reference"].startswith("http://fhir.test/fhir/QuestionnaireResponse/")
    for issue in store.store["DetectedIssue"].values():
        assert issue["patient"]["reference"].startswith("http://fhir.test/fhir/Patient/afdemo-")
        assert all(d["reference"].startswith("Observation/") for d in issue["evidence"][0]["detail"])  # in the store
    for task in store.store["Task"].values():
        assert task["for"]["reference"].startswith("http://fhir.test/fhir/Patient/afdemo-")
    # the one-server demo (scratch) wrote relative references, and the very same identifiers
    assert all(o["subject"]["reference"].startswith("Patient/") for o in scratch.store["Observation"].values())
    for rtype in ("Observation", "DetectedIssue"):  # (the demo writes no Tasks)
        assert identifiers(store, rtype) == identifiers(scratch, rtype)
    # signals for one client, as serve runs them: the client's scores are found in the store
    one = runner.invoke(
        app,
        ["signals", "--server", BASE, "--results-server", STORE, "--patient", "Patient/afdemo-rupture", "--json"],
    )
    assert one.exit_code == 0, one.output
    listed = json.loads(one.stdout)
    assert listed["observations"] > 0 and listed["written"] == 0  # the same issues: nothing to write again


def test_a_rerun_writes_nothing_and_another_store_is_another_ledger_entry(servers, monkeypatch):
    _scratch, source, store = servers
    args = ["sync", "--server", BASE, "--results-server", STORE, "--json"]
    first = json.loads(runner.invoke(app, args).stdout)
    again = json.loads(runner.invoke(app, args).stdout)
    assert again["written"] == 0 and again["unchanged"] == first["written"] > 0
    # the same source synced to another store: nothing is "done" there yet
    other = FakeFhir()
    real = cli_common.client_factory

    def factory(cfg: ClientConfig) -> FhirClient:
        if cfg.base_url == "http://other.test/fhir":
            return FhirClient(cfg, transport=httpx.MockTransport(other), sleep=lambda s: None)
        return real(cfg)

    monkeypatch.setattr(cli_common, "client_factory", factory)
    third = json.loads(
        runner.invoke(app, ["sync", "--server", BASE, "--results-server", "http://other.test/fhir", "--json"]).stdout
    )
    assert third["written"] == first["written"] and len(other.store["Observation"]) == first["written"]
    assert writes_to(source) == []


def test_signals_read_scores_from_the_store_and_report_names_people_from_the_source(servers, tmp_path):
    _scratch, source, store = servers
    assert runner.invoke(app, ["sync", "--server", BASE, "--results-server", STORE]).exit_code == 0
    source.requests.clear()
    result = runner.invoke(app, ["signals", "--server", BASE, "--results-server", STORE, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["server"] == STORE and len(store.store["DetectedIssue"]) > 0
    assert not source.store.get("DetectedIssue") and writes_to(source) == []
    html = tmp_path / "r.html"
    args = ["report", "--server", BASE, "--results-server", STORE, "--patient", "Patient/afdemo-rupture"]
    assert runner.invoke(app, [*args, "--out", str(html)]).exit_code == 0
    assert any(r.url.path.endswith("/Patient") for r in source.requests)  # names come from the EHR
    assert not any(r.url.path.endswith("/Patient") for r in store.requests)


def test_failures_are_kept_per_pair_and_check_says_which_server_does_what(servers):
    _scratch, _source, _store = servers
    assert runner.invoke(app, ["sync", "--server", BASE, "--results-server", STORE]).exit_code == 0
    listed = runner.invoke(app, ["failures", "--server", BASE, "--results-server", STORE, "--json"])
    assert listed.exit_code == 0 and json.loads(listed.stdout)["results_server"] == STORE
    checked = runner.invoke(app, ["check", "--server", BASE, "--results-server", STORE, "--json"])
    roles = {r["role"]: r["server"] for r in json.loads(checked.stdout)["roles"]}
    assert roles == {"source": BASE, "results store": STORE}
    names = [c["check"] for c in json.loads(checked.stdout)["checks"]]
    assert "source: search responses" in names and "results store: write mode" in names


def test_a_results_url_with_credentials_is_refused_without_showing_them(servers):
    result = runner.invoke(app, ["sync", "--server", BASE, "--results-server", "http://alice:s3cret@results.test/fhir"])
    assert result.exit_code == 2
    assert "the results server URL must not contain credentials" in result.stderr and "s3cret" not in result.output


def test_the_store_gets_its_own_token_never_the_sources(servers, monkeypatch):
    _scratch, source, store = servers
    monkeypatch.setenv("ALLIANCE_FHIR_AUTH", "bearer")
    monkeypatch.setenv("ALLIANCE_FHIR_TOKEN", "ehr-token")
    monkeypatch.setenv("ALLIANCE_FHIR_RESULTS_AUTH", "bearer")
    monkeypatch.setenv("ALLIANCE_FHIR_RESULTS_TOKEN", "store-token")
    assert runner.invoke(app, ["sync", "--server", BASE, "--results-server", STORE]).exit_code == 0
    assert {r.headers.get("authorization") for r in source.requests} == {"Bearer ehr-token"}
    assert {r.headers.get("authorization") for r in store.requests} == {"Bearer store-token"}
