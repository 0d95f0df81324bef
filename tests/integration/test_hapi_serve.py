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
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from alliance_fhir import content_resources, load_catalog
from alliance_fhir._ids import IDENTIFIER_SYSTEM, SIGNAL_IDENTIFIER_SYSTEM, SUBSCRIPTION_TAG, SUBSCRIPTION_TOPIC_URL
from alliance_fhir.server.publish import publish_resources
from alliance_fhir.server.state import StateStore
from alliance_fhir.server.sync import SyncOptions
from alliance_fhir.service.settings import ServeSettings
from alliance_fhir.service.subscription import ensure_subscription, ensure_topic, remove_subscriptions
from alliance_fhir.service.worker import Worker

from ..support.proxy import ForwardingProxy, ProxyHandler
from .helpers import client, unique
from .test_hapi_sync import post_all, srs

pytestmark = pytest.mark.integration
CATALOG = load_catalog()
SECRET = "serve-integration-secret-0123456789"
FRESH = {"Cache-Control": "no-cache"}
LOW = (7.0, 7.0, 7.0, 7.0)  # SRS 28.0: below the 36 cutoff, a low-alliance signal
HIGH = (9.5, 9.5, 9.5, 9.5)  # SRS 38.0
CHANNELS = ["rest-hook", "topic"]
# "Within a few seconds" as a correctness bound: a notification, not the 15-minute safety net, did
# it, even on a loaded 2-core CI machine with HAPI on PostgreSQL. How soon is benchmarks/bench_serve.py's
# to measure (p50/p95/max), not a test's.
WITHIN = 30.0


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
    """One `alliance-fhir serve` process (its own port, state and JSON log) on one channel."""

    def __init__(
        self,
        base: str,
        workdir: Path,
        *args: str,
        channel: str = "rest-hook",
        state: str | None = None,
        env: dict[str, str | None] | None = None,
    ) -> None:
        self.base, self.channel, self.args = base, channel, args
        self.env = env or {}  # added to (a str) or removed from (None) the environment serve starts with
        self.state = state or str(workdir / "state.sqlite")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"serve.{self.port}.log"

    def start(self, wait_subscription: bool = True, wait_ready: bool = True) -> Service:
        env = {**os.environ, "ALLIANCE_FHIR_WEBHOOK_SECRET": SECRET}
        for name, value in self.env.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
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
            self.state,
            "--channel",
            self.channel,
            "--log-format",
            "json",
            *self.args,
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
        if not wait_ready:  # listening is all: the caller checks /livez and /readyz
            wait_for("livez", lambda: self.answers("/livez") or self._exited(), timeout=60)
            return self
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
        return self.answers("/healthz")

    def answers(self, path: str) -> bool:
        """``path`` answers 200."""
        try:
            return httpx.get(f"{self.url}{path}", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def health(self) -> httpx.Response:
        return httpx.get(f"{self.url}/healthz", timeout=30)

    def last_sync(self) -> dict[str, Any] | None:
        """What healthz says of the service's last catch-up sync (None before the first ends)."""
        return self.health().json()["last_sync"]  # type: ignore[no-any-return]

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        return sum(
            float(line.split()[-1]) for line in text.splitlines() if line.startswith(name) and not line.startswith("#")
        )

    def received(self) -> float:
        """Notifications of this service's channel accepted so far."""
        return self.metric(f'alliance_fhir_notifications_received_total{{channel="{self.channel}"}}')

    def handled(self) -> float:
        return self.metric("alliance_fhir_write_latency_seconds_count")

    def hook(
        self, method: str, path: str, body: Any = None, secret: str | None = SECRET, raw: bytes | None = None
    ) -> httpx.Response:
        headers = {"Content-Type": "application/fhir+json"}
        if secret is not None:
            headers["Authorization"] = f"Bearer {secret}"
        content = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        return httpx.request(method, f"{self.url}/hook{path}", content=content, headers=headers, timeout=10)

    def notify(self, response: dict[str, Any], secret: str | None = SECRET) -> httpx.Response:
        """The notification HAPI sends on this channel for ``response`` (as if the server had sent it)."""
        if self.channel == "topic":
            return self.hook("POST", "", topic_bundle(response), secret=secret)
        return self.hook("PUT", f"/QuestionnaireResponse/{response['id']}", response, secret=secret)

    def inbox(self, rid: str | None = None) -> int:
        """Hints waiting in this service's inbox (for one response, or all), read from its state."""
        with StateStore(self.state) as store:
            waiting = store.inbox_batch(self.base, 100_000)
        return sum(1 for item in waiting if rid is None or item.response_id == rid)

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


def topic_bundle(response: dict[str, Any], *extra: dict[str, Any]) -> dict[str, Any]:
    """A Backport ``history`` notification naming ``response`` (SubscriptionStatus first, then the focus entry)."""
    reference = f"QuestionnaireResponse/{response['id']}"
    status = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "type", "valueCode": "event-notification"},
            {"name": "notification-event", "part": [{"name": "focus", "valueReference": {"reference": reference}}]},
        ],
    }
    version = response.get("meta", {}).get("versionId", "1")
    entries = [{"resource": status}, *extra, {"fullUrl": f"{reference}/_history/{version}", "resource": response}]
    return {"resourceType": "Bundle", "type": "history", "entry": entries}


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
        # HAPI registers a new topic only on its next cache refresh (up to a minute): start the clock now
        ensure_topic(c)
    yield fhir_server
    with client(fhir_server) as c:
        remove_subscriptions(c)


@pytest.fixture(scope="module", params=CHANNELS)
def service(request: pytest.FixtureRequest, server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The module's service on one channel: every test that takes it runs on rest-hook and on topic."""
    running = Service(server, tmp_path_factory.mktemp("serve"), channel=request.param).start()
    if running.channel == "topic":
        _until_topic_deliveries_flow(server, running)
    yield running
    if running.proc is not None and running.proc.poll() is None:
        assert running.stop() == 0


def _until_topic_deliveries_flow(server: str, topic: Service) -> None:
    """HAPI 8.8 registers a new topic on its next cache refresh: write probes until one is delivered (bounded)."""
    patient = f"Patient/{unique('p')}"
    deadline = time.monotonic() + 90
    while topic.received() == 0 and time.monotonic() < deadline:
        write(server, srs(patient, unique("qr"), HIGH))
        time.sleep(3)
    assert topic.received() > 0, "no topic notification in 90 s"


def has_low_alliance_issue(server: str, patient: str) -> bool:
    return any(
        c.get("code") == "low-alliance" for i in issues(server, patient) for c in i.get("code", {}).get("coding", [])
    )


def restore_subscription(server: str, of: Service) -> None:
    """Point our one Subscription at ``of`` again (a test that started another service took it over)."""
    with client(server) as c:
        ensure_subscription(c, list(CATALOG), f"{of.url}/hook", SecretStr(SECRET), of.channel)  # type: ignore[arg-type]
    wait_for("our Subscription active", lambda: subscription_status(server) == "active", timeout=30)


# ---------------------------------------------------------------- both channels (rest-hook and Backport topic)


def test_a_posted_response_is_scored_and_its_signals_written_within_seconds(server, service):
    patient = f"Patient/{unique('p')}"
    rid = unique("qr")
    received = service.received()
    write(server, srs(patient, rid, LOW))
    assert wait_for("the score Observation", score_of(server, rid), timeout=WITHIN) == 28.0
    wait_for("a low-alliance DetectedIssue", lambda: has_low_alliance_issue(server, patient), timeout=WITHIN)
    # one write, one notification: HAPI does not re-send (a topic receiver must answer with a Bundle, and we do)
    time.sleep(3)
    assert service.received() == received + 1

    write(server, srs(patient, rid, HIGH) | {"status": "amended"})
    assert wait_for("the amended Observation", score_of(server, rid, "amended"), timeout=WITHIN) == 38.0
    assert len(observations(server, rid)) == 1
    # the criteria never filter on status, so HAPI delivers the retraction too (the safety net would catch it)
    write(server, srs(patient, rid, HIGH) | {"status": "entered-in-error"})
    wait_for("the retracted Observation", score_of(server, rid, "entered-in-error"), timeout=WITHIN)
    assert len(observations(server, rid)) == 1


def test_two_notifications_of_one_version_make_one_write(server, service):
    patient, rid = f"Patient/{unique('p')}", unique("qr")
    write(server, srs(patient, rid, HIGH))
    wait_for("the score Observation", score_of(server, rid), timeout=WITHIN)
    observation = observations(server, rid)[0]
    version = observation["meta"]["versionId"]
    with client(server) as c:
        current = c.read("QuestionnaireResponse", rid)
    handled = service.handled()
    for _ in range(2):
        assert service.notify(current).status_code == 200
    wait_for("both hints handled", lambda: service.handled() >= handled + 1, timeout=WITHIN)
    wait_for("an empty inbox", lambda: service.metric("alliance_fhir_inbox_depth") == 0, timeout=WITHIN)
    again = observations(server, rid)
    assert len(again) == 1 and again[0]["meta"]["versionId"] == version  # not even a new version


def test_a_wrong_or_missing_secret_is_refused_and_records_nothing(server, service):
    rid = unique("qr")  # not on the server: were it recorded, the inbox would show it
    refused = service.metric('alliance_fhir_notifications_refused_total{reason="unauthorised"}')
    body = srs("Patient/x", rid, LOW)
    assert service.notify(body, secret="wrong-secret-0123456789").status_code == 401
    assert service.notify(body, secret=None).status_code == 401
    assert service.notify(body, secret=SECRET + "x").status_code == 401
    assert service.hook("POST", "", None, secret=SECRET[:-1]).status_code == 401  # the empty rest-hook POST too
    assert service.metric('alliance_fhir_notifications_refused_total{reason="unauthorised"}') == refused + 4
    assert service.inbox(rid) == 0
    assert observations(server, rid) == []


def test_a_body_over_the_cap_gets_413(server, service):
    rid = unique("qr")
    too_large = b"{" + b" " * (1024 * 1024 + 10) + b"}"
    refused = service.metric('alliance_fhir_notifications_refused_total{reason="too_large"}')
    assert service.hook("PUT", f"/QuestionnaireResponse/{rid}", raw=too_large).status_code == 413
    assert service.hook("POST", "", raw=too_large).status_code == 413
    assert service.metric('alliance_fhir_notifications_refused_total{reason="too_large"}') == refused + 2
    assert service.inbox(rid) == 0


def test_a_forged_payload_changes_nothing_the_servers_copy_is_scored(server, service):
    patient, rid = f"Patient/{unique('p')}", unique("qr")
    write(server, srs(patient, rid, HIGH))
    assert wait_for("the score Observation", score_of(server, rid), timeout=WITHIN) == 38.0
    observation = observations(server, rid)[0]
    forged = srs(patient, rid, LOW) | {"meta": {"versionId": "99"}}
    handled = service.handled()
    # a foreign fullUrl beside ours (never fetched, never hinted), other answers, another version
    foreign = {"fullUrl": "http://169.254.169.254/latest/QuestionnaireResponse/x", "resource": srs(patient, "x", LOW)}
    answer = (
        service.hook("POST", "", topic_bundle(forged, foreign))
        if service.channel == "topic"
        else service.notify(forged)
    )
    assert answer.status_code == 200
    if service.channel == "topic":
        assert answer.json()["resourceType"] == "Bundle"  # what HAPI needs not to re-send
    assert service.hook("PUT", "/QuestionnaireResponse/..%2F..%2Fmetadata", forged).status_code in (400, 404, 405)
    assert service.hook("PUT", f"/Patient/{rid}", {"resourceType": "Patient", "id": rid}).status_code == 400
    wait_for("the forged hint handled", lambda: service.handled() >= handled + 1, timeout=WITHIN)
    wait_for("an empty inbox", lambda: service.metric("alliance_fhir_inbox_depth") == 0, timeout=WITHIN)
    again = observations(server, rid)
    assert len(again) == 1 and again[0]["valueQuantity"]["value"] == 38.0  # the server's answers, not the forged ones
    assert again[0]["meta"]["versionId"] == observation["meta"]["versionId"]


def _burst_caught_mid_drain(server: str, victim: Service, n: int = 200) -> tuple[str, list[dict[str, Any]]]:
    """Write ``n`` responses of a new patient at once; return once hints wait while some are written."""
    patient = f"Patient/{unique('p')}"
    responses = [srs(patient, f"{patient.split('/')[1]}-{i}", (9.0, 9.0, 9.0, float(i % 10))) for i in range(n)]
    written = victim.metric("alliance_fhir_observations_written_total")
    post_all(server, responses)
    wait_for(
        "hints waiting while some are written",
        lambda: (
            victim.metric("alliance_fhir_inbox_depth") > 0
            and victim.metric("alliance_fhir_observations_written_total") > written
        ),
        timeout=60,
        every=0.02,
    )
    return patient, responses


def _each_scored_once(server: str, patient: str, responses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def all_scored() -> list[dict[str, Any]] | None:
        found = _scores_of(server, patient)
        return found if len(found) >= len(responses) else None

    found = wait_for(f"all {len(responses)} Observations", all_scored, timeout=120, every=0.5)
    assert len(found) == len(responses)
    assert max(Counter(o["identifier"][0]["value"] for o in found).values()) == 1
    by_response = {o["derivedFrom"][0]["reference"].split("/")[1]: o["valueQuantity"]["value"] for o in found}
    assert by_response == {r["id"]: round(27.0 + int(r["id"].rsplit("-", 1)[1]) % 10, 1) for r in responses}
    return found


def _scores_of(server: str, patient: str) -> list[dict[str, Any]]:
    with client(server) as c:
        return list(c.search("Observation", {"subject": patient, "identifier": f"{IDENTIFIER_SYSTEM}|"}))


def test_sigterm_mid_drain_finishes_the_writes_in_flight_and_exits_0(server, service, tmp_path):
    victim = Service(server, tmp_path, channel=service.channel).start()
    try:
        patient, responses = _burst_caught_mid_drain(server, victim)
        assert victim.stop() == 0
        messages = [line["message"] for line in victim.log_lines()]
        assert "worker stopped" in messages and not [m for m in messages if "did not finish" in m]
        # no write cut off: every Observation on the server is in the ledger as written, and nothing else is
        on_server = {o["derivedFrom"][0]["reference"].split("/")[1] for o in _scores_of(server, patient)}
        with StateStore(victim.state) as store:
            ledger = store.lookup(server, [r["id"] for r in responses])
        assert on_server and {rid for rid, e in ledger.items() if e.outcome == "written"} == on_server
        victim.start()  # what was left in the inbox (and what HAPI re-sends) is written after the restart
        _each_scored_once(server, patient, responses)
        assert victim.stop() == 0
    finally:
        if victim.proc is not None and victim.proc.poll() is None:
            victim.kill()
        restore_subscription(server, service)


def test_sigkill_between_acknowledgement_and_write_loses_nothing_and_duplicates_nothing(server, service, tmp_path):
    victim = Service(server, tmp_path, channel=service.channel).start()
    try:
        patient, responses = _burst_caught_mid_drain(server, victim)
        victim.kill()
        assert victim.inbox() > 0, "the kill landed after the inbox drained"
        victim.start()
        started = [line["message"] for line in victim.log_lines() if "worker started" in line["message"]]
        assert len(started) == 2 and not started[1].startswith("worker started; 0 ")
        _each_scored_once(server, patient, responses)
        wait_for("an empty inbox", lambda: victim.metric("alliance_fhir_inbox_depth") == 0, timeout=60)
        assert victim.stop() == 0
    finally:
        if victim.proc is not None and victim.proc.poll() is None:
            victim.kill()
        restore_subscription(server, service)  # our one Subscription names the module's service again


def test_receiver_down_70_s_then_the_catch_up_converges_retractions_included(server, service, tmp_path):
    patient = f"Patient/{unique('p')}"
    retracted, missed = unique("qr"), unique("qr")
    write(server, srs(patient, retracted, LOW))
    wait_for("the score Observation", score_of(server, retracted), timeout=WITHIN)
    assert service.stop() == 0  # SIGTERM: graceful, exit 0

    write(server, srs(patient, missed, HIGH))
    down_at = write(server, srs(patient, retracted, LOW) | {"status": "entered-in-error"})

    # while HAPI retries into the void: the periodic safety net of an in-process worker catches a
    # response no notification will ever name (its own state, only responses with its own tag)
    _safety_net_catches_what_no_notification_named(server, tmp_path)

    time.sleep(max(0.0, 70 - (time.monotonic() - down_at)))  # HAPI gives up after ~58 s (hapi-fhir #6002)
    assert observations(server, missed) == []
    service.start()
    assert wait_for("the missed response scored", score_of(server, missed), timeout=WITHIN) == 38.0
    wait_for("the retraction", score_of(server, retracted, "entered-in-error"), timeout=WITHIN)
    # HAPI may still deliver a late retry after the restart, so the hints can do part of the work
    # before the start catch-up finishes: wait for that run to end, then require that it did not
    # error. ("failures" is allowed: on a shared test server other tests' deliberately bad
    # responses stay outstanding; ours converged, as asserted above.)
    start_runs = 'alliance_fhir_catchup_runs_total{reason="start"'
    wait_for("the start catch-up to finish", lambda: service.metric(start_runs), timeout=120)
    start_sync = service.health().json()["last_sync"]
    assert service.metric(start_runs) == 1 and service.metric(start_runs + ',result="error"}') == 0, start_sync
    assert start_sync["reason"] == "start"


def _safety_net_catches_what_no_notification_named(server: str, tmp_path: Path) -> None:
    tag = {"system": "http://alliance-fhir.org/fhir/test", "code": unique("net")}
    with client(server) as c, StateStore(tmp_path / "net.sqlite") as store:
        worker = Worker(c, CATALOG, store, ServeSettings(safety_net_minutes=0.05), options=SyncOptions(tag=tag))
        worker.start()
        try:
            wait_for("the start sync", lambda: worker.last_sync is not None, timeout=WITHIN)
            rid = unique("qr")
            write(server, srs(f"Patient/{unique('p')}", rid, HIGH) | {"meta": {"tag": [tag]}})
            assert wait_for("the safety net", score_of(server, rid), timeout=WITHIN) == 38.0
            # the run that wrote it is counted when it ends, a moment after its write landed
            ran = worker.metrics.catch_up.labels("safety-net", "ok")
            assert wait_for("the safety-net run counted", lambda: ran._value.get() >= 1, timeout=WITHIN)
        finally:
            assert worker.stop(30)


def test_healthz_is_200_with_its_status_while_the_server_answers_and_the_inbox_drains(server, service):
    wait_for("a first sync", service.last_sync, timeout=WITHIN)
    answer = service.health()
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    status = answer.json()
    assert status["status"] == "ok" and status["server_reachable"] is True and status["worker_running"] is True
    assert status["inbox_draining"] is True and isinstance(status["inbox_depth"], int)
    last = status["last_sync"]
    assert isinstance(last["reason"], str) and all(isinstance(last[k], int) for k in ("found", "written", "failed"))


# ---------------------------------------------------------------- healthz 503 (its own service behind a switchable proxy)


class SwitchProxy(ForwardingProxy):
    """Forwards to HAPI, or plays a server that is down (``down``) or that fails every search (``searches-fail``)."""

    mode = "pass"

    def handle(self, request: ProxyHandler, body: bytes) -> None:
        if self.mode == "down" or (self.mode == "searches-fail" and "_search" in request.path):
            return request.reply(500 if self.mode == "searches-fail" else 502, b"", {})
        return request.relay(self.forward(request, body))


def test_healthz_is_503_when_the_inbox_does_not_drain_or_the_server_is_unreachable(server, tmp_path):
    settings = tmp_path / "serve.toml"
    settings.write_text("[serve]\nstall_seconds = 3\n")
    settings.chmod(0o600)
    with SwitchProxy(server) as proxy:
        alone = Service(proxy.url, tmp_path, "--no-subscribe", "--config", str(settings)).start()
        try:
            assert alone.health().status_code == 200
            patient, rid = f"Patient/{unique('p')}", unique("qr")
            write(server, srs(patient, rid, HIGH))
            proxy.mode = "searches-fail"  # the server answers /metadata, but the re-read of every hint fails
            assert alone.notify(srs(patient, rid, HIGH)).status_code == 200
            stalled = wait_for(
                "healthz 503", lambda: (r := alone.health()).status_code == 503 and r.json(), timeout=WITHIN
            )
            assert stalled["server_reachable"] is True and stalled["inbox_draining"] is False
            assert stalled["inbox_depth"] == 1 and stalled["status"] == "unavailable"

            proxy.mode = "pass"  # the hint was kept: it is written once the server answers again
            assert wait_for("the score Observation", score_of(server, rid), timeout=WITHIN) == 38.0
            wait_for("healthz 200 again", lambda: alone.health().status_code == 200, timeout=WITHIN)

            proxy.mode = "down"
            down = wait_for(
                "healthz 503", lambda: (r := alone.health()).status_code == 503 and r.json(), timeout=WITHIN
            )
            assert down["server_reachable"] is False and down["status"] == "unavailable"
            assert alone.stop() == 0
        finally:
            if alone.proc is not None and alone.proc.poll() is None:
                alone.kill()


# ---------------------------------------------------------------- two replicas on one PostgreSQL state


def test_two_replicas_on_one_postgresql_state_write_each_observation_once(server, postgres_url, tmp_path):
    """HAPI notifies replica A; every notification also reaches replica B (as behind a fan-out): one write each."""
    previous = _our_subscription(server)
    with StateStore(postgres_url) as store:  # start the replicas' catch-up at now: only this test's responses
        store.set_checkpoint(server, datetime.now(UTC).isoformat(timespec="seconds"))
    first = Service(server, tmp_path, state=postgres_url).start()
    second = Service(server, tmp_path, "--no-subscribe", state=postgres_url).start()

    def written() -> float:
        return sum(replica.metric("alliance_fhir_observations_written_total") for replica in (first, second))

    try:
        for replica in (first, second):  # their start catch-ups (the overlap may find other tests' responses)
            wait_for("the start sync", replica.last_sync, timeout=120)
        before = written()
        patient = f"Patient/{unique('p')}"
        responses = [srs(patient, f"{patient.split('/')[1]}-{i}", (9.0, 9.0, 9.0, float(i % 10))) for i in range(60)]
        post_all(server, responses)
        with client(server) as c:
            copies = [c.read("QuestionnaireResponse", r["id"]) for r in responses]
        with ThreadPoolExecutor(4) as pool:  # the same notifications, twice over, to both replicas at once
            answers = list(
                pool.map(
                    lambda args: args[0].notify(args[1]).status_code,
                    [(replica, copy) for copy in copies for replica in (first, second, second)],
                )
            )
        assert set(answers) == {200}

        _each_scored_once(server, patient, responses)
        wait_for("the shared inbox empty", lambda: first.inbox() == 0, timeout=WITHIN)
        assert written() - before == len(responses)  # between them, each response written once: none twice, none lost
        with StateStore(postgres_url) as store:
            ledger = store.lookup(server, [r["id"] for r in responses])
        assert {e.outcome for e in ledger.values()} == {"written"} and len(ledger) == len(responses)
        assert first.stop() == 0 and second.stop() == 0
    finally:
        for replica in (first, second):
            if replica.proc is not None and replica.proc.poll() is None:
                replica.kill()
        if previous is not None:  # the module's service (if running) gets our Subscription back
            endpoint, channel = previous
            with client(server) as c:
                ensure_subscription(c, list(CATALOG), endpoint, SecretStr(SECRET), channel)  # type: ignore[arg-type]


def _our_subscription(server: str) -> tuple[str, str] | None:
    """(endpoint, channel) of our Subscription on the server, if there is one."""
    with client(server) as c:
        found = list(c.search("Subscription", {"_tag": f"{SUBSCRIPTION_TAG['system']}|{SUBSCRIPTION_TAG['code']}"}))
    if len(found) != 1:
        return None
    channel = "topic" if found[0].get("criteria") == SUBSCRIPTION_TOPIC_URL else "rest-hook"
    return str(found[0]["channel"]["endpoint"]), channel
