"""Back-fill against the real HAPI: Bulk $export of 10,000 responses, a rerun, SIGKILL, $import, --cancel.

Every test exports only what it loaded: ``--since`` is the server's clock just before loading
(the session's other tests ran earlier, and HAPI stamps ``meta.lastUpdated`` itself), so the
counts are exact on a shared server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from alliance_fhir import content_resources, load_catalog
from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.server.backfill import BackfillOptions, BackfillReport, cancel_backfill, run_backfill
from alliance_fhir.server.publish import publish_resources
from alliance_fhir.server.settings import ServerConfig
from alliance_fhir.server.state import StateStore
from alliance_fhir.server.sync import SyncOptions, run_sync

from .helpers import client, unique
from .test_hapi_sync import by_response, caseload, post_all

pytestmark = pytest.mark.integration
CATALOG = load_catalog()
FRESH = {"Cache-Control": "no-cache"}


@pytest.fixture(scope="module")
def server(fhir_server: str) -> str:
    with client(fhir_server) as c:
        assert not [r for r in publish_resources(c, content_resources(CATALOG)) if r.action == "failed"]
    return fhir_server


def server_now(base: str) -> str:
    """The server's own clock (a searchset's meta.lastUpdated), then one second for its commit."""
    with client(base) as c:
        page = c.request("GET", "Patient", params={"_count": "1", "_summary": "count"}, headers=FRESH).json()
    time.sleep(1.0)
    return str(page["meta"]["lastUpdated"])


def load(base: str, n: int) -> tuple[str, dict[str, float]]:
    """n responses (WAI-SR and SRS, 500 per patient) and their hand-computed totals; the instant before."""
    since = server_now(base)
    expected: dict[str, float] = {}
    resources: list[dict[str, Any]] = []
    for start in range(0, n, 500):
        patient_resources, totals = caseload(f"Patient/{unique('bf')}", min(500, n - start))
        resources += patient_resources
        expected.update(totals)
    post_all(base, resources)
    return since, expected


def written_since(base: str, since: str) -> list[dict[str, Any]]:
    """Every Observation written since ``since`` (only ours: the tests run one after the other)."""
    with client(base) as c:
        return list(c.search("Observation", {"_lastUpdated": f"ge{since}", "_count": "500"}))


def backfill(base: str, state: Path, since: str, **options: Any) -> BackfillReport:
    with client(base) as c, StateStore(state) as store:
        return run_backfill(c, CATALOG, store, BackfillOptions(since=since, poll_interval=1.0, **options))


def assert_exact(found: list[dict[str, Any]], expected: dict[str, float]) -> None:
    assert max(Counter(o["identifier"][0]["value"] for o in found).values()) == 1  # no duplicates
    assert len(found) == len(expected) and by_response(found) == expected  # none lost, values by hand


@pytest.mark.scale
def test_backfill_of_10000_responses_then_a_rerun_writes_none(server, tmp_path):
    since, expected = load(server, 10_000)
    state = tmp_path / "state.sqlite"
    first = backfill(server, state, since)
    assert first.ok and first.complete, (first.failures, first.sync.failures)
    assert first.sync.written == 10_000 and first.lines == 10_000 and first.files >= 1
    assert_exact(written_since(server, since), expected)
    with StateStore(state) as store:
        assert store.checkpoint(server) == first.transaction_time and store.bulk_job(server) is None
    second = backfill(server, state, since)
    assert second.ok and second.sync.written == 0 and second.sync.unchanged == 10_000 and not second.resumed
    assert len(written_since(server, since)) == 10_000


def test_sigkill_mid_download_resumes_with_nothing_lost_or_doubled(server, tmp_path):
    since, expected = load(server, 600)
    env = {
        **os.environ,
        "ALLIANCE_FHIR_STATE_DB": str(tmp_path / "s.sqlite"),
        "ALLIANCE_FHIR_BATCH_SIZE": "5",
        "ALLIANCE_FHIR_PAGE_SIZE": "20",
        "ALLIANCE_FHIR_CONCURRENCY": "1",
    }
    command = [sys.executable, "-m", "alliance_fhir", "backfill", "--server", server, "--since", since]
    command += ["--poll-interval", "1", "--json"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(written_since(server, since)) < 100:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(written_since(server, since))
    assert 0 < partial < 600, f"kill landed outside the download ({partial} written)"
    with StateStore(tmp_path / "s.sqlite") as store:
        assert store.bulk_job(server) is not None  # the job survived the kill
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert report["resumed"] and report["complete"]  # the same export, not a new one
    assert report["responses"]["written"] + report["responses"]["unchanged"] == 600
    assert_exact(written_since(server, since), expected)


def test_import_path_writes_exact_values_and_keeps_existing_observations(server, tmp_path):
    since, expected = load(server, 200)
    patients = sorted({rid.rsplit("-", 1)[0] for rid in expected})
    assert len(patients) == 1
    with client(server) as c:
        assert "import" in json.dumps(c.r4_capabilities()["rest"][0]["operation"])
    # half the responses first through transactions (another state, so the ledger does not know them)
    half = backfill(server, tmp_path / "other.sqlite", since, instruments=("wai-sr",))
    assert half.ok and half.sync.written == 100
    ids_before = {o["identifier"][0]["value"]: o["id"] for o in written_since(server, since)}
    first = backfill(server, tmp_path / "state.sqlite", since, via="import")
    assert first.ok and first.complete, (first.failures, first.sync.failures)
    assert first.sync.written == 200 and first.sync.write_mode == "import"
    found = written_since(server, since)
    assert_exact(found, expected)
    assert all({o["identifier"][0]["value"]: o["id"] for o in found}[k] == v for k, v in ids_before.items())
    again = backfill(server, tmp_path / "state.sqlite", since, via="import")
    assert again.ok and again.sync.written == 0 and again.sync.unchanged == 200
    assert len(written_since(server, since)) == 200


def test_cancel_deletes_the_job_and_the_next_run_starts_a_new_export(server, tmp_path):
    since, _ = load(server, 20)
    state = tmp_path / "state.sqlite"
    with pytest.raises(Exception, match="did not complete within"):
        backfill(server, state, since, max_wait=0.5)  # gives up at the first 202: the job is kept
    with client(server) as c, StateStore(state) as store:
        job = store.bulk_job(server)
        assert job is not None
        assert cancel_backfill(c, store) is not None and store.bulk_job(server) is None
        status = c._http.get(job.status_url)  # the server no longer has a job to report
        assert status.status_code in (404, 410) or "cancel" in status.text.lower(), status.text
    fresh = backfill(server, state, since)
    assert fresh.ok and not fresh.resumed and fresh.sync.written == 20


class CutLines(httpx.BaseTransport):
    """HAPI's own export on the way in, but the first file's first line truncated after its id (as a
    server or proxy that cut it would) and a broken line put before it: the only part a fake plays."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.cut: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if "/Binary/" not in request.url.path or self.cut:
            return response
        body = response.read()
        first, rest = body.split(b"\n", 1)
        start = first.index(b'"id"')
        self.cut.append(json.loads(first)["id"])
        mangled = b"{broken\n" + first[: start + 60] + b"\n" + rest
        return httpx.Response(200, headers={"Content-Type": "application/fhir+ndjson"}, content=mangled)

    def close(self) -> None:
        self.inner.close()


def test_an_unreadable_line_keeps_the_checkpoint_and_stays_outstanding_until_sync_reads_it(server, tmp_path):
    since, expected = load(server, 20)
    state = tmp_path / "state.sqlite"
    transport = CutLines()
    with FhirClient(ServerConfig(url=server), transport=transport) as c, StateStore(state) as store:
        report = run_backfill(c, CATALOG, store, BackfillOptions(since=since, poll_interval=1.0))
        assert report.sync.written == 19 and report.unreadable == 2 and not report.ok and not report.complete
        assert store.checkpoint(server) is None and store.bulk_job(server) is None  # the checkpoint did not pass it
        cut = f"QuestionnaireResponse/{transport.cut[0]}"
        listed = {f.resource for f in store.outstanding(server)}
        assert cut in listed and len(listed) == 2 and any(r.endswith(" line 1") for r in listed)
    with client(server) as c, StateStore(state) as store:
        synced = run_sync(c, CATALOG, store, SyncOptions(since=since))
        assert synced.written == 1 and synced.unchanged == 19  # sync read the response: its failure is gone
        assert [f.resource for f in store.outstanding(server)] == [r for r in listed if r != cut]
    assert_exact(written_since(server, since), expected)  # none lost, none written twice
