"""Client-facing Questionnaires on the real HAPI: published beside the full forms (both canonicals
resolve to one resource each), and sync finds and scores a client portal's responses to them.

Golden values by hand from /work/shared/instruments.md: WAI-SR all 12 items "Very often" (4) gives
total 48 and Task/Bond/Goal 16 each (4 items x 4); SRS lines 9.5, 9, 8.1, 7 give 33.6 (below 36).
"""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from alliance_fhir import content_resources, load_catalog
from alliance_fhir._ids import IDENTIFIER_SYSTEM
from alliance_fhir.cli.main import app
from alliance_fhir.server.state import StateStore
from alliance_fhir.server.sync import SyncOptions, run_sync

from .helpers import client, errors, unique, validate
from .test_hapi_sync import post_all, srs, wai_sr
from .test_hapi_sync import server as server  # noqa: F401 - the fixture that publishes our Questionnaires

pytestmark = pytest.mark.integration
CATALOG = load_catalog()
runner = CliRunner()


def questionnaires(base: str, url: str) -> list[dict[str, Any]]:
    with client(base) as c:
        return list(c.search("Questionnaire", {"url": url}))


def test_publish_for_client_puts_both_forms_on_the_server(server):  # noqa: F811
    result = runner.invoke(app, ["publish", "--server", server, "--for-client", "--json"])
    assert result.exit_code == 0, result.output
    with client(server) as c:
        for form in [r for r in content_resources(CATALOG, for_client=True) if r["resourceType"] == "Questionnaire"]:
            assert errors(validate(c, form)) == [], form["id"]
    for inst in CATALOG:
        [full] = questionnaires(server, inst.url)
        [portal] = questionnaires(server, inst.client_url)  # one resource per canonical: nothing ambiguous
        assert portal["derivedFrom"] == [inst.canonical] and full["version"] == portal["version"] == inst.version
        assert "itemWeight" not in str(portal) and "itemWeight" in str(full) or inst.items["1"].kind == "number"
    again = runner.invoke(app, ["publish", "--server", server, "--for-client", "--json"])
    assert again.exit_code == 0 and '"created"' not in again.stdout and '"updated"' not in again.stdout


def totals(observation: dict[str, Any]) -> dict[str, Any]:
    found = {"total": observation["valueQuantity"]["value"]}
    for component in observation.get("component", []):
        found[component["code"]["coding"][0]["code"]] = component["valueQuantity"]["value"]
    return found


def test_sync_finds_and_scores_responses_to_the_client_forms(server, tmp_path):  # noqa: F811
    patient = f"Patient/{unique('portal')}"
    wai = wai_sr(patient, unique("qr-wai"), 4)
    wai["questionnaire"] = CATALOG.get("wai-sr").client_canonical
    vas = srs(patient, unique("qr-srs"), (9.5, 9, 8.1, 7))
    vas["questionnaire"] = CATALOG.get("srs").client_url  # unversioned: the latest version, with a warning
    post_all(server, [wai, vas])
    with client(server) as c, StateStore(tmp_path / "state.sqlite") as store:
        report = run_sync(c, CATALOG, store, SyncOptions(patient=patient))
        assert (report.found, report.written, report.failed, report.unattributed) == (2, 2, 0, [])
        again = run_sync(c, CATALOG, store, SyncOptions(patient=patient))
        assert again.written == 0
        found = {
            o["derivedFrom"][0]["reference"].split("/")[1]: o
            for o in c.search("Observation", {"subject": patient, "identifier": f"{IDENTIFIER_SYSTEM}|"})
        }
    assert totals(found[wai["id"]]) == {"total": 48, "wai-sr-task": 16, "wai-sr-bond": 16, "wai-sr-goal": 16}
    # 9.5 + 9 + 8.1 + 7 = 33.6; each line is kept as its own component
    assert totals(found[vas["id"]]) == {
        "total": 33.6,
        "srs-relationship": 9.5,
        "srs-goals": 9,
        "srs-approach": 8.1,
        "srs-overall": 7,
    }
    # the Observation names the full instrument, as for a response to the full form
    instantiates = {o["extension"][0]["valueCanonical"] for o in found.values()}
    assert instantiates == {CATALOG.get("wai-sr").canonical, CATALOG.get("srs").canonical}
