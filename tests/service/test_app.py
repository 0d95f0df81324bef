"""serve's HTTP app on the in-memory fake server: what is refused, in which order, and what readiness says.

The app is served by uvicorn on a loopback port (``tests/support/asgi_server.py``); the worker
runs on tests/fake_fhir.py. The same behaviours against the real HAPI: tests/integration/test_hapi_serve*.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.server.settings import ServerConfig
from alliance_fhir.server.state import StateStore
from alliance_fhir.service.app import build_app
from alliance_fhir.service.hints import Hint
from alliance_fhir.service.settings import ServeSettings
from alliance_fhir.service.worker import Worker

from ..fake_fhir import BASE, FakeFhir, _json, _outcome
from ..support.asgi_server import raw_request, serving
from ..support.polling import wait_for

SECRET = "app-test-secret-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/fhir+json"}
MAX_BODY = 1024 * 1024


@pytest.fixture
def server() -> FakeFhir:
    return FakeFhir()


@pytest.fixture
def worker(server: FakeFhir, tmp_path: Path, catalog) -> Iterator[Worker]:  # noqa: ANN001
    client = FhirClient(ServerConfig(url=BASE), transport=httpx.MockTransport(server), sleep=lambda _s: None)
    with StateStore(tmp_path / "state.sqlite") as store:
        running = Worker(client, catalog, store, ServeSettings(start_retry_max_seconds=1))
        running.start()
        yield running
        assert running.stop(10)


@pytest.fixture
def url(worker: Worker) -> Iterator[str]:
    with serving(build_app(worker, SecretStr(SECRET), max_body_bytes=MAX_BODY)) as base:
        yield base


# ---------------------------------------------------------------- the secret first, then the size


@pytest.mark.parametrize("path", ["/hook", "/hook/QuestionnaireResponse/qr-1"])
def test_a_wrong_secret_with_an_oversized_content_length_is_401_before_any_body(url, path):
    method = "POST" if path == "/hook" else "PUT"
    for secret, status in (("wrong-secret-0123456789", b"401"), (SECRET, b"413")):
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {secret}\r\nContent-Length: {10**9}\r\n\r\n"
        ).encode()
        assert raw_request(url, head).startswith(b"HTTP/1.1 " + status), secret  # no body was sent: none was read


# ---------------------------------------------------------------- malformed but authenticated: 400, one line, no traceback


def status_bundle(*parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "history",
        "entry": [{"resource": {"resourceType": "Parameters", "parameter": list(parameters)}}],
    }


MALFORMED: dict[str, tuple[str, bytes]] = {
    "nested 100,000 deep (POST)": ("POST", b"[" * 100_000 + b"]" * 100_000),
    "nested 100,000 deep (PUT)": ("PUT", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
    "focus.valueReference a string": (
        "POST",
        json.dumps(
            status_bundle(
                {"name": "type", "valueCode": "event-notification"},
                {
                    "name": "notification-event",
                    "part": [{"name": "focus", "valueReference": "QuestionnaireResponse/1"}],
                },
            )
        ).encode(),
    ),
    "subscription reference a list": (
        "POST",
        json.dumps(
            status_bundle(
                {"name": "type", "valueCode": "event-notification"},
                {"name": "subscription", "valueReference": {"reference": ["Subscription/1"]}},
            )
        ).encode(),
    ),
    "subscription valueReference a list": (
        "POST",
        json.dumps(
            status_bundle({"name": "subscription", "valueReference": [{"reference": "Subscription/1"}]})
        ).encode(),
    ),
    "parameter not an array": (
        "POST",
        json.dumps(
            status_bundle() | {"entry": [{"resource": {"resourceType": "Parameters", "parameter": {"name": "type"}}}]}
        ).encode(),
    ),
    "an entry that is a string": (
        "POST",
        json.dumps(
            status_bundle({"name": "type", "valueCode": "heartbeat"})
            | {"entry": [{"resource": {"resourceType": "Parameters"}}, "x"]}
        ).encode(),
    ),
    "a body that is not JSON (PUT)": ("PUT", b"{broken"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_authenticated_notification_is_a_400_with_one_log_line_and_no_traceback(url, worker, case, caplog):
    method, body = MALFORMED[case]
    path = "/hook" if method == "POST" else "/hook/QuestionnaireResponse/qr-1"
    caplog.set_level(logging.INFO)
    answer = httpx.request(method, url + path, content=body, headers=AUTH, timeout=10)
    assert answer.status_code == 400, answer.text
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    refused = [r for r in caplog.records if "refused a notification (400)" in r.getMessage()]
    assert len(refused) == 1 and "\n" not in refused[0].getMessage()
    assert worker.store.inbox_depth(worker.server) == 0


def test_a_too_deep_body_says_why(url):
    answer = httpx.post(url + "/hook", content=b"[" * 100_000, headers=AUTH, timeout=10)
    assert answer.status_code == 400 and "nested deeper than" in answer.json()["error"]


# ---------------------------------------------------------------- failures are visible; liveness is not readiness


def test_a_form_that_cannot_be_scored_is_logged_with_its_reason_and_counted(url, worker, server, make_response, caplog):
    caplog.set_level(logging.INFO)
    wait_for("the start sync", lambda: worker.last_sync)
    server.put(make_response("srs", {1: 9, 2: 9, 3: 9, 4: 99}, rid="qr-bad", subject={"reference": "Patient/p9"}))
    worker.record([Hint("qr-bad")], "rest-hook")
    wait_for("the failure", lambda: worker.metrics.failed._value.get() == 1)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("failed: "))
    assert "QuestionnaireResponse/qr-bad" in line and "item '" in line and "out of range" in line
    assert "99" not in line and "Patient/p9" not in line  # the answer and the patient stay out of the log

    ready = httpx.get(url + "/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["outstanding_failures"] == 1  # a failed form is not an outage
    assert httpx.get(url + "/healthz", timeout=10).json()["outstanding_failures"] == 1
    metrics = httpx.get(url + "/metrics", timeout=10).text
    assert "alliance_fhir_outstanding_failures 1.0" in metrics.splitlines()


def test_livez_stays_200_while_readyz_is_503_until_the_server_answers(server, tmp_path, catalog):  # noqa: ANN001
    server.faults.append(lambda r: _json(503, _outcome("down")))
    client = FhirClient(ServerConfig(url=BASE), transport=httpx.MockTransport(server), sleep=lambda _s: None)
    with StateStore(tmp_path / "state.sqlite") as store:
        worker = Worker(client, catalog, store, ServeSettings(start_retry_max_seconds=1))
        worker.start()
        try:
            with serving(build_app(worker, SecretStr(SECRET), max_body_bytes=MAX_BODY)) as url:
                wait_for("a failed start attempt", lambda: httpx.get(url + "/readyz", timeout=10).json()["start_error"])
                ready = httpx.get(url + "/readyz", timeout=10)
                assert ready.status_code == 503 and ready.json()["started"] is False
                assert ready.json()["status"] == "unavailable"
                assert httpx.get(url + "/healthz", timeout=10).status_code == 503
                live = httpx.get(url + "/livez", timeout=10)
                assert live.status_code == 200 and live.json() == {"status": "ok", "worker_running": True}
                assert worker.last_sync is None

                server.faults.clear()  # the server is back: the start completes, then the catch-up
                worker._probe = (0.0, False)  # healthz asks the server again now, not in 10 s
                wait_for("readyz 200", lambda: httpx.get(url + "/readyz", timeout=10).status_code == 200)
                wait_for("the start sync", lambda: worker.last_sync)
        finally:
            assert worker.stop(10)
