"""The two-server demo (`demo --results-server`, `make demo-ehr`) on two in-memory servers.

The source plays a stand-in EHR that, like plain HAPI, creates, reads and updates
DocumentReferences, so check's plan sends one note per session into it. The caseload
(docs: README "A short tour", server/demo.py) is 42 responses: SRS 6 + ORS 6 (steady), WAI-SR 5
(rupture), SRS 4 (early low), SRS 3 + 3 (couple), GSRS 4 x 3 (group), HAq-II 3.
"""

from __future__ import annotations

import base64
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

from ..fake_fhir import BASE, CAPABILITIES, FakeFhir, _same

runner = CliRunner()
STORE = "http://results.test/fhir"
RESPONSES = 6 + 6 + 5 + 4 + 3 + 3 + 4 * 3 + 3  # 42: one score Observation and one note each
RESULTS = ("Observation", "DetectedIssue", "Task")
PEOPLE_AND_FORMS = ("QuestionnaireResponse", "Encounter", "Patient", "Practitioner")


class HapiLike(FakeFhir):
    """As HAPI does: a PUT of what the server already holds is a no-op (no new version).

    The demo PUTs its people, sessions and forms by id on every run, so a second demo finds the
    same versions and has nothing to score again (the fake alone would bump every version)."""

    def put(self, resource: dict) -> dict:
        held = self.store[resource["resourceType"]].get(resource.get("id") or "")
        return held if held is not None and _same(held, resource) else super().put(resource)


def _ehr_capabilities() -> dict:
    """The fake's statement plus DocumentReference create, read, update and search, as HAPI lists them."""
    statement = copy.deepcopy(CAPABILITIES)
    statement["rest"][0]["resource"].append(
        {
            "type": "DocumentReference",
            "interaction": [{"code": c} for c in ("create", "read", "update", "search-type")],
            "searchParam": [{"name": "subject"}, {"name": "identifier"}],
        }
    )
    return statement


@pytest.fixture
def two(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[FakeFhir, FakeFhir]:
    """(ehr, store): the client factory routes each client to its server by base URL."""
    ehr, store = HapiLike(), HapiLike()
    ehr.capabilities = _ehr_capabilities()
    by_url = {BASE: ehr, STORE: store}

    def factory(cfg: ClientConfig) -> FhirClient:
        return FhirClient(cfg, transport=httpx.MockTransport(by_url[cfg.base_url]), sleep=lambda s: None)

    monkeypatch.setattr(cli_common, "client_factory", factory)
    monkeypatch.setenv("ALLIANCE_FHIR_STATE_DB", str(tmp_path / "state.sqlite"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    for name in ("ALLIANCE_FHIR_RESULTS_SERVER", "ALLIANCE_FHIR_WRITEBACK_SCORES", "ALLIANCE_FHIR_WRITEBACK_SIGNALS"):
        monkeypatch.delenv(name, raising=False)
    return ehr, store


def demo(*extra: str):
    return runner.invoke(app, ["demo", "--server", BASE, "--results-server", STORE, *extra])


def count(server: FakeFhir, rtype: str) -> int:
    return len(server.store.get(rtype, {}))


def test_the_ehr_gets_the_people_forms_and_one_note_per_session_the_store_the_results(two):
    ehr, store = two
    result = demo("--json")
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)
    assert (runs["first"]["written"], runs["first"]["ehr_written"]) == (RESPONSES, RESPONSES)
    assert (runs["second"]["written"], runs["second"]["ehr_written"]) == (0, 0)
    assert runs["first"]["writeback"][0].startswith("scores: note (DocumentReference create offered")
    # the store: every score and signal, none of the EHR's resources
    assert count(store, "Observation") == RESPONSES and count(store, "DetectedIssue") > 0
    assert not any(count(store, t) for t in (*PEOPLE_AND_FORMS, "DocumentReference"))
    # the EHR: people, sessions and forms, and the notes; none of our results
    assert count(ehr, "QuestionnaireResponse") == RESPONSES and count(ehr, "DocumentReference") == RESPONSES
    assert not any(count(ehr, t) for t in RESULTS)
    # the store's results name the EHR's resources absolute on it
    subjects = {o["subject"]["reference"] for o in store.store["Observation"].values()}
    assert f"{BASE}/Patient/afdemo-rupture" in subjects and all(s.startswith(f"{BASE}/Patient/") for s in subjects)


def test_a_second_demo_writes_nothing_on_either_server(two):
    ehr, store = two
    assert demo("--json").exit_code == 0
    notes_before = {k: v["meta"]["versionId"] for k, v in ehr.store["DocumentReference"].items()}
    scores_before = {k: v["meta"]["versionId"] for k, v in store.store["Observation"].items()}
    again = demo("--json")
    assert again.exit_code == 0, again.output
    runs = json.loads(again.stdout)
    assert runs["first"]["written"] == runs["first"]["ehr_written"] == 0
    assert {k: v["meta"]["versionId"] for k, v in ehr.store["DocumentReference"].items()} == notes_before
    assert {k: v["meta"]["versionId"] for k, v in store.store["Observation"].items()} == scores_before


def test_the_output_names_the_stand_in_ehr_shows_a_note_and_the_two_server_next_steps(two, tmp_path):
    result = demo()
    assert result.exit_code == 0, result.output
    text = " ".join(result.stderr.split())
    assert f"{BASE} plays the EHR (a stand-in: plain FHIR, not a vendor's EHR), {STORE} is the results store" in text
    assert f"the EHR received {RESPONSES} resource(s) by write-back on the first run and 0 on the second" in text
    # Kim Couple's last SRS form: session 3 (7 September 2026 + 2 weeks), total 31.0 of 40, below the cutoff 36
    assert "What the chart receives: the latest note for Kim Couple" in text
    assert "(SRS), session 3, 21 September 2026" in text
    assert "Total 31 of 40: below 36, the level of concern." in text
    # the CDS client's config names the results store, so the card is computed from it
    config = (tmp_path / "alliance-fhir" / "cds-demo-two-servers" / "alliance-fhir.toml").read_text()
    assert f'[server]\nurl = "{BASE}"' in config and f'[results]\nurl = "{STORE}"' in config
    assert f"the card is computed from the results store {STORE}" in text
    assert f"alliance-fhir demo --server {BASE} --results-server {STORE} --cleanup" in text


def test_the_note_in_the_ehr_is_the_session_in_plain_words(two):
    ehr, _ = two
    assert demo("--json").exit_code == 0
    rupture = [
        n
        for n in ehr.store["DocumentReference"].values()
        if n["subject"]["reference"].endswith("Patient/afdemo-rupture")
    ]
    assert len(rupture) == 5  # one per WAI-SR session
    texts = [base64.b64decode(n["content"][0]["attachment"]["data"]).decode() for n in rupture]
    assert sorted(t.split("\n")[1] for t in texts) == [f"Total {t} of 60." for t in (41, 44, 48, 50, 51)]
    assert not any("afdemo" in t for t in texts)  # no ids in clinical text


def test_cleanup_removes_the_demo_from_both_servers_and_the_next_demo_writes_the_notes_again(two):
    ehr, store = two
    assert demo("--json").exit_code == 0
    cleaned = demo("--cleanup")
    assert cleaned.exit_code == 0, cleaned.output
    assert f"forgot {RESPONSES} write-back records of the demo's notes" in " ".join(cleaned.stderr.split())
    assert not any(count(store, t) for t in RESULTS)
    assert not any(count(ehr, t) for t in (*PEOPLE_AND_FORMS, "DocumentReference"))
    again = demo("--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["first"]["ehr_written"] == RESPONSES
    assert count(ehr, "DocumentReference") == RESPONSES and count(store, "Observation") == RESPONSES


def test_the_note_of_a_session_with_an_open_signal_says_so_although_the_store_names_the_patient_absolute(two):
    # Kim Couple (afdemo-couple-b): SRS 33.1, 30.2, 31 over three joint sessions, below 36 and fallen: the note of
    # her latest session carries her open situation, read from the store whose scores name her absolute on the EHR
    ehr, _ = two
    assert demo("--json").exit_code == 0
    notes = [
        base64.b64decode(n["content"][0]["attachment"]["data"]).decode()
        for n in ehr.store["DocumentReference"].values()
        if n["subject"]["reference"].endswith("Patient/afdemo-couple-b")
    ]
    latest = [t for t in notes if "Total 31 of 40" in t]
    assert len(latest) == 1
    assert "Open alliance signal (high concern): SRS 31 at session 3, down 2.1 from 33.1 in 2 sessions" in latest[0]
    assert "No open alliance signal" not in latest[0]
