"""Two real HAPI servers: the source holds the responses (as an EHR would), the results store the results.

The source is the session's HAPI (``$ALLIANCE_FHIR_TEST_SERVER``, else the harness); the results
store is a second HAPI (``$ALLIANCE_FHIR_TEST_RESULTS_SERVER``, else the harness on the next port).
The store holds nothing of the source: our results name the source's people, sessions and
responses absolute on the source's URL, which HAPI accepts as external references (the harness
allows them, as a results store must: docs/two-servers.md, "What the results store must accept")
while it keeps its default referential integrity on write. Proven end to end: sync, signals and
the CDS hook; Observations land only in the store and name the source absolute, the store is
searched by the source's absolute reference, a re-run writes nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from alliance_fhir.content.questionnaires import content_resources
from alliance_fhir.instruments.catalog import Catalog
from alliance_fhir.server.demo import DEMO_TAG, demo_resources
from alliance_fhir.server.publish import publish_resources
from alliance_fhir.server.signal_sync import run_signals
from alliance_fhir.server.state import ServerPair, StateStore
from alliance_fhir.server.sync import SyncOptions, run_sync
from alliance_fhir.server.transactions import put_by_id
from alliance_fhir.service.cds import CdsService
from alliance_fhir.service.cds_auth import CdsSettings

from .helpers import client

pytestmark = pytest.mark.integration
TAG = f"{DEMO_TAG['system']}|{DEMO_TAG['code']}"


@pytest.fixture(scope="module")
def results_server(results_fhir_server: str) -> str:
    """The suite's second HAPI (tests/conftest.py), the results store."""
    return results_fhir_server


def _count(base: str, rtype: str) -> int:
    with client(base) as c:
        # fresh: HAPI answers a repeated identical search from its cache, and this one is asked before and after
        answer = c.request(
            "GET", rtype, params={"_tag": TAG, "_summary": "count"}, headers={"Cache-Control": "no-cache"}
        )
    return int(answer.json()["total"])


@pytest.fixture(scope="module")
def seeded(fhir_server: str, results_server: str, catalog: Catalog) -> tuple[str, str]:
    """The demo caseload on the source only: the store gets nothing but what sync and signals write."""
    with client(fhir_server) as source:
        publish_resources(source, content_resources(catalog))
        put_by_id(source, list(demo_resources(catalog)))
    return fhir_server, results_server


def test_sync_signals_and_the_cds_hook_keep_every_result_in_the_store(seeded, catalog, tmp_path: Path):
    source_url, store_url = seeded
    responses = _count(source_url, "QuestionnaireResponse")
    # the source is the suite's shared HAPI: other tests' one-server demo runs may have left their own results
    # there; what this test proves is that the two-server run adds none
    on_source = {rtype: _count(source_url, rtype) for rtype in ("Observation", "DetectedIssue")}
    in_store = {rtype: _count(store_url, rtype) for rtype in ("Observation", "DetectedIssue")}  # a shared store too
    with (
        StateStore(tmp_path / "state.sqlite") as state,
        client(source_url) as source,
        client(store_url) as store,
    ):
        first = run_sync(source, catalog, state, SyncOptions(tag=DEMO_TAG), results=store)
        assert first.failed == 0 and first.written == responses > 0  # one Observation per completed response
        assert first.results_server == store_url and first.server == source_url
        assert _count(store_url, "Observation") == in_store["Observation"] + responses
        assert _count(source_url, "Observation") == on_source["Observation"]
        assert _count(store_url, "Patient") == _count(store_url, "Encounter") == 0  # no copies of the source
        rupture = f"{source_url}/Patient/afdemo-rupture"
        with client(store_url) as c:  # the store finds them by the source's absolute reference
            scores = list(c.search("Observation", {"subject": rupture, "_tag": TAG}))
        assert scores and all(o["subject"]["reference"] == rupture for o in scores)
        assert all(o["derivedFrom"][0]["reference"].startswith(f"{source_url}/QuestionnaireResponse/") for o in scores)
        assert all(o["encounter"]["reference"].startswith(f"{source_url}/Encounter/") for o in scores)
        again = run_sync(source, catalog, state, SyncOptions(tag=DEMO_TAG), results=store)
        assert again.written == 0 and again.unchanged == responses  # a re-run writes nothing
        assert state.checkpoint(ServerPair(source_url, store_url)) is not None
        assert state.checkpoint(source_url) is None  # the one-server entry of the source is another entry

        report, found, _ = run_signals(store, catalog, tag=DEMO_TAG, source=source)
        issues = _count(store_url, "DetectedIssue") - in_store["DetectedIssue"]
        assert report.written == issues > 0 and _count(source_url, "DetectedIssue") == on_source["DetectedIssue"]
        assert any(s.subject == "Patient/afdemo-rupture" for s in found)  # read back as the source names it
        assert run_signals(store, catalog, tag=DEMO_TAG, source=source)[0].written == 0
        with client(store_url) as c:
            theirs = list(c.search("DetectedIssue", {"patient": rupture, "_tag": TAG}))
        assert theirs and all(i["patient"]["reference"] == rupture for i in theirs)
        # one client's signals, as serve runs them after a write: found by the absolute reference, unchanged
        one, _, _ = run_signals(store, catalog, patient="Patient/afdemo-rupture", tag=DEMO_TAG, source=source)
        assert one.observations > 0 and one.written == 0 and one.unchanged == len(theirs)

        cds = CdsService.build(source, catalog, state, CdsSettings(), "http://127.0.0.1:9", None, store)
        request = {
            "hook": "patient-view",
            "hookInstance": "two-servers",
            "fhirServer": source_url,
            "context": {"patientId": "afdemo-rupture", "userId": "Practitioner/afdemo-t1"},
        }
        cards = cds.answer(request)["cards"]
        assert cards and all("afdemo" not in card["summary"] for card in cards)  # names, never ids
        assert any(card["detail"].startswith("**Robin Rupture**") for card in cards)  # the name from the source
        assert _count(source_url, "Observation") == on_source["Observation"]  # the hook wrote nothing to the source
