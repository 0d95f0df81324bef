"""`serve` fed by a vendor's signed id-only events, and `serve` polling, on the real HAPI.

The EHR here is HAPI holding the responses; the "vendor" is this test, POSTing to serve what
athenahealth's Event Subscription Platform sends (our reading of
https://github.com/athenahealth/aone-fhir-subscriptions): an id-only Bundle naming the response,
signed ``X-Hub-Signature: sha256=<hex HMAC of the body>``, without a header of ours. serve must
re-read the response from HAPI and write its score there; an unsigned notification is refused
and scores nothing. Polling: no Subscription, no notification, the sync every ``--poll-minutes``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from alliance_fhir import content_resources, load_catalog
from alliance_fhir.server.publish import publish_resources
from alliance_fhir.service.settings import KEY_ENV, SECRET_ENV

from .helpers import client, unique
from .test_hapi_serve import HIGH, LOW, WITHIN, Service, observations, score_of, subscription_status, wait_for, write
from .test_hapi_sync import srs

pytestmark = pytest.mark.integration
KEY = "vendor-x-hub-secret-0123456789"


@pytest.fixture(scope="module")
def server(fhir_server: str) -> Iterator[str]:
    with client(fhir_server) as c:
        assert not [r for r in publish_resources(c, content_resources(load_catalog())) if r.action == "failed"]
    yield fhir_server


def vendor_notification(rid: str) -> bytes:
    """The id-only Bundle athenahealth's README shows, naming ``QuestionnaireResponse/rid``, as sent (bytes)."""
    status = {
        "resourceType": "SubscriptionStatus",
        "status": "active",
        "type": "event-notification",
        "eventsSinceSubscriptionStart": "1",
        "eventsInNotification": 1,
        "subscription": {"reference": "Subscription/vendor-1"},
        "notificationEvent": [
            {
                "id": unique("event"),
                "eventNumber": "1",
                "timestamp": datetime.now(UTC).isoformat(),
                "focus": {"reference": f"QuestionnaireResponse/{rid}"},
            }
        ],
    }
    bundle = {
        "resourceType": "Bundle",
        "id": unique("bundle"),
        "type": "history",
        "timestamp": datetime.now(UTC).isoformat(),
        "entry": [{"fullUrl": f"urn:uuid:{unique('s')}", "resource": status}],
    }
    return json.dumps(bundle).encode()


def send(service: Service, body: bytes, key: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/fhir+json"}
    if key is not None:
        headers["X-Hub-Signature"] = "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    return httpx.post(f"{service.url}/hook", content=body, headers=headers, timeout=10)


def path_lines(service: Service) -> list[str]:
    return [line["message"] for line in service.log_lines() if "path: " in line.get("message", "")]


def test_a_signed_id_only_event_gets_the_response_scored_and_an_unsigned_one_scores_nothing(server, tmp_path):
    events = Service(server, tmp_path, "--safety-net-minutes", "600", env={KEY_ENV: KEY, SECRET_ENV: None})
    events.start(wait_subscription=False)
    try:
        wait_for("the start sync", events.last_sync, timeout=WITHIN)
        assert subscription_status(server) == "0 found"  # a key set: the Subscription is the EHR's, none of ours
        assert any("path: signed events" in line for line in path_lines(events))
        unsigned_rid, signed_rid = unique("qr"), unique("qr")
        patient = f"Patient/{unique('p')}"
        write(server, srs(patient, unsigned_rid, LOW))
        write(server, srs(patient, signed_rid, HIGH))

        refused = send(events, vendor_notification(unsigned_rid), key=None)
        assert refused.status_code == 401
        assert send(events, vendor_notification(unsigned_rid), key="not-the-vendors-key-012345").status_code == 401
        assert events.inbox() == 0
        assert send(events, vendor_notification(signed_rid), key=KEY).status_code == 200
        assert wait_for("the score Observation", score_of(server, signed_rid), timeout=WITHIN) == 38.0  # 4 x 9.5
        # the refused ones were before it in time and are in no inbox: nothing scored them
        assert observations(server, unsigned_rid) == []
        assert events.metric('alliance_fhir_notifications_refused_total{reason="bad_signature"}') == 2

        assert send(events, vendor_notification(unsigned_rid), key=KEY).status_code == 200  # now signed
        assert wait_for("the score Observation", score_of(server, unsigned_rid), timeout=WITHIN) == 28.0  # 4 x 7
        log = events.log.read_text()
        assert patient not in log and KEY not in log
        assert log.count("refused a notification (401)") == 2
    finally:
        assert events.stop() == 0


def test_with_polling_only_a_new_response_is_scored_within_one_poll_interval(server, tmp_path):
    interval = 0.1 * 60  # --poll-minutes 0.1
    poller = Service(server, tmp_path, "--poll-minutes", "0.1")
    poller.start(wait_subscription=False)
    try:
        wait_for("the start sync", poller.last_sync, timeout=WITHIN)
        assert subscription_status(server) == "0 found"  # polling: no Subscription is made
        assert path_lines(poller)[0].endswith(
            "path: polling, an incremental sync every 0.1 min (mode = poll: for EHRs without FHIR Subscriptions)"
        )
        rid = unique("qr")
        write(server, srs(f"Patient/{unique('p')}", rid, (9.0, 8.0, 9.5, 7.5)))
        # one interval, plus one incremental sync against HAPI on a loaded 2-core machine
        assert wait_for("the polled score", score_of(server, rid), timeout=interval + 20) == 34.0  # 9 + 8 + 9.5 + 7.5
        last: dict[str, Any] | None = poller.last_sync()
        assert last is not None and last["reason"] == "safety-net"
        assert poller.received() == 0  # no notification had a part in it
    finally:
        assert poller.stop() == 0
