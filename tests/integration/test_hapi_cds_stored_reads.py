"""The hook's stored reads against the real HAPI: after sync, and after an amendment, a hook answered
from the stored read gives exactly the cards of a fresh read of HAPI.

Hand-computed: WAI-SR with every item "fairly often" (4) is 12 x 4 = 48, "sometimes" (3) 12 x 3 = 36;
48 -> 36 (a drop of 12 >= 3) is an open rupture; the amendment makes the second session 48 again
(no drop), so the rupture card goes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from alliance_fhir import load_catalog
from alliance_fhir.server.state import StateStore
from alliance_fhir.server.sync import SyncOptions, run_sync
from alliance_fhir.service.cds import CdsService
from alliance_fhir.service.cds_auth import CdsSettings
from alliance_fhir.service.cds_read import PatientReader

from .helpers import client, unique
from .test_hapi_sync import post_all, wai_sr

pytestmark = pytest.mark.integration
CATALOG = load_catalog()


def cards(service: CdsService, fhir: str, patient: str) -> list[dict[str, Any]]:
    body = {
        "hook": "patient-view",
        "hookInstance": "5b0d3c1e-0000-4000-8000-000000000001",
        "fhirServer": fhir,
        "context": {"userId": "Practitioner/p1", "patientId": patient.split("/")[1]},
    }
    # a link carries a fresh token per call: everything else must be equal
    return [{k: v for k, v in c.items() if k not in ("uuid", "links")} for c in service.answer(body)["cards"]]


def test_stored_reads_give_the_cards_of_a_fresh_hapi_read_after_sync_and_after_an_amendment(
    fhir_server, tmp_path: Path
):
    patient = f"Patient/{unique('cds-stored')}"
    first, second = wai_sr(patient, unique("s1"), 4), wai_sr(patient, unique("s2"), 3)  # 48, then 36
    second["authored"] = "2026-11-09T10:00:00Z"
    post_all(fhir_server, [first, second])
    with client(fhir_server) as c, StateStore(tmp_path / "s.sqlite") as store:
        stored = CdsService.build(c, CATALOG, store, CdsSettings(), "http://cds.test")
        fresh = CdsService.build(c, CATALOG, store, CdsSettings(stored_read_max_age_seconds=0), "http://cds.test")
        reader = PatientReader(c, CATALOG, store.cds_summaries)
        run_sync(c, CATALOG, store, SyncOptions(patient=patient))

        after_sync = cards(stored, fhir_server, patient)  # reads HAPI and stores the read
        assert [x["source"]["topic"]["code"] for x in after_sync] == ["alliance-rupture"]
        assert reader.read(patient)[1] == "stored read"
        assert cards(stored, fhir_server, patient) == after_sync == cards(fresh, fhir_server, patient)

        amended = wai_sr(patient, second["id"], 4)  # the clinic corrects session 2: 48
        amended.update(status="amended", authored="2026-11-09T10:00:00Z")
        post_all(fhir_server, [amended])
        run_sync(c, CATALOG, store, SyncOptions(patient=patient))  # rewrites session 2 and says P changed

        read, where = reader.read(patient)
        assert where == "FHIR server"
        totals = sorted(
            o["valueQuantity"]["value"] for o in read.observations if o["code"]["coding"][0]["code"] == "wai-sr-total"
        )
        assert totals == [48, 48]
        after_amendment = cards(stored, fhir_server, patient)
        assert "alliance-rupture" not in [x["source"]["topic"]["code"] for x in after_amendment]
        assert after_amendment == cards(fresh, fhir_server, patient)
        assert reader.read(patient)[1] == "stored read"
