"""serve's worker on the in-memory fake server: what healthz says, and how often signals run.

The real HAPI proves the whole service (tests/integration/test_hapi_serve.py); here the
edges a real server will not produce on demand: a server whose searches fail while /metadata
answers, and signals recomputation held up while many rounds for one patient go by.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.server.settings import ServerConfig
from alliance_fhir.server.signal_sync import SignalReport
from alliance_fhir.server.state import StateStore
from alliance_fhir.service import worker as worker_module
from alliance_fhir.service.hints import Hint
from alliance_fhir.service.settings import ServeSettings
from alliance_fhir.service.worker import Worker

from ..fake_fhir import BASE, FakeFhir, _json, _outcome
from ..support.polling import wait_for


@pytest.fixture
def server() -> FakeFhir:
    return FakeFhir()


@pytest.fixture
def srs(make_response):  # noqa: ANN001, ANN201
    """An SRS response of one patient (the fourth line's mark varies)."""

    def build(rid: str, last: float, patient: str = "Patient/p1") -> dict[str, Any]:
        return make_response("srs", {1: 9, 2: 9, 3: 9, 4: last}, rid=rid, subject={"reference": patient})  # type: ignore[no-any-return]

    return build


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(tmp_path / "state.sqlite") as s:
        yield s


def started(server: FakeFhir, store: StateStore, catalog, **settings: Any) -> Worker:  # noqa: ANN001
    client = FhirClient(
        ServerConfig(url=BASE, batch_size=3), transport=httpx.MockTransport(server), sleep=lambda _s: None
    )
    worker = Worker(client, catalog, store, ServeSettings(**settings))
    worker.start()
    wait_for("the start sync", lambda: worker.last_sync)
    return worker


def nothing_written(client: FhirClient) -> tuple[SignalReport, list[Any], None]:
    """What a stand-in for ``run_signals`` returns: it wrote no DetectedIssue."""
    return SignalReport(server=client.base_url, dry_run=False), [], None


def written(worker: Worker, n: int) -> Callable[[], bool]:
    return lambda: bool(worker.metrics.written._value.get() == n)


def test_healthz_is_ok_with_its_status_while_hints_drain(srs, server, store, catalog):
    worker = started(server, store, catalog)
    try:
        server.put(srs("qr1", 9))
        worker.record([Hint("qr1")], "rest-hook")
        wait_for("the hint handled", lambda: worker.metrics.written._value.get() == 1)
        status = worker.health()
        assert status["status"] == "ok" and status["server_reachable"] and status["worker_running"]
        assert (status["inbox_depth"], status["inbox_draining"]) == (0, True)
        assert status["last_sync"]["reason"] == "start"
    finally:
        assert worker.stop(10)


def test_healthz_is_unavailable_when_hints_wait_and_none_is_handled(srs, server, store, catalog):
    worker = started(server, store, catalog, stall_seconds=0.3)
    try:
        server.faults.append(
            lambda r: _json(500, _outcome("search broken")) if r.url.path.endswith("/_search") else None
        )
        server.put(srs("qr1", 9))
        worker.record([Hint("qr1")], "rest-hook")
        status = wait_for("a stalled inbox", lambda: (s := worker.health())["status"] != "ok" and s)
        assert status["server_reachable"] is True and status["worker_running"] is True
        assert (status["inbox_depth"], status["inbox_draining"]) == (1, False)
    finally:
        assert worker.stop(10)


def test_healthz_is_unavailable_when_the_server_does_not_answer(server, store, catalog):
    worker = started(server, store, catalog)
    try:
        worker._probe = (0.0, True)  # the last probe is old: the next healthz asks the server again
        server.faults.append(lambda r: _json(503, _outcome("down")))
        status = worker.health()
        assert status["status"] == "unavailable" and status["server_reachable"] is False
        assert sum(1 for r in server.requests if r.url.path.endswith("/metadata")) >= 1
    finally:
        server.faults.clear()
        assert worker.stop(10)


def test_many_rounds_for_one_patient_recompute_its_signals_once_the_writes_are_done(
    srs, server, store, catalog, monkeypatch
):
    """While one recomputation runs, further rounds only queue the patient again: one more run, not one per round."""
    release, calls = threading.Event(), []

    def recompute(client, catalog, *, patient, tag, security):  # noqa: ANN001, ANN202
        calls.append(patient)
        release.wait(10)
        return nothing_written(client)

    monkeypatch.setattr(worker_module, "run_signals", recompute)
    worker = started(server, store, catalog, batch_size=2)
    try:
        for i in range(12):
            server.put(srs(f"qr{i}", i % 10))
            worker.record([Hint(f"qr{i}")], "rest-hook")  # six rounds of two at least
        wait_for("every score written", lambda: worker.metrics.written._value.get() == 12)
        assert worker.health()["inbox_depth"] == 0 and len(calls) <= 1  # the scores did not wait for the signals
        release.set()
        wait_for("the signals queue empty", lambda: worker.health()["signals_pending"] == 0 and calls)
        assert worker.stop(10)  # joins the signals thread: no recomputation can come after this
        assert calls in (["Patient/p1"], ["Patient/p1", "Patient/p1"])
    finally:
        release.set()
        assert worker.stop(10)


def test_stop_finishes_the_signals_the_last_writes_queued(srs, server, store, catalog, monkeypatch):
    release, calls = threading.Event(), []

    def recompute(client, catalog, *, patient, tag, security):  # noqa: ANN001, ANN202
        calls.append(patient)
        if patient == "Patient/p1":
            release.wait(10)  # the signals thread is busy with p1 while p2's score is written
        return nothing_written(client)

    monkeypatch.setattr(worker_module, "run_signals", recompute)
    worker = started(server, store, catalog)
    for rid, patient in (("qr1", "Patient/p1"), ("qr2", "Patient/p2")):
        server.put(srs(rid, 9, patient=patient))
        worker.record([Hint(rid)], "rest-hook")
        wait_for(f"{rid} written", written(worker, int(rid[-1])))
    wait_for("p1's signals running", lambda: calls == ["Patient/p1"])
    stopped: list[bool] = []
    stopper = threading.Thread(target=lambda: stopped.append(worker.stop(10)))
    stopper.start()
    release.set()
    stopper.join(15)
    assert stopped == [True] and calls == ["Patient/p1", "Patient/p2"]  # p2's signals ran before the stop returned


def test_stop_leaves_the_signals_it_has_no_time_for_and_says_how_many(srs, server, store, catalog, monkeypatch, caplog):
    """Signals are finished as far as the shutdown grace allows, never beyond it: the rest is one log line."""
    release, calls = threading.Event(), []

    def recompute(client, catalog, *, patient, tag, security):  # noqa: ANN001, ANN202
        calls.append(patient)
        release.wait(10)  # every patient's signals outlast the whole grace below
        return nothing_written(client)

    monkeypatch.setattr(worker_module, "run_signals", recompute)
    worker = started(server, store, catalog)
    for i in range(3):
        server.put(srs(f"qr{i}", 9, patient=f"Patient/p{i}"))
        worker.record([Hint(f"qr{i}")], "rest-hook")
        wait_for(f"qr{i} written", written(worker, i + 1))
    wait_for("p0's signals running", lambda: calls == ["Patient/p0"])
    stopped: list[bool] = []
    stopper = threading.Thread(target=lambda: stopped.append(worker.stop(4.0)))
    stopper.start()
    stopper.join(3.2)  # p0 is still running, and stop() waits for it: the grace (4 s) has not run out
    assert stopped == []
    release.set()  # p0 ends after the signals' own deadline (1 s before the grace ends): p1 and p2 are left
    stopper.join(15)
    assert stopped == [True] and calls == ["Patient/p0"]
    assert "the signals of 2 patient(s) were not recomputed within the shutdown grace" in caplog.text


def test_a_hint_is_written_while_a_long_catch_up_sync_runs(srs, server, store, catalog):
    """A first start against a large server syncs for a long time; notifications must not wait for it."""
    release = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.endswith("/QuestionnaireResponse"):
            release.wait(10)  # the catch-up's search hangs (the hint's re-read is a POST _search by _id)
        return server(request)

    client = FhirClient(ServerConfig(url=BASE), transport=httpx.MockTransport(handler), sleep=lambda _s: None)
    worker = Worker(client, catalog, store, ServeSettings())
    worker.start()
    try:
        server.put(srs("qr1", 9))
        worker.record([Hint("qr1")], "rest-hook")
        wait_for("the hint written", written(worker, 1))
        assert worker.last_sync is None  # the start catch-up is still searching
    finally:
        release.set()
        assert worker.stop(10)
    assert worker.last_sync is not None and worker.last_sync["reason"] == "start"


def round_requests(server: FakeFhir, worker: Worker, rid: str, srs: Callable[..., dict[str, Any]]) -> list[str]:
    """The requests one inbox round of one hint sends (method and path), the round run on this thread."""
    server.put(srs(rid, 9))
    worker.record([Hint(rid)], "rest-hook")
    before = len(server.requests)
    assert worker.drain() == 1
    return [f"{r.method} {r.url.path.removeprefix('/fhir') or '/'}" for r in server.requests[before:]]


@pytest.mark.parametrize("start_sync", [True, False], ids=["after-the-start-sync", "without-a-sync"])
def test_a_one_response_round_costs_two_requests_the_re_read_and_the_write(srs, server, store, catalog, start_sync):
    """Our Questionnaires' ids are kept by the worker (refreshed by each catch-up sync), not looked
    up again every round: a round is the hint's re-read and the write, nothing else."""
    client = FhirClient(ServerConfig(url=BASE), transport=httpx.MockTransport(server), sleep=lambda _s: None)
    worker = Worker(client, catalog, store, ServeSettings())  # not started: the rounds run here, one at a time
    client.r4_capabilities()  # what serve's start does before any round
    if start_sync:
        assert worker.catch_up("start") is not None
    else:
        round_requests(server, worker, "qr0", srs)  # the first round learns the ids
    for rid in ("qr1", "qr2", "qr3"):
        assert round_requests(server, worker, rid, srs) == ["POST /QuestionnaireResponse/_search", "POST /"]
    assert worker.metrics.written._value.get() == (3 if start_sync else 4)
