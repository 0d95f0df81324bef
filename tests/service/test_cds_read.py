"""The hook's stored reads: the same cards as a fresh read of the FHIR server, read again exactly when
a writer of the state says the patient's results changed (or the read is older than the maximum age).

The FHIR server is a MockTransport that records every request ("no round trip" is checked);
tests/integration/test_hapi_cds_stored_reads.py runs the same against the real HAPI, after sync and
after an amendment. Beside a results store, the stored read is kept for the pair (source, results
store) and read as the hook reads: scores and issues from the store, names from the source.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.server.settings import ServerConfig
from alliance_fhir.server.state import ServerPair, StateStore, patient_keys
from alliance_fhir.server.sync import run_sync
from alliance_fhir.server.sync_report import SyncOptions
from alliance_fhir.service.cds import CdsService
from alliance_fhir.service.cds_auth import CdsSettings
from alliance_fhir.service.cds_read import PatientReader, read_patient

from .. import fake_fhir
from ..trajectory_builders import score_obs, series_obs

FHIR = "http://fhir.test/fhir"
STORE = "http://results.test/fhir"
PATIENT = "Patient/c1"
THERAPIST_ROLE = {
    "resourceType": "PractitionerRole",
    "id": "t1",
    "practitioner": {"reference": "Practitioner/pr1"},
}
PEOPLE: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "c1", "name": [{"given": ["Robin"], "family": "Rupture"}]},
    THERAPIST_ROLE,
    {"resourceType": "Practitioner", "id": "pr1", "name": [{"given": ["Sam"], "family": "Stone"}]},
]


def bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


class Server:
    """One patient's score Observations (changeable), the people, no DetectedIssues; counts requests."""

    def __init__(self, observations: list[dict[str, Any]]) -> None:
        self.observations = observations
        self.requests = 0
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        self.seen.append(request)
        path = request.url.path
        if path.endswith("/Observation"):
            return httpx.Response(200, json=bundle(self.observations))
        if path.endswith("/Patient"):
            return httpx.Response(200, json=bundle(PEOPLE[:1]))
        if path.endswith("/PractitionerRole"):
            return httpx.Response(200, json=bundle(PEOPLE[1:]))
        return httpx.Response(200, json=bundle([]))


def rupture() -> list[dict[str, Any]]:
    """WAI-SR 48, 50, 41, 44 (days 1-4), each with an id: 50 -> 41 is an open rupture."""
    return [{**o, "id": f"o{day}"} for day, o in enumerate(series_obs("wai-sr", [48, 50, 41, 44]), start=1)]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    location = tmp_path / "s.db" if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))
    with StateStore(location) as opened:
        yield opened


@pytest.fixture
def fhir() -> Iterator[tuple[Server, FhirClient]]:
    server = Server(rupture())
    with FhirClient(ServerConfig(url=FHIR), transport=httpx.MockTransport(server)) as client:
        yield server, client


def hook(service: CdsService) -> list[dict[str, Any]]:
    body = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "fhirServer": FHIR,
        "context": {"userId": "Practitioner/p1", "patientId": "c1"},
    }
    cards: list[dict[str, Any]] = service.answer(body)["cards"]
    for card in cards:  # a link carries a fresh token per call; everything else must be equal
        card.pop("uuid", None)
        for link in card.get("links", []):
            link["url"] = link["url"].split("?")[0]
    return cards


def services(store: StateStore, client: FhirClient, catalog) -> tuple[CdsService, CdsService]:  # noqa: ANN001
    """(with stored reads, reading the server every time) over the same server and state."""
    stored = CdsService.build(client, catalog, store, CdsSettings(), "http://cds.test")
    fresh = CdsService.build(client, catalog, store, CdsSettings(stored_read_max_age_seconds=0), "http://cds.test")
    return stored, fresh


def test_a_repeated_hook_answers_from_the_stored_read_with_the_same_cards_and_no_round_trip(store, fhir, catalog):
    server, client = fhir
    stored, fresh = services(store, client, catalog)
    first = hook(stored)  # reads the server and stores what it found
    assert [c["source"]["topic"]["code"] for c in first] == ["alliance-rupture"]
    assert "Robin Rupture" in first[0]["summary"] + first[0].get("detail", "")
    before = server.requests
    assert hook(stored) == first and server.requests == before  # no request at all
    assert hook(fresh) == first and server.requests > before  # the server read gives the same cards


def test_a_new_score_is_in_the_next_hook_once_sync_says_the_patient_changed(store, fhir, catalog):
    server, client = fhir
    stored, fresh = services(store, client, catalog)
    hook(stored)
    server.observations.append({**score_obs("wai-sr", 55, day=5), "id": "o5"})  # sync writes session 5 ...
    store.cds_summaries.changed(FHIR, [PATIENT])  # ... and then says so (as SyncPipeline.settle does)
    read, where = PatientReader(client, catalog, store.cds_summaries).read(PATIENT)
    assert where == "FHIR server"
    values = [p.value for s in read.trajectories(catalog).for_subject(PATIENT) for p in s.points]
    assert [float(v) for v in values] == [48, 50, 41, 44, 55]
    assert hook(stored) == hook(fresh)


def test_an_entered_in_error_score_is_gone_from_the_next_hook(store, fhir, catalog):
    """Session 3 (41) withdrawn: 48, 50, 44 remain, and the cards are those of a fresh read."""
    server, client = fhir
    stored, fresh = services(store, client, catalog)
    with_rupture = hook(stored)
    server.observations[2] = {**server.observations[2], "status": "entered-in-error"}
    store.cds_summaries.changed(FHIR, [PATIENT])
    after = hook(stored)
    assert after == hook(fresh) and after != with_rupture
    read, _ = PatientReader(client, catalog, store.cds_summaries).read(PATIENT)
    assert {o["id"]: o["status"] for o in read.observations}["o3"] == "entered-in-error"


def test_without_a_change_the_stored_read_stands_until_the_maximum_age(store, fhir, catalog):
    """A change no writer of this state reports is seen once the read is older than the maximum age."""
    server, client = fhir
    reader = PatientReader(client, catalog, store.cds_summaries, max_age_seconds=300)
    reader.read(PATIENT)
    server.observations.pop()  # someone else removed session 4; nothing told the state
    assert len(reader.read(PATIENT)[0].observations) == 4
    store._db.run("UPDATE cds_summary SET filled_at = '2020-01-01T00:00:00.000000Z'")  # five minutes and more ago
    read, where = reader.read(PATIENT)
    assert where == "FHIR server" and len(read.observations) == 3
    assert store.cds_summaries.count(FHIR) == 1  # the old row was replaced, not kept beside


def test_a_read_during_which_the_patient_changed_is_not_stored(store):
    summaries = store.cds_summaries
    before = summaries.latest(FHIR)
    summaries.changed(FHIR, [PATIENT])  # a write landed while the server was being read
    assert summaries.store(FHIR, PATIENT, [PATIENT], before, "{}", 300) is False
    assert summaries.current(FHIR, PATIENT, 300) is None and summaries.count(FHIR) == 0


def test_a_change_of_a_joint_session_member_makes_the_read_out_of_date(store):
    summaries = store.cds_summaries
    before = summaries.latest(FHIR)
    assert summaries.store(FHIR, PATIENT, [PATIENT, "Patient/c2"], before, '{"x":1}', 300)
    assert summaries.current(FHIR, PATIENT, 300) == '{"x":1}'
    summaries.changed(FHIR, ["Patient/c3"])  # someone else: still current
    assert summaries.current(FHIR, PATIENT, 300) == '{"x":1}'
    summaries.changed(FHIR, ["Patient/c2"])  # the other member of the joint session
    assert summaries.current(FHIR, PATIENT, 300) is None


def test_stored_reads_are_per_server_and_reset_with_it(store):
    summaries = store.cds_summaries
    summaries.store(FHIR, PATIENT, [PATIENT], 0, "{}", 300)
    summaries.store("http://other.test/fhir", PATIENT, [PATIENT], 0, "{}", 300)
    store.reset(FHIR)
    assert summaries.count(FHIR) == 0 and summaries.count("http://other.test/fhir") == 1


def test_patient_keys_are_relative_patient_references_of_this_server():
    refs = ["Patient/a", f"{FHIR}/Patient/b", "http://other.test/fhir/Patient/c", "Group/g", "not a reference"]
    assert patient_keys(refs, FHIR) == ["Patient/a", "Patient/b"]


def test_sync_says_which_patients_changed_and_a_rerun_that_writes_nothing_says_nothing(
    tmp_path, catalog, make_response
):
    server = fake_fhir.FakeFhir()
    server.put(make_response("srs", {1: 9, 2: 9, 3: 9, 4: 8}, rid="qr1", subject={"reference": "Patient/p1"}))
    config = ServerConfig(url=fake_fhir.BASE)
    with (
        StateStore(tmp_path / "s.db") as state,
        FhirClient(config, transport=httpx.MockTransport(server), sleep=lambda _s: None) as client,
    ):
        run_sync(client, catalog, state, SyncOptions())
        assert state.cds_summaries.generations(fake_fhir.BASE, ["Patient/p1", "Patient/p2"]) == {
            "Patient/p1": 1,
            "Patient/p2": 0,
        }
        run_sync(client, catalog, state, SyncOptions())  # nothing new: no change reported
        assert state.cds_summaries.latest(fake_fhir.BASE) == 1


def test_a_state_that_cannot_be_read_falls_back_to_the_server(fhir, catalog, tmp_path):
    server, client = fhir
    state = StateStore(tmp_path / "s.db")
    state.close()  # every later statement fails with a StateError
    read, where = PatientReader(client, catalog, state.cds_summaries).read(PATIENT)
    assert where == "FHIR server" and len(read.observations) == 4
    assert read == read_patient(client, catalog, PATIENT)


def on_the_source(obs: dict[str, Any]) -> dict[str, Any]:
    """A score as sync writes it to a results store beside the source: the source's resources absolute on it."""
    absolute = {key: {"reference": f"{FHIR}/{obs[key]['reference']}"} for key in ("subject", "encounter")}
    return {**obs, **absolute, "focus": [{"reference": f"{FHIR}/{f['reference']}"} for f in obs["focus"]]}


@pytest.fixture
def two() -> Iterator[tuple[Server, Server, FhirClient, FhirClient]]:
    """(the source with the people, the results store with the scores naming them absolute, their clients)."""
    source, results = Server([]), Server([on_the_source(o) for o in rupture()])
    with (
        FhirClient(ServerConfig(url=FHIR), transport=httpx.MockTransport(source)) as ehr,
        FhirClient(ServerConfig(url=STORE), transport=httpx.MockTransport(results)) as kept,
    ):
        yield source, results, ehr, kept


def test_beside_a_results_store_a_stored_read_is_kept_for_the_pair_with_the_cards_of_a_fresh_read(store, two, catalog):
    source, results, ehr, kept = two
    stored = CdsService.build(ehr, catalog, store, CdsSettings(), "http://cds.test", None, kept)
    fresh = CdsService.build(
        ehr, catalog, store, CdsSettings(stored_read_max_age_seconds=0), "http://cds.test", None, kept
    )
    first = hook(stored)
    assert [c["source"]["topic"]["code"] for c in first] == ["alliance-rupture"]
    assert first[0]["detail"].startswith("**Robin Rupture**")  # the name read from the source
    # scores and issues were read from the store, for the patient in both forms; nothing of them at the source
    scoped = [r for r in results.seen if r.url.path in ("/fhir/Observation", "/fhir/DetectedIssue")]
    assert {r.url.path for r in scoped} == {"/fhir/Observation", "/fhir/DetectedIssue"}
    assert all(
        r.url.params.get("subject", r.url.params.get("patient")) == f"{FHIR}/Patient/c1,Patient/c1" for r in scoped
    )
    assert not any(r.url.path.endswith(("/Observation", "/DetectedIssue")) for r in source.seen)
    pair = ServerPair(FHIR, STORE)
    assert store.cds_summaries.count(pair) == 1 and store.cds_summaries.count(FHIR) == 0  # kept for the pair
    before = source.requests + results.requests
    assert hook(stored) == first and source.requests + results.requests == before  # no request at all
    assert hook(fresh) == first


def test_beside_a_results_store_a_change_of_the_source_patient_makes_the_read_out_of_date(store, two, catalog):
    """The store names the patient absolute; the change is numbered for the source's Patient/c1, as sync says."""
    _, results, ehr, kept = two
    reader = PatientReader(ehr, catalog, store.cds_summaries, results=kept)
    reader.read(PATIENT)
    results.observations.append(on_the_source({**score_obs("wai-sr", 55, day=5), "id": "o5"}))
    pair = ServerPair(FHIR, STORE)
    store.cds_summaries.changed(FHIR, [PATIENT])  # the one-server key: another state entirely
    assert reader.read(PATIENT)[1] == "stored read"
    store.cds_summaries.changed(pair, patient_keys([f"{FHIR}/Patient/c1"], pair))
    read, where = reader.read(PATIENT)
    assert where == "results store"
    values = [p.value for s in read.trajectories(catalog, reader.references).for_subject(PATIENT) for p in s.points]
    assert [float(v) for v in values] == [48, 50, 41, 44, 55]


def test_sync_to_a_results_store_numbers_the_change_for_the_source_patient_and_the_pair(
    tmp_path, catalog, make_response
):
    """The store's score names the patient absolute on the source; the change is for ``Patient/p1``."""
    source, results = fake_fhir.FakeFhir(), fake_fhir.FakeFhir()
    source.put(make_response("srs", {1: 9, 2: 9, 3: 9, 4: 8}, rid="qr1", subject={"reference": "Patient/p1"}))
    with (
        StateStore(tmp_path / "s.db") as state,
        FhirClient(
            ServerConfig(url=fake_fhir.BASE), transport=httpx.MockTransport(source), sleep=lambda _s: None
        ) as ehr,
        FhirClient(ServerConfig(url=STORE), transport=httpx.MockTransport(results), sleep=lambda _s: None) as kept,
    ):
        report = run_sync(ehr, catalog, state, SyncOptions(), results=kept)
        assert report.written == 1
        (observation,) = results.store["Observation"].values()
        assert observation["subject"]["reference"] == f"{fake_fhir.BASE}/Patient/p1"
        pair = ServerPair(fake_fhir.BASE, STORE)
        assert state.cds_summaries.generations(pair, ["Patient/p1"]) == {"Patient/p1": 1}
        assert state.cds_summaries.latest(fake_fhir.BASE) == 0  # the one-server state is untouched
