"""Security labels on the real HAPI: stored, searchable with ``_security``, applied once, and what
HAPI does with labels on update (it keeps them: the reason ``sync`` warns when one is dropped)."""

from __future__ import annotations

from typing import Any

import pytest

from alliance_fhir import load_catalog
from alliance_fhir._ids import IDENTIFIER_SYSTEM, SIGNAL_IDENTIFIER_SYSTEM
from alliance_fhir._security import NO_LABELS, SecurityLabels
from alliance_fhir.server.signal_sync import run_signals
from alliance_fhir.server.state import StateStore
from alliance_fhir.server.sync import SyncOptions, run_sync

from .helpers import client, unique
from .test_hapi_sync import post_all, wai_sr
from .test_hapi_sync import server as server  # noqa: F401 - the fixture that publishes our Questionnaires

pytestmark = pytest.mark.integration
CATALOG = load_catalog()
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
R_PSY = SecurityLabels.parse("R", ["PSY"])


def search(base: str, rtype: str, **params: str) -> list[dict[str, Any]]:
    with client(base) as c:
        page = c.request("GET", rtype, params={"_count": "200", **params}, headers={"Cache-Control": "no-cache"})
    body = page.json()
    assert page.status_code == 200 and body["resourceType"] == "Bundle", body
    return [e["resource"] for e in body.get("entry", [])]


def versions(resources: list[dict[str, Any]]) -> dict[str, str]:
    return {r["id"]: r["meta"]["versionId"] for r in resources}


def test_labels_are_stored_searchable_and_applied_exactly_once(server, tmp_path):  # noqa: F811
    tag = {"system": "urn:alliance-fhir:test", "code": unique("labels")}
    token = f"{tag['system']}|{tag['code']}"
    patient = f"Patient/{unique('p')}"
    responses = [wai_sr(patient, unique("qr"), v) for v in (2, 3, 4)]
    for response in responses:
        response["meta"] = {"tag": [tag]}
    post_all(server, responses)
    mine = {"_tag": token, "identifier": f"{IDENTIFIER_SYSTEM}|"}
    with client(server) as c, StateStore(tmp_path / "state.sqlite") as store:
        first = run_sync(c, CATALOG, store, SyncOptions(tag=tag))
        assert (first.written, first.failed) == (3, 0)
        assert all("security" not in o["meta"] for o in search(server, "Observation", **mine))  # off: as before
        relabel = run_sync(c, CATALOG, store, SyncOptions(tag=tag, security=R_PSY))
        assert (relabel.written, relabel.failed) == (3, 0)  # nothing changed but the labels: each rewritten once
        labelled = search(server, "Observation", **mine)
        assert len(labelled) == 3
        for observation in labelled:
            codes = {(c["system"], c["code"]) for c in observation["meta"]["security"]}
            assert codes == {(CONF, "R"), (ACT, "PSY")}
        before = versions(labelled)
        again = run_sync(c, CATALOG, store, SyncOptions(tag=tag, security=R_PSY))
        assert (again.written, again.failed) == (0, 0)
    assert versions(search(server, "Observation", **mine)) == before  # the re-run wrote nothing
    # _security finds them; a search without the label still finds the same three; another label none
    assert {o["id"] for o in search(server, "Observation", _security=f"{CONF}|R", **mine)} == set(before)
    assert {o["id"] for o in search(server, "Observation", _security=f"{ACT}|PSY", **mine)} == set(before)
    assert {o["id"] for o in search(server, "Observation", subject=patient)} == set(before)
    assert search(server, "Observation", _security=f"{CONF}|V", **mine) == []


def test_detected_issues_carry_the_labels_and_a_rerun_writes_nothing(server, tmp_path):  # noqa: F811
    patient = f"Patient/{unique('p')}"
    sessions = [wai_sr(patient, unique("s1"), 4), wai_sr(patient, unique("s2"), 3)]  # 48 -> 36: a rupture
    sessions[1]["authored"] = "2026-11-09T10:00:00Z"
    post_all(server, sessions)
    with client(server) as c, StateStore(tmp_path / "state.sqlite") as store:
        run_sync(c, CATALOG, store, SyncOptions(patient=patient))
        unlabelled = run_signals(c, CATALOG, patient=patient, security=NO_LABELS)[0]
        assert unlabelled.written > 0
        relabel = run_signals(c, CATALOG, patient=patient, security=R_PSY)[0]
        assert relabel.written == unlabelled.written  # the same issues, written once more to carry the labels
        issues = search(server, "DetectedIssue", patient=patient, identifier=f"{SIGNAL_IDENTIFIER_SYSTEM}|")
        before = versions(issues)
        again = run_signals(c, CATALOG, patient=patient, security=R_PSY)[0]
        assert again.written == 0 and again.unchanged == len(issues)
    found = search(server, "DetectedIssue", patient=patient, _security=f"{CONF}|R")
    assert {i["id"] for i in found} == set(before) and versions(found) == before
    assert search(server, "DetectedIssue", patient=patient, _security=f"{CONF}|V") == []


def test_hapi_keeps_security_labels_that_an_update_leaves_out(server):  # noqa: F811
    """Why ``sync`` warns when a label is dropped: HAPI 8.8 merges labels on update (only
    ``$meta-delete`` removes one), so turning labels off never unlabels what was written."""
    ident = unique("kept")
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:alliance-fhir:test", "value": ident}],
        "status": "final",
        "code": {"text": "label test"},
        "meta": {"security": R_PSY.codings()[:1]},
    }
    url = f"Observation?identifier=urn:alliance-fhir:test|{ident}"
    with client(server) as c:
        assert c.request("PUT", url, json=body).status_code == 201
        unlabelled = {k: v for k, v in body.items() if k != "meta"}
        kept = c.request("PUT", url, json=unlabelled).json()
        assert [s["code"] for s in kept["meta"]["security"]] == ["R"]
        removed = c.request(
            "POST",
            f"Observation/{kept['id']}/$meta-delete",
            json={"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": body["meta"]}]},
        )
        assert removed.status_code == 200, removed.text
        assert "security" not in c.read("Observation", kept["id"]).get("meta", {})
