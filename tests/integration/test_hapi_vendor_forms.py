"""Vendor-shaped responses on the real HAPI, read by `sync` through the example form maps (form-maps/examples/,
invented ids; named as a site names its own folder, the ``vendor_catalog`` fixture).

No Questionnaire of ours is involved: the Epic-like response names the vendor's Questionnaire by a
literal reference (HAPI refuses a dangling local reference, so the vendor's bare Questionnaire is
there, as it is in the EHR), the OpenEMR-like one by a canonical that no Questionnaire on the
server has. Hand-computed: SRS 9.1 + 8.4 + 6.0 + 7.5 = 31.0; WAI-SR twelve "Sometimes" (2) = 24.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from alliance_fhir.instruments.catalog import Catalog
from alliance_fhir.scoring.observations import observation_identifier_for
from alliance_fhir.server.state import StateStore
from alliance_fhir.server.sync import SyncOptions, run_sync

from ..scoring.test_vendor_forms import EPIC_SRS, epic_srs, openemr_wai
from .helpers import client, unique
from .test_hapi_sync import observations, post_all

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(fhir_server: str) -> str:
    """The EHR's own (bare) Questionnaire for the Epic-like form; none of ours is published."""
    vendor_id = EPIC_SRS.removeprefix("Questionnaire/")
    with client(fhir_server) as c:
        c.request("PUT", EPIC_SRS, json={"resourceType": "Questionnaire", "id": vendor_id, "status": "active"})
    return fhir_server


def sync(base: str, catalog: Catalog, state: Path, patient: str):  # noqa: ANN201
    with client(base) as c, StateStore(state) as store:
        return run_sync(c, catalog, store, SyncOptions(patient=patient))


def test_vendor_responses_on_hapi_are_scored_exactly_once(server, vendor_catalog, tmp_path):
    patient = f"Patient/{unique('p')}"
    epic = {**epic_srs((9.1, 8.4, 6.0, 7.5), rid=unique("epic")), "subject": {"reference": patient}}
    oemr = {**openemr_wai([2] * 12, rid=unique("oemr")), "subject": {"reference": patient}}
    bad = {**openemr_wai([2] * 12, rid=unique("bad")), "subject": {"reference": patient}}
    bad["item"][0]["item"][6]["answer"] = [{"valueString": "7,5"}]
    post_all(server, [epic, oemr, bad])

    report = sync(server, vendor_catalog, tmp_path / "s.sqlite", patient)
    assert (report.found, report.written, report.failed) == (3, 2, 1), report.failures
    [failure] = report.failures
    assert failure.reason == (
        f"QuestionnaireResponse/{bad['id']}: item 'wai_q07': the valueString is not among the map's labels "
        "(form map 'openemr-like-wai-sr' -> wai-sr item 7)"
    )
    found = {o["derivedFrom"][0]["reference"].split("/")[1]: o for o in observations(server, patient)}
    assert sorted(found) == sorted([epic["id"], oemr["id"]])
    assert found[epic["id"]]["valueQuantity"]["value"] == 31.0
    assert [c["valueQuantity"]["value"] for c in found[epic["id"]]["component"]] == [9.1, 8.4, 6.0, 7.5]
    assert found[oemr["id"]]["valueQuantity"]["value"] == 24
    assert found[epic["id"]]["identifier"][0]["value"] == observation_identifier_for(
        {"id": epic["id"]}, vendor_catalog.get("srs").mapping
    )

    again = sync(server, vendor_catalog, tmp_path / "s.sqlite", patient)
    assert (again.written, again.failed) == (0, 0) and len(observations(server, patient)) == 2
