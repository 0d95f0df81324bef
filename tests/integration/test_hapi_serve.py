"""`alliance-fhir serve` on the real HAPI with real Subscriptions, uvicorn on a free loopback port.

What a clinic relies on: a response written on the server has its score Observation and the
patient's signals within seconds; a notification is only a hint (a forged one changes nothing,
a wrong secret is refused and records nothing); an acknowledged notification survives SIGKILL;
what HAPI gave up delivering is caught by the catch-up sync. The same for Backport topics.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from alliance_fhir import content_resources, load_catalog
from alliance_fhir._ids import IDENTIFIER_SYSTEM, SIGNAL_IDENTIFIER_SYSTEM, SUBSCRIPTION_TAG
from alliance_fhir.server.publish import publish_resources
from alliance_fhir.server.state import StateStore
from alliance_fhir.server.sync import SyncOptions
from alliance_fhir.service.settings import ServeSettings
from alliance_fhir.service.subscription import ensure_subscription, ensure_topic, remove_subscriptions
from alliance_fhir.service.worker import Worker

from .helpers import client, unique
from .test_hapi_sync import post_all, srs

pytestmark = pytest.mark.integration
CATALOG = load_catalog()
SECRET = "serve-integration-secret-0123456789"
FRESH = {"Cache-Control": "no-cache"}
LOW = (7.0, 7.0, 7.0, 7.0)  # SRS 28.0: below the 36 cutoff, a low-alliance signal
HIGH = (9.5, 9.5, 9.5, 9.5)  # SRS 38.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float = 15.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class Service:
    """One `alliance-fhir serve` process (its own port, state file and JSON log)."""

    def __init__(self, base: str, state: Path, *args: str) -> None:
        self.base, self.state, self.args = base, state, args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = state.with_suffix(f".{self.port}.log")

    def start(self, wait_subscription: bool = True) -> Service:
        env = {**os.environ, "ALLIANCE_FHIR_WEBHOOK_SECRET": SECRET}
        command = [
            sys.executable,
            "-m",
            "alliance_fhir",
            "serve",
            "--server",
            self.base,
            "--port",
            str(self.port),
            "--state",
            str(self.state),
            "--log-format",
            "json",
            *self.args,
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
        wait_for("healthz", lambda: self.healthy() or self._exited(), timeout=60)
        if wait_subscription and "--no-subscribe" not in self.args:
            wait_for("our Subscription active", lambda: subscription_status(self.base) == "active", timeout=30)
        return self

    def _exited(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"serve exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        return False

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        return sum(
            float(line.split()[-1]) for line in text.splitlines() if line.startswith(name) and not line.startswith("#")
        )

    def hook(
        self, method: str, path: str, body: Any = None, secret: str | None = SECRET, raw: bytes | None = None
    ) -> httpx.Response:
        headers = {"Content-Type": "application/fhir+json"}
        if secret is not None:
            headers["Authorization"] = f"Bearer {secret}"
        content = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        return httpx.request(method, f"{self.url}/hook{path}", content=content, headers=headers, timeout=10)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]


def subscription_status(base: str) -> str:
    with client(base) as c:
        found = list(c.search("Subscription", {"_tag": f"{SUBSCRIPTION_TAG['system']}|{SUBSCRIPTION_TAG['code']}"}))
    return str(found[0].get("status")) if len(found) == 1 else f"{len(found)} found"


def observations(base: str, rid: str) -> list[dict[str, Any]]:
    with client(base) as c:
        return list(
            c.search(
                "Observation", {"derived-from": f"QuestionnaireResponse/{rid}", "identifier": f"{IDENTIFIER_SYSTEM}|"}
            )
        )


def history_versions(base: str, observation_id: str) -> int:
    with client(base) as c:
        page = c.request("GET", f"Observation/{observation_id}/_history", headers=FRESH).json()
    return len(page.get("entry", []))


def issues(base: str, patient: str) -> list[dict[str, Any]]:
    with client(base) as c:
        return list(c.search("DetectedIssue", {"patient": patient, "identifier": f"{SIGNAL_IDENTIFIER_SYSTEM}|"}))


def score_of(base: str, rid: str, status: str = "final") -> Callable[[], float | None]:
    def check() -> float | None:
        found = observations(base, rid)
        return found[0]["valueQuantity"]["value"] if len(found) == 1 and found[0]["status"] == status else None

    return check


def write(base: str, response: dict[str, Any]) -> float:
    """PUT a response (and its patient) on the server; the time of the write."""
    post_all(base, [response])
    return time.monotonic()


@pytest.fixture(scope="module")
def server(fhir_server: str) -> Iterator[str]:
    with client(fhir_server) as c:
        assert not [r for r in publish_resources(c, content_resources(CATALOG)) if r.action == "failed"]
        ensure_topic(
            c
        )  # HAPI registers a new topic only on its next cache refresh (up to a minute): start the clock now
    yield fhir_server
    with client(fhir_server) as c:
        remove_subscriptions(c)


@pytest.fixture(scope="module")
def service(server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    running = Service(server, tmp_path_factory.mktemp("serve") / "state.sqlite").start()
    yield running
    if running.proc is not None and running.proc.poll() is None:
        assert running.stop() == 0


# ---------------------------------------------------------------- rest-hook


def test_a_posted_response_is_scored_and_its_signals_written_within_seconds(server, service):
    patient = f"Patient/{unique('p')}"
    rid = unique("qr")
    written_at = write(server, srs(patient, rid, LOW))
    assert wait_for("the score Observation", score_of(server, rid), timeout=10) == 28.0
    elapsed = time.monotonic() - written_at
    assert elapsed < 5, f"the Observation took {elapsed:.1f} s"
    wait_for(
        "a low-alliance DetectedIssue",
        lambda: any(
            c.get("code") == "low-alliance"
            for i in issues(server, patient)
            for c in i.get("code", {}).get("coding", [])
        ),
        timeout=10,
    )

    amended = srs(patient, rid, HIGH) | {"status": "amended"}
    write(server, amended)
    assert wait_for("the amended Observation", score_of(server, rid, "amended"), timeout=10) == 38.0
    assert len(observations(server, rid)) == 1


def test_two_notifications_of_one_version_make_one_write(server, service):
    patient, rid = f"Patient/{unique('p')}", unique("qr")
    write(server, srs(patient, rid, HIGH))
    wait_for("the score Observation", score_of(server, rid), timeout=10)
    observation = observations(server, rid)[0]
    version = observation["meta"]["versionId"]
    with client(server) as c:
        current = c.read("QuestionnaireResponse", rid)
    handled = service.metric("alliance_fhir_write_latency_seconds_count")
    for _ in range(2):
        assert service.hook("PUT", f"/QuestionnaireResponse/{rid}", current).status_code == 200
    wait_for(
        "both hints handled",
        lambda: service.metric("alliance_fhir_write_latency_seconds_count") >= handled + 1,
        timeout=10,
    )
    wait_for("an empty inbox", lambda: service.metric("alliance_fhir_inbox_depth") == 0, timeout=10)
    again = observations(server, rid)
    assert len(again) == 1 and again[0]["meta"]["versionId"] == version  # not even a new version


def test_a_wrong_or_missing_secret_is_refused_and_records_nothing(server, service):
    rid = unique("qr")  # not on the server: were it recorded, the inbox would show it
    refused = service.metric('alliance_fhir_notifications_refused_total{reason="unauthorised"}')
    body = srs("Patient/x", rid, LOW)
    assert (
        service.hook("PUT", f"/QuestionnaireResponse/{rid}", body, secret="wrong-secret-0123456789").status_code == 401
    )
    assert service.hook("PUT", f"/QuestionnaireResponse/{rid}", body, secret=None).status_code == 401
    assert service.hook("POST", "", None, secret=SECRET + "x").status_code == 401
    assert service.metric('alliance_fhir_notifications_refused_total{reason="unauthorised"}') == refused + 3
    with sqlite3.connect(service.state) as db:
        assert db.execute("SELECT COUNT(*) FROM inbox WHERE response_id = ?", (rid,)).fetchone()[0] == 0
    assert observations(server, rid) == []


def test_a_body_over_the_cap_gets_413(server, service):
    rid = unique("qr")
    response = service.hook("PUT", f"/QuestionnaireResponse/{rid}", raw=b"{" + b" " * (1024 * 1024 + 10) + b"}")
    assert response.status_code == 413
    assert service.metric('alliance_fhir_notifications_refused_total{reason="too_large"}') >= 1
    with sqlite3.connect(service.state) as db:
        assert db.execute("SELECT COUNT(*) FROM inbox WHERE response_id = ?", (rid,)).fetchone()[0] == 0


def test_a_forged_payload_changes_nothing_the_servers_copy_is_scored(server, service):
    patient, rid = f"Patient/{unique('p')}", unique("qr")
    write(server, srs(patient, rid, HIGH))
    assert wait_for("the score Observation", score_of(server, rid), timeout=10) == 38.0
    forged = srs(patient, rid, LOW) | {"meta": {"versionId": "99"}}
    handled = service.metric("alliance_fhir_write_latency_seconds_count")
    assert service.hook("PUT", f"/QuestionnaireResponse/{rid}", forged).status_code == 200
    assert service.hook("PUT", "/QuestionnaireResponse/..%2F..%2Fmetadata", forged).status_code in (400, 404, 405)
    assert service.hook("PUT", f"/Patient/{rid}", {"resourceType": "Patient", "id": rid}).status_code == 400
    wait_for(
        "the forged hint handled",
        lambda: service.metric("alliance_fhir_write_latency_seconds_count") >= handled + 1,
        timeout=10,
    )
    assert score_of(server, rid)() == 38.0  # the server's answers, not the forged ones


def test_sigkill_between_acknowledgement_and_write_loses_nothing_and_duplicates_nothing(server, service, tmp_path):
    victim = Service(server, tmp_path / "state.sqlite").start()
    patient = f"Patient/{unique('p')}"
    responses = [srs(patient, f"{patient.split('/')[1]}-{i}", (9.0, 9.0, 9.0, float(i % 10))) for i in range(150)]
    post_all(server, responses)
    wait_for(
        "hints waiting while some are written",
        lambda: (
            victim.metric("alliance_fhir_inbox_depth") > 0
            and victim.metric("alliance_fhir_observations_written_total") > 0
        ),
        timeout=30,
        every=0.02,
    )
    victim.kill()
    with sqlite3.connect(victim.state) as db:
        waiting = db.execute("SELECT COUNT(*) FROM inbox").fetchone()[0]
    assert waiting > 0, "the kill landed after the inbox drained"
    victim.start()
    started = [line["message"] for line in victim.log_lines() if "worker started" in line["message"]]
    assert len(started) == 2 and not started[1].startswith("worker started; 0 ")

    def all_scored() -> list[dict[str, Any]] | None:
        with client(server) as c:
            found = list(c.search("Observation", {"subject": patient, "identifier": f"{IDENTIFIER_SYSTEM}|"}))
        return found if len(found) >= 150 else None

    found = wait_for("all 150 Observations", all_scored, timeout=60, every=0.5)
    assert len(found) == 150
    assert max(Counter(o["identifier"][0]["value"] for o in found).values()) == 1
    by_response = {o["derivedFrom"][0]["reference"].split("/")[1]: o["valueQuantity"]["value"] for o in found}
    assert by_response == {r["id"]: round(27.0 + int(r["id"].rsplit("-", 1)[1]) % 10, 1) for r in responses}
    wait_for("an empty inbox", lambda: victim.metric("alliance_fhir_inbox_depth") == 0, timeout=30)
    assert victim.stop() == 0
    with client(server) as c:  # our one Subscription names the module's service again
        ensure_subscription(c, list(CATALOG), f"{service.url}/hook", SecretStr(SECRET))
    wait_for("our Subscription active", lambda: subscription_status(server) == "active", timeout=30)


def test_receiver_down_70_s_then_the_catch_up_converges_retractions_included(server, service, tmp_path):
    patient = f"Patient/{unique('p')}"
    retracted, missed = unique("qr"), unique("qr")
    write(server, srs(patient, retracted, LOW))
    wait_for("the score Observation", score_of(server, retracted), timeout=10)
    assert service.stop() == 0  # SIGTERM: graceful, exit 0

    write(server, srs(patient, missed, HIGH))
    down_at = write(server, srs(patient, retracted, LOW) | {"status": "entered-in-error"})

    # while HAPI retries into the void: the periodic safety net of an in-process worker catches a
    # response no notification will ever name (its own state, only responses with its own tag)
    _safety_net_catches_what_no_notification_named(server, tmp_path)

    time.sleep(max(0.0, 70 - (time.monotonic() - down_at)))  # HAPI gives up after ~58 s (hapi-fhir #6002)
    assert observations(server, missed) == []
    service.start()
    assert wait_for("the missed response scored", score_of(server, missed), timeout=20) == 38.0
    wait_for("the retraction", score_of(server, retracted, "entered-in-error"), timeout=20)
    # HAPI may still deliver a late retry after the restart, so the hints can do part of the work
    # before the start catch-up finishes: wait for that run to end, then require that it did not
    # error. ("failures" is allowed: on a shared test server other tests' deliberately bad
    # responses stay outstanding; ours converged, as asserted above.)
    start_runs = 'alliance_fhir_catchup_runs_total{reason="start"'
    wait_for("the start catch-up to finish", lambda: service.metric(start_runs), timeout=60)
    start_sync = httpx.get(f"{service.url}/healthz", timeout=5).json()["last_sync"]
    assert service.metric(start_runs) == 1 and service.metric(start_runs + ',result="error"}') == 0, start_sync
    assert start_sync["reason"] == "start"


def _safety_net_catches_what_no_notification_named(server: str, tmp_path: Path) -> None:
    tag = {"system": "http://alliance-fhir.org/fhir/test", "code": unique("net")}
    with client(server) as c, StateStore(tmp_path / "net.sqlite") as store:
        worker = Worker(c, CATALOG, store, ServeSettings(safety_net_minutes=0.05), options=SyncOptions(tag=tag))
        worker.start()
        try:
            wait_for("the start sync", lambda: worker.last_sync is not None, timeout=20)
            rid = unique("qr")
            write(server, srs(f"Patient/{unique('p')}", rid, HIGH) | {"meta": {"tag": [tag]}})
            assert wait_for("the safety net", score_of(server, rid), timeout=20) == 38.0
            assert worker.metrics.catch_up.labels("safety-net", "ok")._value.get() >= 1
        finally:
            assert worker.stop(30)


# ---------------------------------------------------------------- Backport topic


def test_the_backport_topic_path(server, tmp_path):
    topic = Service(server, tmp_path / "state.sqlite", "--channel", "topic").start()
    patient = f"Patient/{unique('p')}"

    def delivered(rid: str) -> Callable[[], float | None]:
        return score_of(server, rid)

    # HAPI 8.8 registers a new topic on its next cache refresh: probe until deliveries flow (bounded)
    deadline = time.monotonic() + 90
    while True:
        probe = unique("qr")
        write(server, srs(patient, probe, HIGH))
        time.sleep(3)
        if (
            topic.metric('alliance_fhir_notifications_received_total{channel="topic"}') > 0
            or time.monotonic() > deadline
        ):
            break
    assert topic.metric('alliance_fhir_notifications_received_total{channel="topic"}') > 0, (
        "no topic notification in 90 s"
    )

    rid = unique("qr")
    received = topic.metric('alliance_fhir_notifications_received_total{channel="topic"}')
    written_at = write(server, srs(patient, rid, LOW))
    assert wait_for("the score Observation", delivered(rid), timeout=10) == 28.0
    assert time.monotonic() - written_at < 5
    wait_for(
        "a low-alliance DetectedIssue",
        lambda: any(
            c.get("code") == "low-alliance"
            for i in issues(server, patient)
            for c in i.get("code", {}).get("coding", [])
        ),
        timeout=10,
    )
    time.sleep(3)  # HAPI re-sends every 1-2 s when a topic receiver answers no Bundle; we answer one: delivered once
    assert topic.metric('alliance_fhir_notifications_received_total{channel="topic"}') == received + 1

    write(server, srs(patient, rid, HIGH) | {"status": "amended"})
    assert wait_for("the amended Observation", score_of(server, rid, "amended"), timeout=10) == 38.0

    # a forged notification: a foreign fullUrl is never fetched; our own id is re-read and not rewritten
    observation = observations(server, rid)[0]
    forged = {
        "resourceType": "Bundle",
        "type": "history",
        "entry": [
            {
                "resource": {
                    "resourceType": "Parameters",
                    "parameter": [
                        {"name": "type", "valueCode": "event-notification"},
                        {
                            "name": "notification-event",
                            "part": [
                                {"name": "focus", "valueReference": {"reference": f"QuestionnaireResponse/{rid}"}}
                            ],
                        },
                    ],
                }
            },
            {"fullUrl": "http://169.254.169.254/latest/QuestionnaireResponse/x", "resource": srs(patient, "x", LOW)},
            {"fullUrl": f"QuestionnaireResponse/{rid}/_history/99", "resource": srs(patient, rid, LOW)},
        ],
    }
    assert topic.hook("POST", "", forged, secret="not-the-secret-0123456789").status_code == 401
    answer = topic.hook("POST", "", forged)
    assert answer.status_code == 200 and answer.json()["resourceType"] == "Bundle"
    wait_for("an empty inbox", lambda: topic.metric("alliance_fhir_inbox_depth") == 0, timeout=10)
    again = observations(server, rid)
    assert (
        len(again) == 1
        and again[0]["meta"]["versionId"] == observation["meta"]["versionId"]
        and again[0]["valueQuantity"]["value"] == 38.0
    )
    assert topic.stop() == 0
