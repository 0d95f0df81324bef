"""The per-response pipeline's order rules, as every way in (sync, serve, backfill) gets them.

Two workers on one state are played by one store: a claim taken here by the test is "another
worker's" to the pipeline (claims are per process and per connection alike).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.server.settings import ServerConfig
from alliance_fhir.server.state import StateStore
from alliance_fhir.server.sync import process_responses
from alliance_fhir.server.sync_pipeline import Pipeline
from alliance_fhir.server.sync_plan import plan_server
from alliance_fhir.server.sync_report import SyncOptions, SyncReport

from ..conftest import all_items
from ..fake_fhir import BASE, FakeFhir


@pytest.fixture
def server() -> FakeFhir:
    return FakeFhir()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(tmp_path / "state.sqlite") as s:
        yield s


@pytest.fixture
def client(server: FakeFhir) -> Iterator[FhirClient]:
    with FhirClient(ServerConfig(url=BASE), transport=httpx.MockTransport(server), sleep=lambda _s: None) as c:
        yield c


def two_responses(server: FakeFhir, make_response: Any) -> list[dict[str, Any]]:
    return [server.put(make_response("wai-sr", all_items(12, 3), rid=rid)) for rid in ("qr1", "qr2")]


def pipeline(client: FhirClient, catalog: Any, store: StateStore) -> Pipeline:
    options, report = SyncOptions(), SyncReport(server=BASE, dry_run=False)
    return Pipeline(client, catalog, store, options, plan_server(client, list(catalog), options, report), report)


def test_a_response_another_worker_holds_is_waited_for_only_once_ours_have_landed(
    server, client, catalog, store, make_response, monkeypatch
):
    """Waiting while holding claims of our own could have two workers wait on each other."""
    responses = two_responses(server, make_response)
    assert store.claim(BASE, ["qr2"]) == {"qr2"}  # another worker on this state is handling qr2
    at_the_wait: list[tuple[str, int]] = []
    real_wait = store.wait_claim

    def wait_claim(where: str, rid: str, timeout: float) -> None:
        at_the_wait.append((rid, len(server.store["Observation"])))
        store.release(BASE, [rid])  # the other worker lets go
        real_wait(where, rid, timeout)

    monkeypatch.setattr(store, "wait_claim", wait_claim)
    report = process_responses(client, catalog, store, responses)
    assert at_the_wait == [("qr2", 1)]  # qr1's Observation was on the server before the wait began
    assert (report.written, report.failed) == (2, 0)


def test_a_staged_write_stays_claimed_until_it_settles(server, client, catalog, store, make_response):
    responses = two_responses(server, make_response)
    with pipeline(client, catalog, store) as p:
        staged = p.stage(responses)
        assert [w.response_id for w in staged] == ["qr1", "qr2"]
        assert store.claim(BASE, ["qr1", "qr2"]) == set()  # nobody else may write them meanwhile
        p.settle([(staged[0], None)])
        assert store.claim(BASE, ["qr1"]) == {"qr1"}  # its outcome is recorded: let go
        store.release(BASE, ["qr1"])
        assert store.lookup(BASE, ["qr1"])["qr1"].outcome == "written"
    assert store.claim(BASE, ["qr2"]) == {"qr2"}  # leaving the pipeline lets go of the unsettled one
    assert store.lookup(BASE, ["qr2"]) == {}  # and records nothing for it: the next run writes it


def test_a_closed_pipeline_takes_no_more_responses(server, client, catalog, store, make_response):
    responses = two_responses(server, make_response)
    with pipeline(client, catalog, store) as p:
        p.write_all([responses[:1]])
    with pytest.raises(RuntimeError, match="closed"):
        p.write_all([responses[1:]])
    with pytest.raises(RuntimeError, match="closed"):
        p.stage(responses[1:])
    assert store.claim(BASE, ["qr2"]) == {"qr2"}  # it claimed nothing
