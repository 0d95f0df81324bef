"""The two-server demo (`make demo-ehr`, `demo --results-server`) end to end on two real HAPI servers.

The session's HAPI (``$ALLIANCE_FHIR_TEST_SERVER``, else the harness) plays a stand-in EHR: plain
HAPI, not a vendor profile (those are in tests/vendor/). The results store is a second HAPI
(``$ALLIANCE_FHIR_TEST_RESULTS_SERVER``, else the harness on the next port). The demo's caseload
is 42 responses (SRS 6 + ORS 6, WAI-SR 5, SRS 4, SRS 3 + 3, GSRS 4 x 3, HAq-II 3): 42 score
Observations in the store, 42 notes in the EHR. The module starts from no demo data on either
server (earlier modules run the one-server demo on the session's HAPI) and leaves none.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alliance_fhir.cli.main import app
from alliance_fhir.server.demo import DEMO_TAG, demo_patient_ids
from alliance_fhir.signals.writeback import WRITEBACK_IDENTIFIER_SYSTEM

from .helpers import client

pytestmark = pytest.mark.integration
runner = CliRunner()
TAG = f"{DEMO_TAG['system']}|{DEMO_TAG['code']}"
RESPONSES = 6 + 6 + 5 + 4 + 3 + 3 + 4 * 3 + 3  # 42
_CALLS = itertools.count()


@pytest.fixture(scope="module")
def results_server(results_fhir_server: str) -> str:
    """The suite's second HAPI (tests/conftest.py), the results store."""
    return results_fhir_server


@pytest.fixture(scope="module")
def pair(fhir_server: str, results_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """The demo's options for the two servers, with a state of the module's; no demo data before or after."""
    state = str(tmp_path_factory.mktemp("demo-two") / "state.sqlite")
    args = ["--server", fhir_server, "--results-server", results_server, "--state", state]
    one_server = runner.invoke(app, ["demo", "--server", fhir_server, "--state", state, "--cleanup"])
    assert one_server.exit_code == 0, one_server.output  # an earlier one-server demo's results on the EHR
    assert runner.invoke(app, ["demo", *args, "--cleanup"]).exit_code == 0
    yield args
    runner.invoke(app, ["demo", *args, "--cleanup"])


def tagged(base: str, rtype: str) -> int:
    """How many demo-tagged resources the server holds now (past HAPI's search cache: the same count is asked twice)."""
    with client(base) as c:
        params = {"_tag": TAG, "_summary": "count"}
        return int(c.request("GET", rtype, params=params, headers={"Cache-Control": "no-cache"}).json()["total"])


def notes(base: str) -> list[dict]:
    """The DocumentReferences our write-back made for the demo's patients, as the EHR holds them."""
    subjects = ",".join(f"Patient/{p}" for p in demo_patient_ids())
    with client(base) as c:  # a new _count each call: HAPI's search cache never answers an earlier search
        found = list(c.search("DocumentReference", {"subject": subjects, "_count": str(200 + next(_CALLS))}))
    return [n for n in found if any(i.get("system") == WRITEBACK_IDENTIFIER_SYSTEM for i in n.get("identifier", []))]


def test_the_two_server_demo_keeps_results_in_the_store_and_notes_in_the_ehr(pair, fhir_server, results_server):
    first = runner.invoke(app, ["demo", *pair, "--json"])
    assert first.exit_code == 0, first.output
    runs = json.loads(first.stdout)
    assert (runs["first"]["written"], runs["first"]["ehr_written"]) == (RESPONSES, RESPONSES)
    assert (runs["second"]["written"], runs["second"]["ehr_written"]) == (0, 0)  # the demo's own second sync
    assert runs["first"]["writeback"][0].startswith("scores: note (DocumentReference create offered")
    # Observations, DetectedIssues only in the store; the forms and the notes only in the EHR
    assert tagged(results_server, "Observation") == RESPONSES and tagged(results_server, "DetectedIssue") > 0
    assert tagged(fhir_server, "Observation") == tagged(fhir_server, "DetectedIssue") == 0
    assert tagged(fhir_server, "QuestionnaireResponse") == RESPONSES
    assert tagged(results_server, "QuestionnaireResponse") == 0
    held = notes(fhir_server)
    assert len(held) == RESPONSES and {n["status"] for n in held} == {"current"}
    with client(results_server) as store:
        assert not list(store.search("DocumentReference", {"_count": "1"}))

    # a whole second demo: the forms are PUT again unchanged (HAPI keeps their versions), nothing is written
    versions = {n["id"]: n["meta"]["versionId"] for n in held}
    again = runner.invoke(app, ["demo", *pair, "--json"])
    assert again.exit_code == 0, again.output
    rerun = json.loads(again.stdout)
    assert rerun["first"]["written"] == rerun["first"]["ehr_written"] == rerun["signals"]["written"] == 0
    assert {n["id"]: n["meta"]["versionId"] for n in notes(fhir_server)} == versions

    # cleanup removes the demo from both sides
    cleaned = runner.invoke(app, ["demo", *pair, "--cleanup"])
    assert cleaned.exit_code == 0, cleaned.output
    assert notes(fhir_server) == []
    for rtype in ("Observation", "DetectedIssue", "Task"):
        assert tagged(results_server, rtype) == 0, rtype
    for rtype in ("QuestionnaireResponse", "Encounter", "Patient", "Practitioner"):
        assert tagged(fhir_server, rtype) == 0, rtype


def test_the_printed_next_steps_call_the_hook_with_the_results_store_behind_it(pair, fhir_server, results_server):
    result = runner.invoke(app, ["demo", *pair])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stderr.split())
    assert "plays the EHR (a stand-in: plain FHIR, not a vendor's EHR)" in text
    # Kim Couple's last SRS form: session 3 (7 September 2026 + 2 weeks), total 31.0 of 40, below the cutoff 36
    assert "(SRS), session 3, 21 September 2026" in text
    assert "Total 31 of 40: below 36, the level of concern." in text
    assert f"the card is computed from the results store {results_server}" in text
    config = next(Path(p) for p in result.stderr.split() if p.endswith("alliance-fhir.toml"))
    assert f'[results]\nurl = "{results_server}"' in config.read_text()
