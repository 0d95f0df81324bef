"""Back-fill against hostile or broken exports (issue 23): unreadable lines stay outstanding, a file
of bad lines is bounded, a manifest is capped and the download phase has a deadline, a body cut
short is one error, a stalled job is given up. Fakes only: a real server does not play these."""

from __future__ import annotations

import json
import socket
import threading
import tracemalloc
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from alliance_fhir.errors import FhirTransportError, UnexpectedResponse
from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.server.backfill import REPORTED_PER_FILE, BackfillOptions, BackfillReport, run_backfill
from alliance_fhir.server.settings import ServerConfig
from alliance_fhir.server.state import StateStore
from alliance_fhir.server.sync import run_sync

from ..fake_bulk import STAMP, FakeBulk
from ..fake_fhir import BASE
from .test_backfill import client_for, observations, wai


class FakeClock:
    """Time that passes only when the code under test sleeps (or a test moves it)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def backfill(bulk: FakeBulk, store: StateStore, catalog: Any, **options: Any) -> BackfillReport:
    clock = options.pop("clock", FakeClock())
    with client_for(bulk) as client:
        return run_backfill(client, catalog, store, BackfillOptions(sleep=clock.sleep, clock=clock, **options))


def ndjson(*lines: bytes | dict[str, Any]) -> bytes:
    return b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)


# ---------------------------------------------------------------- case 1: an unreadable line is not forgotten


TRUNCATED = b'{"resourceType":"QuestionnaireResponse","id":"qr9","status":"compl'


def test_unreadable_lines_stay_outstanding_and_keep_the_checkpoint_until_read_or_dismissed(
    bulk, store, catalog, make_response
):
    good = wai(make_response, 3)
    bulk.files = [ndjson(good[0], b"{broken", b"[1]", b'"x"', b"42", good[1]) + TRUNCATED]
    first = backfill(bulk, store, catalog)
    assert first.sync.written == 2 and first.unreadable == 5 and not first.ok and not first.complete
    assert store.checkpoint(BASE) is None and "could not be read" in first.checkpoint_note
    listed = {f.resource: f for f in store.outstanding(BASE)}
    lines = [f"/fhir/Binary/f0 line {n}" for n in (2, 3, 4, 5)]
    assert set(listed) == {*lines, "QuestionnaireResponse/qr9"}
    assert all(f.outcome == "unreadable" for f in listed.values())
    assert "line 7" in listed["QuestionnaireResponse/qr9"].reason  # the file and line it was on

    again = backfill(bulk, store, catalog, since="2000-01-01")  # every later run lists them and fails
    assert not again.ok and len(again.sync.outstanding) == 5 and store.checkpoint(BASE) is None

    good[2]["id"] = "qr9"
    bulk.files = [ndjson(*good)]  # a later export in which qr9 is readable
    read = backfill(bulk, store, catalog, since="2000-01-01")
    assert "QuestionnaireResponse/qr9" not in {f.resource for f in read.sync.outstanding}
    assert read.sync.written == 1 and len(read.sync.outstanding) == 4 and store.checkpoint(BASE) is None

    for line in lines:
        assert store.dismiss(BASE, line, "tester", "export glitch; the responses were all read again") is not None
    done = backfill(bulk, store, catalog, since="2000-01-01")
    assert done.ok and done.complete and store.checkpoint(BASE) == STAMP
    assert len(observations(bulk)) == 3  # nothing written twice


def test_a_sync_that_reads_the_response_clears_its_unreadable_line(bulk, store, catalog, make_response):
    response = wai(make_response, 1, prefix="late")[0]
    line = json.dumps(response).encode()
    bulk.files = [ndjson(line[: len(line) // 2])]  # the export cut it in the middle
    report = backfill(bulk, store, catalog)
    assert [f.resource for f in store.outstanding(BASE)] == ["QuestionnaireResponse/late0"]
    assert store.checkpoint(BASE) is None and not report.ok

    bulk.fhir.put(response)  # the response itself, as sync finds it
    with client_for(bulk) as client:
        synced = run_sync(client, catalog, store)
    assert synced.written == 1 and synced.ok and store.outstanding(BASE) == []


def test_the_reasons_name_what_the_line_was_never_none(bulk, store, catalog):
    bulk.files = [ndjson({}, {"resourceType": None}, {"resourceType": 7}, {"resourceType": "Pat\nient"})]
    report = backfill(bulk, store, catalog)
    reasons = [f.reason for f in report.failures]
    assert reasons[0] == "no resourceType: not a QuestionnaireResponse" and reasons[1] == reasons[0]
    assert "resourceType a JSON integer" in reasons[2] and "'Pat\\\\x0aient'" in reasons[3]
    assert not any("None" in r or "\n" in r for r in reasons)


# ---------------------------------------------------------------- case 3: a file of bad lines is bounded


def test_a_file_of_200000_bad_lines_is_stopped_reported_in_bounds_and_in_flat_memory(bulk, store, catalog):
    bulk.files = [b"{}\n" * 200_000]
    tracemalloc.start()
    try:
        report = backfill(bulk, store, catalog)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.unreadable == 1000 and report.lines == 1000  # stopped at --max-bad-lines: the rest unread
    assert len(report.failures) <= REPORTED_PER_FILE + 2
    assert "stopped after 1000 unreadable lines" in report.failures[-2].reason
    assert "900 more unreadable lines" in report.failures[-1].reason
    assert not report.complete and report.files_done == 0 and store.bulk_job(BASE) is not None  # not done
    assert peak < 12 * 1024 * 1024, peak  # the 600 kB body, the outstanding list: not a record per line
    assert "/fhir/Binary/f0" in {f.resource for f in store.outstanding(BASE)}  # the stop itself is outstanding


def test_bad_lines_under_the_limit_are_reported_100_then_counted(bulk, store, catalog, make_response):
    bulk.files = [ndjson(*wai(make_response, 1)) + b"{}\n" * 5_000]
    report = backfill(bulk, store, catalog, max_bad_lines=10_000)
    assert report.unreadable == 5_000 and report.sync.written == 1 and report.files_done == 1
    assert len(report.failures) == REPORTED_PER_FILE + 1 and "4900 more" in report.failures[-1].reason
    assert len(store.outstanding(BASE)) == 5_000 and store.checkpoint(BASE) is None


# ---------------------------------------------------------------- case 6: the manifest cap and the download deadline


def test_a_manifest_over_the_file_cap_is_refused_before_any_download(bulk, store, catalog, make_response):
    bulk.files = [wai(make_response, 1, prefix=f"f{i}-") for i in range(11)]
    with pytest.raises(UnexpectedResponse, match="lists 11 files, more than the limit of 10"):
        backfill(bulk, store, catalog, max_files=10)
    assert bulk.downloads == [] and store.bulk_job(BASE) is not None  # kept: a higher cap resumes it
    assert backfill(bulk, store, catalog, max_files=11).complete and len(bulk.kickoffs) == 1


def test_the_download_phase_deadline_stops_and_a_rerun_resumes(bulk, store, catalog, make_response):
    bulk.files = [wai(make_response, 2, prefix=f"f{i}-") for i in range(3)]
    clock = FakeClock()

    def slow(request: httpx.Request) -> httpx.Response | None:
        if "/Binary/" in request.url.path:
            clock.now += 70  # each file takes 70 s
        return None

    bulk.faults.append(slow)
    first = backfill(bulk, store, catalog, download_seconds=100, clock=clock)
    assert isinstance(first.stopped, FhirTransportError) and not first.ok
    assert "passed its deadline of 100 s" in str(first.stopped) and "/fhir/Binary/f2" in str(first.stopped)
    assert first.files_done == 2 and store.bulk_job(BASE) is not None and store.checkpoint(BASE) is None
    bulk.downloads.clear()
    second = backfill(bulk, store, catalog, download_seconds=100)
    assert second.complete and second.resumed and bulk.downloads == [f"{BASE}/Binary/f2"]
    assert len(observations(bulk)) == 6


# ---------------------------------------------------------------- case 7: a download cut short


class CutShort(httpx.SyncByteStream):
    """A body that breaks off after its first bytes, as a server closing mid-body does."""

    def __init__(self, head: bytes) -> None:
        self.head = head

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def test_a_download_cut_short_is_one_error_the_file_not_done_and_a_rerun_resumes(bulk, store, catalog, make_response):
    responses = wai(make_response, 6)
    bulk.files = [responses[:3], responses[3:]]
    bulk.file_url = lambda i: f"{BASE}/Binary/f{i}?token=SECRET"
    cut = {"left": 1}

    def cut_short(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/Binary/f1") and cut["left"]:
            cut["left"] -= 1
            return httpx.Response(200, stream=CutShort(ndjson(responses[3])))
        return None

    bulk.faults.append(cut_short)
    first = backfill(bulk, store, catalog)
    assert isinstance(first.stopped, FhirTransportError) and not first.ok and not first.complete
    message = str(first.stopped)
    assert "/fhir/Binary/f1" in message and "broke off" in message and "RemoteProtocolError" in message
    assert "SECRET" not in message and "\n" not in message
    assert first.files_done == 1 and first.sync.written == 3
    assert store.bulk_job(BASE) is not None and store.checkpoint(BASE) is None
    second = backfill(bulk, store, catalog)
    assert second.ok and second.complete and second.resumed and second.sync.written == 3
    assert len(observations(bulk)) == 6 and store.checkpoint(BASE) == STAMP


def test_a_real_socket_closed_mid_body_is_a_transport_error():
    """The same on a real connection: fewer bytes than Content-Length, then the server closes."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_one() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+ndjson\r\nContent-Length: 10000\r\n\r\n")
            conn.sendall(b'{"resourceType":"QuestionnaireResponse"}\n{"resou')

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        with FhirClient(ServerConfig(url=base, max_attempts=1)) as client:
            lines = client.download_lines(f"{base}/Binary/x?_token=abc", max_bytes=10**6, seconds=10)
            with pytest.raises(FhirTransportError, match="broke off") as caught:
                list(lines)
    finally:
        thread.join(timeout=10)
        listener.close()
    assert "/fhir/Binary/x?_token=" in str(caught.value) and "abc" not in str(caught.value)


# ---------------------------------------------------------------- case 8: a stalled export job


def test_a_job_whose_progress_does_not_change_is_given_up_as_stalled(bulk, store, catalog):
    bulk.polls = 10**6
    bulk.poll_headers = {"Retry-After": "120", "X-Progress": "Status set to FINALIZE at 10:00"}
    clock = FakeClock()
    with pytest.raises(UnexpectedResponse, match="looks stalled: its progress has not changed for 15 polls"):
        backfill(bulk, store, catalog, max_wait=10**6, clock=clock)
    assert len(clock.sleeps) == 15 and clock.now == 15 * 120  # no real waiting: the clock was carried
    assert store.bulk_job(BASE) is not None  # kept: a re-run or --cancel handles it


def test_progress_that_moves_or_a_short_interval_is_not_a_stall(bulk, store, catalog, make_response):
    bulk.files = [wai(make_response, 1)]
    bulk.polls = 40
    seen = {"n": 0}

    def moving(request: httpx.Request) -> httpx.Response | None:
        if "poll-status" in request.url.path and bulk.polls:
            bulk.polls -= 1
            seen["n"] += 1
            return httpx.Response(202, headers={"Retry-After": "120", "X-Progress": f"{seen['n']} of 40"})
        return None

    bulk.faults.append(moving)
    assert backfill(bulk, store, catalog, max_wait=10**6).complete
    bulk.faults.clear()
    bulk.polls = 30  # the same text for 30 polls, 1 s apart: a slow job, not a stalled one (under 30 min)
    bulk.poll_headers = {"Retry-After": "1", "X-Progress": "IN_PROGRESS"}
    assert backfill(bulk, store, catalog, max_wait=10**6, poll_interval=1.0, since="2000-01-01").complete
