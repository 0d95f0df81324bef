"""Idempotent without conditional writes: the ledger is the record (a fake EHR that counts its creates)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.server.state import EhrWrite, ServerPair, StateStore
from alliance_fhir.server.writeback import EhrTarget, EhrWriter
from alliance_fhir.server.writeback_plan import WritebackSettings, plan_routes
from alliance_fhir.signals.writeback import WRITEBACK_IDENTIFIER_SYSTEM

PAIR = ServerPair("http://ehr/fhir", "http://store/fhir")


def statement(search_params: list[str]) -> dict[str, Any]:
    note = {
        "type": "DocumentReference",
        "interaction": [{"code": c} for c in ("create", "read", "search-type")],
        "searchParam": [{"name": p} for p in search_params],
    }
    return {"fhirVersion": "4.0.1", "rest": [{"mode": "server", "resource": [note]}]}


@dataclass
class Answer:
    status_code: int
    headers: dict[str, str]
    content: bytes


@dataclass
class FakeEhr:
    """Creates, reads and searches DocumentReferences; no conditional writes, no update."""

    held: dict[str, dict[str, Any]] = field(default_factory=dict)
    creates: int = 0

    def request(self, method: str, path: str, **_: Any) -> Answer:
        assert method == "POST" and path == "DocumentReference"
        resource = {**_["json"], "id": str(100 + len(self.held)), "meta": {"versionId": "1"}}
        self.held[resource["id"]] = resource
        self.creates += 1
        return Answer(
            201,
            {"Location": f"http://ehr/fhir/DocumentReference/{resource['id']}/_history/1"},
            json.dumps(resource).encode(),
        )

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        return self.held[resource_id]

    def search(self, resource_type: str, params: dict[str, str]) -> list[dict[str, Any]]:
        value = params["identifier"].split("|", 1)[1]
        return [r for r in self.held.values() if any(i["value"] == value for i in r["identifier"])]


def note(value: str = "n-1", words: str = "Total 31 of 40.") -> EhrTarget:
    resource = {
        "resourceType": "DocumentReference",
        "identifier": [{"system": WRITEBACK_IDENTIFIER_SYSTEM, "value": value}],
        "status": "current",
        "subject": {"reference": "Patient/p1"},
        "content": [{"attachment": {"contentType": "text/plain", "data": words}}],
    }
    return EhrTarget(value, "note", resource, "qr-1")


def writer(ehr: FakeEhr, store: StateStore, search_params: list[str]) -> EhrWriter:
    plan = plan_routes(statement(search_params), WritebackSettings(), one_server=False)
    fake = cast(FhirClient, ehr)
    return EhrWriter(fake, fake, cast(Any, []), store, plan, PAIR)


def test_a_rerun_writes_nothing_and_the_ledger_keeps_the_ehrs_id(tmp_path: Path):
    ehr = FakeEhr()
    with StateStore(tmp_path / "s.db") as store:
        first = writer(ehr, store, [])
        assert first._write_one(note()) is None
        assert writer(ehr, store, [])._write_one(note()) is None
        entry = store.ehr_writes.lookup(PAIR, ["n-1"])["n-1"]
    assert ehr.creates == 1
    assert (entry.status, entry.resource_id, entry.version_id) == ("written", "100", "1")


def test_a_crash_after_the_ehrs_201_is_repaired_by_a_search_for_our_identifier(tmp_path: Path):
    ehr = FakeEhr()
    ehr.request("POST", "DocumentReference", json=note().resource)  # landed, but the run died before its commit
    with StateStore(tmp_path / "s.db") as store:
        store.ehr_writes.put(PAIR, EhrWrite("n-1", "note", "DocumentReference", "pending", response_id="qr-1"))
        assert writer(ehr, store, ["identifier"])._write_one(note()) is None
        entry = store.ehr_writes.lookup(PAIR, ["n-1"])["n-1"]
    assert ehr.creates == 1  # adopted, not created twice
    assert (entry.status, entry.resource_id) == ("written", "100")


def test_a_crash_the_ehr_cannot_be_searched_for_is_a_failure_for_the_site(tmp_path: Path):
    ehr = FakeEhr()
    ehr.request("POST", "DocumentReference", json=note().resource)
    with StateStore(tmp_path / "s.db") as store:
        store.ehr_writes.put(PAIR, EhrWrite("n-1", "note", "DocumentReference", "pending", response_id="qr-1"))
        reason = writer(ehr, store, [])._write_one(note())
    assert ehr.creates == 1  # nothing sent blind
    assert reason is not None and "may hold it twice" in reason and "dismiss" in reason


def test_the_intent_is_committed_before_the_create_is_sent(tmp_path: Path):
    with StateStore(tmp_path / "s.db") as store:

        class DiesOnCreate(FakeEhr):
            def request(self, method: str, path: str, **kw: Any) -> Answer:
                raise KeyboardInterrupt  # the process stops while the create is in flight

        ehr = DiesOnCreate()
        try:
            writer(ehr, store, [])._write_one(note())
        except KeyboardInterrupt:
            pass
        assert store.ehr_writes.lookup(PAIR, ["n-1"])["n-1"].status == "pending"
