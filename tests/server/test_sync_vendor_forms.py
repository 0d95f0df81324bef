"""Vendor-shaped responses end to end off line: `score` on a file, and `sync` against the fake server,
which must search for the vendor's Questionnaire and write the same Observation our own form would get.

The maps are the examples (``form-maps/examples/``, invented ids), named as a site names its own folder.
Hand-computed: SRS 9.1 + 8.4 + 6.0 + 7.5 = 31.0; WAI-SR all "Sometimes" (2) x 12 = 24, each subscale 4 x 2 = 8.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from alliance_fhir.cli.main import app
from alliance_fhir.scoring.observations import observation_identifier_for

from ..fake_fhir import BASE, FakeFhir
from ..scoring.test_vendor_forms import EPIC_SRS, OEMR_WAI, epic_srs, openemr_wai
from .test_sync import observations, qr_search, sync

runner = CliRunner()
FORM_MAP_EXAMPLES = Path(__file__).resolve().parents[2] / "form-maps" / "examples"  # the two example maps


def test_score_reads_a_vendor_shaped_file_offline(tmp_path: Path):
    path = tmp_path / "epic.ndjson"
    good, bad = epic_srs((9.1, 8.4, 6.0, 7.5), rid="a1"), epic_srs((9.1, 8.4, 10.4, 7.5), rid="a2")
    path.write_text("\n".join(json.dumps(r) for r in (good, bad, openemr_wai([2] * 12, rid="w1"))) + "\n")
    result = runner.invoke(app, ["score", "--instruments", str(FORM_MAP_EXAMPLES), "--format", "ndjson", str(path)])
    assert result.exit_code == 1  # one response failed; the others are written
    written = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(o["derivedFrom"][0]["reference"], o["valueQuantity"]["value"]) for o in written] == [
        ("QuestionnaireResponse/a1", 31.0),
        ("QuestionnaireResponse/w1", 24),
    ]
    assert [c["valueQuantity"]["value"] for c in written[0]["component"]] == [9.1, 8.4, 6.0, 7.5]
    assert [c["valueQuantity"]["value"] for c in written[1]["component"]] == [8, 8, 8]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: QuestionnaireResponse/a2: item '9990003': valueDecimal is out of the vendor range 0-10 "
        f"(form map 'epic-like-srs' -> srs item 3) ({path}:2)"
    ]


def _server_with_vendor_responses() -> FakeFhir:
    server = FakeFhir()
    server.put(epic_srs((9.1, 8.4, 6.0, 7.5), rid="e1"))
    server.put(openemr_wai([2] * 12, rid="w1"))
    server.put({**epic_srs((9.1, 8.4, 6.0, 7.5), rid="x1"), "questionnaire": "Questionnaire/someone-elses"})
    return server


def test_sync_searches_the_vendor_questionnaires_and_writes_our_observations(vendor_catalog, store):
    server = _server_with_vendor_responses()
    report = sync(server, vendor_catalog, store)
    assert (report.found, report.written, report.failed) == (2, 2, 0), report.failures
    values = dict(qr_search(server).url.params)["questionnaire"].split(",")
    assert {EPIC_SRS, f"{BASE}/{EPIC_SRS}", OEMR_WAI} <= set(values)
    by_response = {o["derivedFrom"][0]["reference"].partition("/_history")[0]: o for o in observations(server)}
    assert by_response["QuestionnaireResponse/e1"]["valueQuantity"]["value"] == 31.0
    assert by_response["QuestionnaireResponse/w1"]["valueQuantity"]["value"] == 24
    srs = vendor_catalog.get("srs").mapping
    assert by_response["QuestionnaireResponse/e1"]["identifier"][0]["value"] == observation_identifier_for(
        {"id": "e1"}, srs
    )


def test_a_second_sync_writes_nothing_and_a_vendor_retraction_is_carried(vendor_catalog, store):
    server = _server_with_vendor_responses()
    sync(server, vendor_catalog, store)
    again = sync(server, vendor_catalog, store)
    assert (again.written, again.unchanged, again.failed) == (0, 2, 0)
    retracted: dict[str, Any] = {**epic_srs((9.1, 8.4, 6.0, 7.5), rid="e1"), "status": "entered-in-error"}
    server.put(retracted)
    third = sync(server, vendor_catalog, store)
    assert third.retracted == 1
    [obs] = [o for o in observations(server) if o["derivedFrom"][0]["reference"].startswith("QuestionnaireResponse/e1")]
    assert obs["status"] == "entered-in-error"


def test_a_bad_vendor_answer_fails_that_response_and_the_rest_goes_on(vendor_catalog, store):
    server = _server_with_vendor_responses()
    bad = openemr_wai([2] * 12, rid="w2")
    bad["item"][0]["item"][0]["answer"] = [{"valueString": "Mostly"}]
    server.put(bad)
    report = sync(server, vendor_catalog, store)
    assert (report.written, report.failed) == (2, 1)
    [failure] = report.failures
    assert failure.reason.endswith(
        "item 'wai_q01': the valueString is not among the map's labels (form map 'openemr-like-wai-sr' -> wai-sr item 1)"
    )


def test_an_instrument_filter_searches_only_its_vendor_forms(vendor_catalog, store):
    server = _server_with_vendor_responses()
    report = sync(server, vendor_catalog, store, instruments=("wai-sr",))
    assert report.written == 1
    values = dict(qr_search(server).url.params)["questionnaire"].split(",")
    assert OEMR_WAI in values and EPIC_SRS not in values
