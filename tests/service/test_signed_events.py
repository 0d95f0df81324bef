"""Signed, id-only event notifications (athenahealth's shape), and polling where there are no Subscriptions.

The notifications here are shaped as athenahealth's public README shows them
(https://github.com/athenahealth/aone-fhir-subscriptions#event-payload): a ``history`` Bundle with
a ``timestamp``, whose one entry is a SubscriptionStatus naming each event's ``focus`` by a
relative reference, signed with ``X-Hub-Signature: sha256=<hex HMAC-SHA256 of the body>``.

The app is served by uvicorn on a loopback port (``tests/support/asgi_server.py``: Starlette's
TestClient wants a package we do not use); its worker is not started unless a test needs the
response scored, so what a notification queued stays in the inbox to be counted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from alliance_fhir.cli.main import app as cli
from alliance_fhir.cli.serve import path_line
from alliance_fhir.errors import ConfigError
from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.server.settings import ServerConfig
from alliance_fhir.server.state import StateStore
from alliance_fhir.service.app import build_app
from alliance_fhir.service.settings import KEY_ENV, ServeSettings, event_signing, load_serve_settings
from alliance_fhir.service.signing import EventSigning
from alliance_fhir.service.worker import Worker

from ..fake_fhir import BASE, FakeFhir
from ..support.asgi_server import raw_request, serving
from ..support.polling import wait_for

KEY = "athena-x-hub-secret-0123456789"
SECRET = "app-test-secret-0123456789abcdef"
SIGNING = EventSigning(SecretStr(KEY))
MAX_BODY = 64 * 1024


def sign(body: bytes, key: str = KEY, method: str = "sha256") -> str:
    """The header value athenahealth sends: ``<method>=<hex HMAC of the raw body>``."""
    return f"{method}=" + hmac.new(key.encode(), body, getattr(hashlib, method)).hexdigest()


def athena_bundle(
    *focus: object, kind: str = "event-notification", timestamp: datetime | None = None
) -> dict[str, Any]:
    """An id-only notification as athenahealth's README shows one, one event per ``focus`` (a reference or a raw focus)."""
    events = [
        {
            "id": str(uuid.uuid4()),
            "eventNumber": str(n),
            "timestamp": "2026-12-01T10:00:00Z",
            "focus": f if isinstance(f, dict) or not isinstance(f, str) else {"reference": f},
        }
        for n, f in enumerate(focus, 1)
    ]
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "history",
        "timestamp": (timestamp or datetime.now(UTC)).isoformat(),
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {
                    "resourceType": "SubscriptionStatus",
                    "status": "active",
                    "type": kind,
                    "eventsSinceSubscriptionStart": str(len(events)),
                    "eventsInNotification": len(events),
                    "subscription": {"reference": "Subscription/a9c3784c"},
                    "topic": "https://api.platform.athenahealth.com/fhir/r4/SubscriptionTopic/QuestionnaireResponse.create",
                    "notificationEvent": events,
                },
            }
        ],
    }


def post(url: str, body: bytes, signature: str | None, **headers: str) -> httpx.Response:
    sent = {"Content-Type": "application/fhir+json", **headers}
    if signature is not None:
        sent["X-Hub-Signature"] = signature
    return httpx.post(url + "/hook", content=body, headers=sent, timeout=10)


@pytest.fixture
def server() -> FakeFhir:
    return FakeFhir()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(tmp_path / "state.sqlite") as s:
        yield s


@pytest.fixture
def idle(server: FakeFhir, store: StateStore, catalog) -> Worker:  # noqa: ANN001
    """A worker that is not started: what a notification queues stays in the inbox."""
    client = FhirClient(ServerConfig(url=BASE), transport=httpx.MockTransport(server), sleep=lambda _s: None)
    return Worker(client, catalog, store, ServeSettings())


@pytest.fixture
def url(idle: Worker) -> Iterator[str]:
    with serving(build_app(idle, None, max_body_bytes=MAX_BODY, signing=SIGNING, max_events=5)) as base:
        yield base


def queued(worker: Worker) -> list[str]:
    return [i.response_id for i in worker.store.inbox_batch(worker.server, 1000)]


def refused(worker: Worker, reason: str) -> float:
    return float(worker.metrics.refused.labels(reason)._value.get())


# ---------------------------------------------------------------- the signature


def test_a_signed_id_only_notification_queues_its_response_and_is_answered_200(url, idle):
    body = json.dumps(athena_bundle("QuestionnaireResponse/a-432.qr-7")).encode()
    answer = post(url, body, sign(body))
    assert answer.status_code == 200 and answer.json()["resourceType"] == "Bundle"
    assert queued(idle) == ["a-432.qr-7"]
    # upper-case hex is the same digest
    body = json.dumps(athena_bundle("QuestionnaireResponse/qr-8")).encode()
    method, _, digest = sign(body).partition("=")
    assert post(url, body, f"{method}={digest.upper()}").status_code == 200
    assert sorted(queued(idle)) == ["a-432.qr-7", "qr-8"]


@pytest.mark.parametrize(
    ("case", "signature_of"),
    [
        ("missing", lambda body: None),
        ("signed with another key", lambda body: sign(body, key="someone-elses-key-0123456789")),
        ("another method named (sha1)", lambda body: "sha1=" + hashlib.sha1(body).hexdigest()),  # noqa: S324
        ("another method named (sha512)", lambda body: sign(body, method="sha512")),
        ("no method", lambda body: sign(body).partition("=")[2]),
        ("not hex", lambda body: "sha256=" + "z" * 64),
        ("too short", lambda body: sign(body)[:-2]),
        ("the body's digest, unkeyed", lambda body: "sha256=" + hashlib.sha256(body).hexdigest()),
    ],
)
def test_a_notification_without_a_good_signature_is_401_one_line_and_queues_nothing(
    url, idle, case, signature_of, caplog
):
    caplog.set_level(logging.DEBUG, logger="alliance_fhir.serve")
    body = json.dumps(athena_bundle("QuestionnaireResponse/qr-1", "Patient/secret-patient-9")).encode()
    answer = post(url, body, signature_of(body))
    assert answer.status_code == 401, case
    assert queued(idle) == []
    assert refused(idle, "bad_signature") == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "alliance_fhir.serve"]
    assert len(lines) == 1 and lines[0].startswith("refused a notification (401): "), lines
    assert "secret-patient-9" not in lines[0] and KEY not in lines[0] and "qr-1" not in lines[0]


def test_a_body_altered_by_one_byte_after_signing_is_refused(url, idle):
    body = json.dumps(athena_bundle("QuestionnaireResponse/qr-1")).encode()
    signature = sign(body)
    altered = body.replace(b"qr-1", b"qr-2")
    assert len(altered) == len(body) and sum(a != b for a, b in zip(altered, body, strict=True)) == 1
    answer = post(url, altered, signature)
    assert answer.status_code == 401 and "does not match" in answer.json()["error"]
    assert post(url, body + b" ", signature).status_code == 401  # whitespace is part of what was signed
    assert queued(idle) == []
    assert post(url, body, signature).status_code == 200 and queued(idle) == ["qr-1"]


def test_a_huge_body_is_refused_before_any_of_it_is_read_or_hashed(url, idle):
    """The signature header's form first (401 without it), then the size (413), and only then the HMAC."""
    for header, status in (("", b"401"), (f"X-Hub-Signature: sha256={'0' * 64}\r\n", b"413")):
        head = f"POST /hook HTTP/1.1\r\nHost: t\r\n{header}Content-Length: {10**9}\r\n\r\n".encode()
        assert raw_request(url, head).startswith(b"HTTP/1.1 " + status), header  # no body was sent: none was read
    # a chunked body has no Content-Length: cut off as soon as it passes the cap, with a good signature or not
    big = b'{"resourceType": "Bundle", "x": "' + b"a" * (MAX_BODY + 10) + b'"}'

    def chunks() -> Iterator[bytes]:
        yield from (big[i : i + 4096] for i in range(0, len(big), 4096))

    answer = httpx.post(url + "/hook", content=chunks(), headers={"X-Hub-Signature": sign(big)}, timeout=10)
    assert answer.status_code == 413 and queued(idle) == []


# ---------------------------------------------------------------- the time and replays (our own design: the scheme has neither)


@pytest.mark.parametrize(
    ("case", "timestamp", "says"),
    [
        ("two hours old (window 90 min)", datetime.now(UTC) - timedelta(hours=2), "older than 90 minutes"),
        ("an hour ahead", datetime.now(UTC) + timedelta(hours=1), "in the future"),
    ],
)
def test_a_signed_notification_outside_its_time_window_is_401(url, idle, case, timestamp, says):
    body = json.dumps(athena_bundle("QuestionnaireResponse/qr-1", timestamp=timestamp)).encode()
    answer = post(url, body, sign(body))
    assert answer.status_code == 401 and says in answer.json()["error"], case
    assert queued(idle) == [] and refused(idle, "stale") == 1


def test_a_signed_notification_without_a_zoned_timestamp_is_401(url, idle):
    for stamp in (None, "2026-12-01T10:00:00", "yesterday"):
        bundle = athena_bundle("QuestionnaireResponse/qr-1")
        bundle["timestamp"] = stamp
        body = json.dumps(bundle).encode()
        assert post(url, body, sign(body)).status_code == 401, stamp
    assert queued(idle) == []


def test_a_replayed_notification_is_answered_but_not_queued_again(url, idle):
    body = json.dumps(athena_bundle("QuestionnaireResponse/qr-1")).encode()
    assert post(url, body, sign(body)).status_code == 200
    idle.store.inbox_done(idle.server, idle.store.inbox_batch(idle.server, 10))  # handled by the worker
    again = post(url, body, sign(body))
    assert again.status_code == 200 and queued(idle) == []  # the sender is told "received": it was, the first time
    assert idle.metrics.received.labels("signed-duplicate")._value.get() == 1
    # a new notification (a new event) about the same response is queued: it may be a new version
    fresh = json.dumps(athena_bundle("QuestionnaireResponse/qr-1")).encode()
    assert post(url, fresh, sign(fresh)).status_code == 200 and queued(idle) == ["qr-1"]


# ---------------------------------------------------------------- what an id-only notification names


def test_only_questionnaire_response_focus_is_queued_other_resources_are_ignored_with_a_debug_line(url, idle, caplog):
    caplog.set_level(logging.DEBUG, logger="alliance_fhir.serve")
    body = json.dumps(
        athena_bundle(
            "QuestionnaireResponse/qr-1",
            "Patient/a-432.E-528595",
            "Encounter/a-432.enc-3",
            {"identifier": {"system": "urn:athenahealth:athenanet:appointment:432", "value": "2"}},
            "QuestionnaireResponse/qr-1",  # twice in one notification: one hint
        )
    ).encode()
    assert post(url, body, sign(body)).status_code == 200
    assert queued(idle) == ["qr-1"]
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and "not QuestionnaireResponses" in r.getMessage()]
    assert len(debug) == 1 and "Encounter, Patient, identifier" in debug[0].getMessage()
    assert "528595" not in debug[0].getMessage()  # the type, never the id
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_each_malformed_event_is_one_line_and_the_others_are_queued(url, idle, caplog):
    caplog.set_level(logging.INFO, logger="alliance_fhir.serve")
    bundle = athena_bundle("QuestionnaireResponse/qr-1", "QuestionnaireResponse/qr-2")
    events = bundle["entry"][0]["resource"]["notificationEvent"]
    events.insert(1, {"id": "e-2", "focus": {"reference": 12}})  # a number
    events.insert(2, {"id": "e-3"})  # no focus
    events.insert(3, "not an object")
    body = json.dumps(bundle).encode()
    assert post(url, body, sign(body)).status_code == 200
    assert sorted(queued(idle)) == ["qr-1", "qr-2"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped one event")]
    assert lines == [
        "skipped one event of a notification: SubscriptionStatus.notificationEvent[1].focus.reference "
        "is a JSON integer, not a JSON string",
        "skipped one event of a notification: SubscriptionStatus.notificationEvent[2]: no focus",
        "skipped one event of a notification: SubscriptionStatus.notificationEvent[3] is a JSON string (13 characters), "
        "not a JSON object",
    ]


def test_heartbeat_and_handshake_are_answered_200_and_queue_nothing(url, idle):
    for kind in ("heartbeat", "handshake"):
        body = json.dumps(athena_bundle(kind=kind)).encode()
        answer = post(url, body, sign(body))
        assert answer.status_code == 200 and answer.json()["resourceType"] == "Bundle", kind
        assert idle.metrics.received.labels(f"topic-{kind}")._value.get() == 1
    assert queued(idle) == []


def test_a_notification_naming_more_events_than_the_limit_is_refused_whole_with_413(url, idle):
    """Refused, not cut: the sender sees the refusal (a 2xx would say all of them were taken). The limit here is 5."""
    five = json.dumps(athena_bundle(*[f"QuestionnaireResponse/qr-{n}" for n in range(5)])).encode()
    six = json.dumps(athena_bundle(*[f"QuestionnaireResponse/qr-{n}" for n in range(6)])).encode()
    answer = post(url, six, sign(six))
    assert answer.status_code == 413 and "names 6 events; at most 5" in answer.json()["error"]
    assert queued(idle) == []
    assert post(url, five, sign(five)).status_code == 200 and len(queued(idle)) == 5


# ---------------------------------------------------------------- the secret beside the key


def test_with_a_webhook_secret_and_a_key_both_are_required(idle):
    body = json.dumps(athena_bundle("QuestionnaireResponse/qr-1")).encode()
    bearer = {"Authorization": f"Bearer {SECRET}"}
    app = build_app(idle, SecretStr(SECRET), max_body_bytes=MAX_BODY, signing=SIGNING)
    with serving(app) as url:
        assert post(url, body, sign(body)).status_code == 401  # signed, no secret
        assert post(url, body, None, **bearer).status_code == 401  # the secret, unsigned
        assert queued(idle) == []
        assert post(url, body, sign(body), **bearer).status_code == 200
    assert queued(idle) == ["qr-1"]


def test_a_rest_hook_put_must_be_signed_too_when_a_key_is_set(url, idle):
    body = json.dumps({"resourceType": "QuestionnaireResponse", "id": "qr-5"}).encode()
    hook = url + "/hook/QuestionnaireResponse/qr-5"
    assert httpx.put(hook, content=body, timeout=10).status_code == 401
    assert httpx.put(hook, content=body, headers={"X-Hub-Signature": sign(body)}, timeout=10).status_code == 200
    assert queued(idle) == ["qr-5"]


def test_an_app_with_neither_secret_nor_key_is_not_built(idle):
    with pytest.raises(ValueError, match="secret or an event signing key"):
        build_app(idle, None, max_body_bytes=MAX_BODY)


# ---------------------------------------------------------------- end to end on the fake server


def test_a_signed_notification_gets_its_response_scored_from_the_servers_copy(server, store, catalog, make_response):
    client = FhirClient(ServerConfig(url=BASE), transport=httpx.MockTransport(server), sleep=lambda _s: None)
    worker = Worker(client, catalog, store, ServeSettings(start_retry_max_seconds=1))
    worker.start()
    try:
        wait_for("the start sync", lambda: worker.last_sync)
        server.put(make_response("srs", {1: 9, 2: 8.5, 3: 9, 4: 7}, rid="qr-e2e", subject={"reference": "Patient/p1"}))
        with serving(build_app(worker, None, max_body_bytes=MAX_BODY, signing=SIGNING)) as url:
            body = json.dumps(athena_bundle("QuestionnaireResponse/qr-e2e")).encode()
            assert post(url, body, sign(body)).status_code == 200
            found = wait_for("the score Observation", lambda: list(server.store["Observation"].values()))
    finally:
        assert worker.stop(10)
    assert [o["valueQuantity"]["value"] for o in found] == [33.5]  # 9 + 8.5 + 9 + 7


# ---------------------------------------------------------------- settings


def test_the_key_comes_from_the_environment_before_the_config_file_and_is_never_shown(tmp_path, monkeypatch):
    config = tmp_path / "alliance-fhir.toml"
    config.write_text('[serve]\nevent_signing_key = "from-the-file-0123456789"\n')
    monkeypatch.delenv(KEY_ENV, raising=False)
    signing = event_signing(load_serve_settings(config))
    assert signing is not None and signing.key.get_secret_value() == "from-the-file-0123456789"
    assert (signing.header, signing.method) == ("X-Hub-Signature", "sha256")
    monkeypatch.setenv(KEY_ENV, "from-the-environment-0123")
    signing = event_signing(load_serve_settings(config))
    assert signing is not None and signing.key.get_secret_value() == "from-the-environment-0123"
    monkeypatch.setenv(KEY_ENV, "short key!")
    with pytest.raises(ConfigError) as raised:
        load_serve_settings(config)
    assert KEY_ENV in str(raised.value) and "short key" not in str(raised.value)
    monkeypatch.delenv(KEY_ENV)
    config.write_text('[serve]\nevent_signing_key = "tiny"\n')
    with pytest.raises(ConfigError) as raised:
        load_serve_settings(config)
    assert "event_signing_key" in str(raised.value) and "tiny" not in str(raised.value)
    assert event_signing(ServeSettings()) is None


def test_the_signature_settings_are_checked():
    with pytest.raises(ValueError, match="HTTP header name"):
        ServeSettings(event_signature_header="X Hub: Signature")
    with pytest.raises(ValueError, match="event_signature_method"):
        ServeSettings(event_signature_method="sha1")  # type: ignore[arg-type]


# ---------------------------------------------------------------- polling: the path where the EHR has no Subscriptions


def test_the_start_up_line_says_which_path_serve_takes_and_why():
    signing = EventSigning(SecretStr(KEY))
    assert path_line(ServeSettings(mode="poll", safety_net_minutes=5), None, False) == (
        "path: polling, an incremental sync every 5 min (mode = poll: for EHRs without FHIR Subscriptions)"
    )
    assert path_line(ServeSettings(), signing, False).startswith(
        "path: signed events from the EHR's platform (X-Hub-Signature, sha256; the Subscription is the EHR's"
    )
    assert path_line(ServeSettings(), None, False) == (
        "path: subscription (rest-hook), with a safety-net sync every 15 min"
    )
    assert "--no-subscribe" in path_line(ServeSettings(), None, True)
    assert KEY not in path_line(ServeSettings(), signing, False)


def test_poll_minutes_and_safety_net_minutes_together_are_a_configuration_error():
    result = CliRunner().invoke(cli, ["serve", "--server", BASE, "--poll-minutes", "5", "--safety-net-minutes", "5"])
    assert result.exit_code == 2
    assert "give --poll-minutes or --safety-net-minutes, not both" in result.output


def test_with_polling_only_a_new_response_is_scored_within_one_poll_interval(server, store, catalog, make_response):
    """No notification at all: the sync every ``safety_net_minutes`` (here 0.03 min, 1.8 s) finds and scores it."""
    interval = 0.03 * 60
    client = FhirClient(ServerConfig(url=BASE), transport=httpx.MockTransport(server), sleep=lambda _s: None)
    worker = Worker(client, catalog, store, ServeSettings(mode="poll", safety_net_minutes=0.03))
    worker.start()
    try:
        wait_for("the start sync", lambda: worker.last_sync)
        server.put(make_response("srs", {1: 8, 2: 8, 3: 9, 4: 9.5}, rid="qr-poll", subject={"reference": "Patient/p1"}))
        # one interval, plus the time a sync on the in-memory server takes (milliseconds; 3 s for a loaded machine)
        found = wait_for(
            "the score Observation", lambda: list(server.store["Observation"].values()), timeout=interval + 3
        )
    finally:
        assert worker.stop(10)
    assert [o["valueQuantity"]["value"] for o in found] == [34.5]  # 8 + 8 + 9 + 9.5
    assert worker.last_sync is not None and worker.last_sync["reason"] == "safety-net"
