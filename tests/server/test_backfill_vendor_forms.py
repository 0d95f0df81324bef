"""Back-fill reads vendor forms as sync does: the export asks for the vendor Questionnaires a form map
claims, the responses it returns are scored through their map, and a job kicked off with other maps is
not resumed with these (its export would miss a vendor's responses, yet move sync's checkpoint).

The maps are the examples (``form-maps/examples/``, invented ids), named as a site names its own folder.
Hand-computed: SRS 9.1 + 8.4 + 6.0 + 7.5 = 31.0; WAI-SR twelve "Sometimes" (2) = 24.
"""

from __future__ import annotations

import json

import pytest

from alliance_fhir.errors import ConfigError
from alliance_fhir.server.backfill import BackfillOptions

from ..fake_bulk import STAMP, STATUS
from ..fake_fhir import BASE
from ..scoring.test_vendor_forms import EPIC_SRS, OEMR_WAI, epic_srs, openemr_wai
from .test_backfill import backfill, observations


def _stamped(response: dict[str, object]) -> dict[str, object]:
    return {**response, "meta": {"versionId": "1", "lastUpdated": "2026-11-10T10:00:00.000+00:00"}}


def test_the_export_asks_for_the_mapped_vendor_questionnaires_and_scores_them(bulk, store, vendor_catalog):
    epic, oemr = _stamped(epic_srs((9.1, 8.4, 6.0, 7.5), rid="e1")), _stamped(openemr_wai([2] * 12, rid="w1"))
    bulk.files = [[epic, oemr]]
    report = backfill(bulk, store, vendor_catalog)
    assert report.ok and report.complete and report.sync.written == 2 and report.ignored == 0
    kickoff = bulk.kickoffs[0]["body"]["parameter"]
    filters = [p["valueString"] for p in kickoff if p["name"] == "_typeFilter"]
    for value in (EPIC_SRS, f"{BASE}/{EPIC_SRS}", OEMR_WAI):
        assert f"QuestionnaireResponse?questionnaire={value}" in filters
    assert len(filters) == 7 + 3  # our seven canonicals, the Epic-like reference twice, the OpenEMR-like canonical
    totals = {o["derivedFrom"][0]["reference"].split("/")[1]: o["valueQuantity"]["value"] for o in observations(bulk)}
    assert totals == {"e1": 31.0, "w1": 24}
    assert store.checkpoint(BASE) == STAMP  # the export covered what sync covers, vendor forms included


def test_an_instrument_filter_keeps_only_its_vendor_forms(bulk, store, vendor_catalog):
    epic, oemr = _stamped(epic_srs((9.1, 8.4, 6.0, 7.5), rid="e1")), _stamped(openemr_wai([2] * 12, rid="w1"))
    bulk.files = [[epic, oemr]]  # the fake ignores _typeFilter: the Epic-like SRS is filtered here
    report = backfill(bulk, store, vendor_catalog, instruments=("wai-sr",))
    assert report.sync.written == 1 and report.ignored == 1
    filters = [p["valueString"] for p in bulk.kickoffs[0]["body"]["parameter"] if p["name"] == "_typeFilter"]
    assert f"QuestionnaireResponse?questionnaire={OEMR_WAI}" in filters
    assert not any(EPIC_SRS in f for f in filters)


def test_without_maps_a_vendor_response_is_not_asked_for(bulk, store, catalog):
    bulk.files = [[_stamped(openemr_wai([2] * 12, rid="w1"))]]
    report = backfill(bulk, store, catalog)
    assert report.sync.written == 0 and report.ignored == 1 and observations(bulk) == []


def test_a_job_kicked_off_with_other_form_maps_is_not_resumed(bulk, store, vendor_catalog):
    store.bulk_start(BASE, json.dumps({"asked": BackfillOptions().asked(), "since": None}), STATUS)  # no maps then
    with pytest.raises(ConfigError, match="with other form maps is in progress"):
        backfill(bulk, store, vendor_catalog)
    assert bulk.kickoffs == [] and store.bulk_job(BASE) is not None  # nothing asked, the job is kept
