"""Several sync workers on one PostgreSQL state, against the real HAPI: every Observation once.

Two ``alliance-fhir sync`` processes share a state database (``ALLIANCE_FHIR_STATE_DB`` =
a database on the harness's own PostgreSQL cluster) and the same responses. Neither may write an
Observation the other wrote, and a worker SIGKILLed mid-run must lose nothing: its claims die with
its connection, and the survivor writes what it had not.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pytest

from alliance_fhir.server.state import StateStore

from .helpers import unique
from .test_hapi_sync import by_response, caseload, observations, post_all
from .test_hapi_sync import server as server  # noqa: F401 - the fixture that publishes our Questionnaires

pytestmark = pytest.mark.integration
N = 300


def worker(server_url: str, state_url: str, patient: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "ALLIANCE_FHIR_STATE_DB": state_url,
        "ALLIANCE_FHIR_BATCH_SIZE": "5",
        "ALLIANCE_FHIR_PAGE_SIZE": "20",
        "ALLIANCE_FHIR_CONCURRENCY": "2",
    }
    command = [sys.executable, "-m", "alliance_fhir", "sync", "--server", server_url, "--patient", patient, "--json"]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def kill_once_written(proc: subprocess.Popen[str], server_url: str, patient: str, at_least: int) -> None:
    """SIGKILL the worker mid-run: once it has written ``at_least`` Observations (bounded wait)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(observations(server_url, patient)) < at_least:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


def assert_each_once(server_url: str, patient: str, expected: dict[str, float]) -> None:
    found = observations(server_url, patient)
    identifiers = Counter(o["identifier"][0]["value"] for o in found)
    assert max(identifiers.values()) == 1, [i for i, n in identifiers.items() if n > 1][:5]
    assert len(found) == N and by_response(found) == expected


def test_two_workers_on_one_state_write_every_observation_once(server, postgres_url):  # noqa: F811
    patient = f"Patient/{unique('p')}"
    resources, expected = caseload(patient, N)
    post_all(server, resources)
    first, second = worker(server, postgres_url, patient), worker(server, postgres_url, patient)
    reports = [finish(first), finish(second)]
    assert_each_once(server, patient, expected)
    assert sum(r["written"] for r in reports) == N  # between them: each response written by exactly one
    assert all(r["failed"] == 0 and r["found"] == N for r in reports)
    with StateStore(postgres_url) as store:
        assert store.counts(server) == {"written": N}
        assert store.checkpoint(server) == max(r["checkpoint"] for r in reports)


def test_sigkill_of_one_worker_mid_run_loses_nothing(server, postgres_url):  # noqa: F811
    patient = f"Patient/{unique('p')}"
    resources, expected = caseload(patient, N)
    post_all(server, resources)
    victim, survivor = worker(server, postgres_url, patient), worker(server, postgres_url, patient)
    kill_once_written(victim, server, patient, 30)
    written_at_kill = len(observations(server, patient))
    assert written_at_kill < N, "the kill landed after the run: nothing was proven"
    report = finish(survivor)
    assert report["failed"] == 0 and report["found"] == N
    assert_each_once(server, patient, expected)
    with StateStore(postgres_url) as store:
        assert store.counts(server) == {"written": N}
        assert store.checkpoint(server) == report["checkpoint"]  # moved by the run that covered it
    again = finish(worker(server, postgres_url, patient))
    assert (again["written"], again["unchanged"]) == (0, N)


def test_a_killed_lone_worker_leaves_the_checkpoint_and_a_rerun_converges(server, postgres_url):  # noqa: F811
    patient = f"Patient/{unique('p')}"
    resources, expected = caseload(patient, N)
    post_all(server, resources)
    victim = worker(server, postgres_url, patient)
    kill_once_written(victim, server, patient, 30)
    with StateStore(postgres_url) as store:
        assert store.checkpoint(server) is None  # the killed run covered nothing in full
    report = finish(worker(server, postgres_url, patient))
    assert report["failed"] == 0 and report["written"] + report["unchanged"] == N
    assert_each_once(server, patient, expected)
