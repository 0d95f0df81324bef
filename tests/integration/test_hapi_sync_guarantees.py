"""Issue 11 on the real HAPI: every write mode (forced), literal Questionnaire references,
outstanding failures, the status filter on our side, and `check`'s write mode."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from alliance_fhir import content_resources
from alliance_fhir.server.publish import publish_resources
from alliance_fhir.server.state import StateStore
from alliance_fhir.server.sync import SyncOptions, run_sync
from alliance_fhir.server.writes import choose_write_mode

from .helpers import client, unique
from .test_hapi_sync import CATALOG, by_response, caseload, observations, post_all, wai_sr

pytestmark = pytest.mark.integration
WAI_URL = "http://alliance-fhir.org/fhir/Questionnaire/wai-sr"


@pytest.fixture(scope="module")
def server(fhir_server: str) -> str:
    with client(fhir_server) as c:
        assert not [r for r in publish_resources(c, content_resources(CATALOG)) if r.action == "failed"]
    return fhir_server


def sync(base: str, state: Path, patient: str, **settings):  # noqa: ANN003, ANN201
    mode = settings.pop("write_mode", None)
    with client(base, **settings) as c, StateStore(state) as store:
        return run_sync(c, CATALOG, store, SyncOptions(patient=patient, write_mode=mode))


def test_hapi_gets_transactions_in_auto_mode(server):
    with client(server) as c:
        plan = choose_write_mode(c.r4_capabilities())
    assert plan.mode == "transaction" and "transactions" in plan.reason


@pytest.mark.parametrize("mode", ["transaction", "batch", "single", "search"])
def test_every_write_mode_forced_on_hapi_writes_exactly_once_with_exact_values(server, tmp_path, mode):
    patient = f"Patient/{unique('p')}"
    resources, expected = caseload(patient, 9)
    post_all(server, resources)
    report = sync(server, tmp_path / "s.sqlite", patient, write_mode=mode, page_size=4, batch_size=3)
    assert report.write_mode == mode and (report.found, report.written, report.failed) == (9, 9, 0), report.failures
    found = observations(server, patient)
    assert by_response(found) == expected
    assert max(Counter(o["identifier"][0]["value"] for o in found).values()) == 1
    again = sync(server, tmp_path / "s.sqlite", patient, write_mode=mode)
    assert (again.written, again.unchanged, again.failed) == (0, 9, 0) and again.ok
    with (
        StateStore(tmp_path / "other.sqlite") as fresh,
        client(server) as c,
    ):  # a lost ledger: rewritten, not duplicated
        rerun = run_sync(c, CATALOG, fresh, SyncOptions(patient=patient, write_mode=mode))
    assert rerun.written == 9 and len(observations(server, patient)) == 9


def wai_sr_server_id(base: str) -> str:
    """The server id publish gave WAI-SR 1.0.0."""
    with client(base) as c:
        [questionnaire] = list(c.search("Questionnaire", {"url": WAI_URL, "version": "1.0.0"}))
    return str(questionnaire["id"])


def test_finding_9_a_literal_reference_to_our_questionnaire_is_found_and_scored(server, tmp_path):
    patient = f"Patient/{unique('p')}"
    relative = wai_sr(patient, unique("rel"), 2)
    relative["questionnaire"] = f"Questionnaire/{wai_sr_server_id(server)}"
    post_all(server, [relative])
    report = sync(server, tmp_path / "s.sqlite", patient)
    assert (report.found, report.written, report.failed) == (1, 1, 0)
    [obs] = observations(server, patient)
    assert obs["valueQuantity"]["value"] == 24  # 12 x Sometimes (2), scored as wai-sr|1.0.0


def test_hapi_does_not_find_an_absolute_reference_to_itself_by_questionnaire(server):
    """Pins HAPI 8.8's behaviour: it indexes `<its base>/Questionnaire/ID` but a questionnaire= search
    by that URL (or by Questionnaire/ID) does not return it. Sync searches both forms, so a server that
    does index it is covered; on HAPI such responses stay invisible to any questionnaire search."""
    patient = f"Patient/{unique('p')}"
    qid = wai_sr_server_id(server)
    absolute = wai_sr(patient, unique("abs"), 3)
    absolute["questionnaire"] = f"{server}/Questionnaire/{qid}"
    post_all(server, [absolute])
    with client(server) as c:
        values = f"Questionnaire/{qid},{server}/Questionnaire/{qid}"
        found = list(c.search("QuestionnaireResponse", {"questionnaire": values, "subject": patient}))
    assert found == []


def test_finding_10_failures_stay_outstanding_across_runs_until_fixed(server, tmp_path):
    patient = f"Patient/{unique('p')}"
    bad = wai_sr(patient, unique("bad"), 4)
    bad["item"] = bad["item"][:5]  # too many missing
    post_all(server, [bad, wai_sr(patient, unique("ok"), 4)])
    first = sync(server, tmp_path / "s.sqlite", patient)
    assert first.failed == 1 and not first.ok
    for _ in range(2):
        later = sync(server, tmp_path / "s.sqlite", patient)
        assert later.failed == 0 and not later.ok
        assert [f.response_id for f in later.outstanding] == [bad["id"]] and "too many missing" in later.outstanding[
            0
        ].reason
    fixed = wai_sr(patient, bad["id"], 4)
    post_all(server, [fixed])
    done = sync(server, tmp_path / "s.sqlite", patient)
    assert done.ok and done.written == 1 and done.outstanding == []


def test_in_progress_responses_are_filtered_on_our_side(server, tmp_path):
    patient = f"Patient/{unique('p')}"
    draft = wai_sr(patient, unique("draft"), 4)
    draft["status"] = "in-progress"
    post_all(server, [draft, wai_sr(patient, unique("done"), 4)])
    report = sync(server, tmp_path / "s.sqlite", patient)
    assert (report.found, report.skipped, report.written) == (1, 1, 1)
