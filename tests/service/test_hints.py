"""A notification is a hint: only ``QuestionnaireResponse/{id}`` of our own server, whatever else it says."""

from __future__ import annotations

from alliance_fhir.service.hints import Hint, hint_from_put, hint_from_reference, topic_notification

BASE = "http://fhir.test/fhir"


def status(*parameters: dict) -> dict:
    return {"resource": {"resourceType": "Parameters", "parameter": list(parameters)}}


def event(reference: str) -> dict:
    return {"name": "notification-event", "part": [{"name": "focus", "valueReference": {"reference": reference}}]}


def test_a_rest_hook_put_names_the_id_and_the_bodys_version_only_when_the_body_is_that_response():
    body = {"resourceType": "QuestionnaireResponse", "id": "qr-1", "meta": {"versionId": "3"}}
    assert hint_from_put("qr-1", body) == Hint("qr-1", "3")
    assert hint_from_put("qr-1", {**body, "id": "other"}) == Hint("qr-1", "")
    assert hint_from_put("qr-1", {"resourceType": "Patient", "id": "qr-1", "meta": {"versionId": "3"}}) == Hint(
        "qr-1", ""
    )
    assert hint_from_put("qr-1", None) == Hint("qr-1", "")
    assert hint_from_put("qr-1", {**body, "meta": {"versionId": "3/../../x"}}) == Hint("qr-1", "")


def test_ids_outside_the_fhir_id_pattern_are_refused():
    for bad in ("", "a" * 65, "a/b", "a b", "../x", "qr_1", "é"):
        assert hint_from_put(bad, None) is None


def test_references_are_relative_or_on_our_base_only():
    assert hint_from_reference("QuestionnaireResponse/7", BASE) == Hint("7")
    assert hint_from_reference("QuestionnaireResponse/7/_history/2", BASE) == Hint("7", "2")
    assert hint_from_reference(f"{BASE}/QuestionnaireResponse/7", BASE) == Hint("7")
    assert hint_from_reference("http://evil.test/fhir/QuestionnaireResponse/7", BASE) is None
    assert hint_from_reference("http://fhir.test/fhir-other/QuestionnaireResponse/7", BASE) is None
    assert hint_from_reference("Patient/7", BASE) is None
    assert hint_from_reference("QuestionnaireResponse/7/extra", BASE) is None
    assert hint_from_reference(None, BASE) is None and hint_from_reference(7, BASE) is None


def test_a_backport_notification_gives_focus_and_fullurl_hints_once_each_and_counts_what_it_refused():
    bundle = {
        "resourceType": "Bundle",
        "type": "history",
        "entry": [
            status(
                {"name": "type", "valueCode": "event-notification"},
                {"name": "events-since-subscription-start", "valueString": "12"},
                {"name": "subscription", "valueReference": {"reference": "Subscription/5"}},
                event("QuestionnaireResponse/1"),
            ),
            {"fullUrl": f"{BASE}/QuestionnaireResponse/1/_history/4"},
            {"fullUrl": "http://169.254.169.254/QuestionnaireResponse/2"},
        ],
    }
    notification = topic_notification(bundle, BASE)
    assert notification is not None
    assert (
        notification.kind == "event-notification"
        and notification.events_since_start == 12
        and notification.subscription == "Subscription/5"
    )
    assert notification.hints == [Hint("1", "4")] and notification.rejected == 1


def test_heartbeats_and_non_notifications():
    heartbeat = {
        "resourceType": "Bundle",
        "type": "history",
        "entry": [status({"name": "type", "valueCode": "heartbeat"})],
    }
    parsed = topic_notification(heartbeat, BASE)
    assert parsed is not None and parsed.kind == "heartbeat" and parsed.hints == []
    shapes: list[object] = [
        None,
        [],
        "x",
        {"resourceType": "Bundle"},
        {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient"}}]},
        {"resourceType": "Patient", "entry": []},
    ]
    for shape in shapes:
        assert topic_notification(shape, BASE) is None


def test_an_id_only_subscription_status_notification_names_its_questionnaire_response_focus_only():
    """athenahealth's shape: the SubscriptionStatus is the only entry; each event's focus is a relative reference."""
    bundle = {
        "resourceType": "Bundle",
        "type": "history",
        "entry": [
            {
                "resource": {
                    "resourceType": "SubscriptionStatus",
                    "type": "event-notification",
                    "eventsSinceSubscriptionStart": "4",
                    "subscription": {"reference": "Subscription/a9c3784c"},
                    "notificationEvent": [
                        {"id": "e1", "focus": {"reference": "QuestionnaireResponse/a-432.qr-1"}},
                        {"id": "e2", "focus": {"reference": "Patient/a-432.E-5"}},
                        {"id": "e3", "focus": {"identifier": {"system": "urn:athenahealth:x", "value": "2"}}},
                        {"id": "e4", "focus": {"reference": "http://evil.test/fhir/QuestionnaireResponse/9"}},
                        {"id": "e5", "focus": ["QuestionnaireResponse/3"]},
                    ],
                }
            }
        ],
    }
    notification = topic_notification(bundle, BASE)
    assert notification is not None
    assert notification.kind == "event-notification" and notification.subscription == "Subscription/a9c3784c"
    assert notification.hints == [Hint("a-432.qr-1")]
    assert notification.events == 5 and notification.ignored == ["Patient", "identifier"]
    assert notification.rejected == 1  # a QuestionnaireResponse of another server
    assert notification.skipped == [
        "SubscriptionStatus.notificationEvent[4].focus is a JSON array (1 elements), not a JSON object"
    ]
    # athenahealth counts events per Bundle, so the counter is no gap detector: not read
    assert notification.events_since_start is None
