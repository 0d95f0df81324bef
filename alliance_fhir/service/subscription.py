"""``serve``'s one Subscription on the FHIR server: create, update, find again, remove.

R4 Subscriptions have no identifier, so ours is found again by a tag (``SUBSCRIPTION_TAG``).
Its criteria name our Questionnaires' urls (plain canonicals match every version), and the vendor
Questionnaires a form map claims (as ``sync`` searches them), and never
``status``: HAPI 8.8 does not deliver an update *out of* a status criteria (a response turned
``entered-in-error``), so filtering on status would silently lose retractions. The webhook
secret travels in ``channel.header``.

Two channels:
- ``rest-hook`` (classic R4): HAPI PUTs the whole response to ``{endpoint}/QuestionnaireResponse/{id}``;
- ``topic`` (R5 Backport IG on R4): our SubscriptionTopic, an R4 ``Basic``, triggers on
  QuestionnaireResponse create/update; HAPI POSTs an ``id-only`` ``history`` Bundle to the endpoint.
  On HAPI 8.8 this needs the server's ``SubscriptionTopicConfig`` and a topic that names the
  resource type plainly (``QuestionnaireResponse``, not its StructureDefinition canonical).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import SecretStr

from .._ids import SUBSCRIPTION_TAG, SUBSCRIPTION_TOPIC_URL
from ..errors import FhirTransportError, NotFound
from ..fhirclient.client import FhirClient, search_token
from ..instruments.catalog import Instrument

__all__ = [
    "Channel",
    "SubscriptionResult",
    "ensure_subscription",
    "ensure_topic",
    "remove_subscriptions",
    "subscription_resource",
    "topic_resource",
    "wait_active",
]

Channel = Literal["rest-hook", "topic"]
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
_R5 = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic"
_R4B = "http://hl7.org/fhir/4.3/StructureDefinition/extension-SubscriptionTopic"
_TOPIC_CODE = {"system": "http://hl7.org/fhir/fhir-types", "code": "SubscriptionTopic"}
_REASON = "alliance-fhir serve: score alliance QuestionnaireResponses and update signals as they are written"


@dataclass(frozen=True, slots=True)
class SubscriptionResult:
    """What ``ensure_subscription`` did."""

    action: str  # created | updated | unchanged
    subscription_id: str
    removed: int = 0  # stale duplicates of ours deleted


def criteria(instruments: Iterable[Instrument], vendor: Iterable[str] = ()) -> str:
    """``QuestionnaireResponse?questionnaire=<url>,<url>...``: our Questionnaires (and their client-facing
    forms), every version, every status; then ``vendor``, the vendor Questionnaires a form map claims
    (:meth:`.FormMaps.search_values`), so a response to the EHR's own form is delivered too."""
    urls = dict.fromkeys([*(url for inst in instruments for url in inst.response_urls), *vendor])
    return "QuestionnaireResponse?questionnaire=" + ",".join(urls)


def subscription_resource(
    instruments: Iterable[Instrument],
    endpoint: str,
    secret: SecretStr,
    channel: Channel,
    vendor: Iterable[str] = (),
) -> dict[str, Any]:
    """Our Subscription (status ``requested``: the server activates it)."""
    header = [f"Authorization: Bearer {secret.get_secret_value()}"]
    wanted = criteria(instruments, vendor)
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "meta": {"tag": [SUBSCRIPTION_TAG]},
        "status": "requested",
        "reason": _REASON,
    }
    if channel == "rest-hook":
        resource["criteria"] = wanted
        resource["channel"] = {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "header": header,
        }
        return resource
    resource["meta"]["profile"] = [f"{BACKPORT}/backport-subscription"]
    resource["criteria"] = SUBSCRIPTION_TOPIC_URL
    resource["_criteria"] = {"extension": [{"url": f"{BACKPORT}/backport-filter-criteria", "valueString": wanted}]}
    resource["channel"] = {
        "type": "rest-hook",
        "endpoint": endpoint,
        "payload": "application/fhir+json",
        "header": header,
        "_payload": {"extension": [{"url": f"{BACKPORT}/backport-payload-content", "valueCode": "id-only"}]},
    }
    return resource


def topic_resource() -> dict[str, Any]:
    """Our SubscriptionTopic in R4 form (a ``Basic`` carrying the R5 elements as extensions)."""
    trigger = [
        {"url": "description", "valueMarkdown": "A QuestionnaireResponse is created or updated"},
        {
            "url": "resource",
            "valueUri": "QuestionnaireResponse",
        },  # plain type: HAPI 8.8 never fires on the canonical form
        {"url": "supportedInteraction", "valueCode": "create"},
        {"url": "supportedInteraction", "valueCode": "update"},
    ]
    filter_by = [
        {"url": "description", "valueMarkdown": "Filter by Questionnaire"},
        {"url": "resource", "valueUri": "QuestionnaireResponse"},
        {"url": "filterParameter", "valueString": "questionnaire"},
    ]
    return {
        "resourceType": "Basic",
        "meta": {"tag": [SUBSCRIPTION_TAG]},
        "code": {"coding": [_TOPIC_CODE]},
        "extension": [
            {"url": f"{_R5}.url", "valueUri": SUBSCRIPTION_TOPIC_URL},
            {"url": f"{_R5}.version", "valueString": "1"},
            {"url": f"{_R5}.name", "valueString": "QuestionnaireResponseWritten"},
            {"url": f"{_R5}.title", "valueString": "alliance-fhir: a QuestionnaireResponse was written"},
            {"url": f"{_R5}.status", "valueCode": "active"},
            {"url": f"{_R4B}.resourceTrigger", "extension": trigger},
            {"url": f"{_R4B}.canFilterBy", "extension": filter_by},
        ],
    }


def ensure_subscription(
    client: FhirClient,
    instruments: Iterable[Instrument],
    endpoint: str,
    secret: SecretStr,
    channel: Channel = "rest-hook",
    vendor: Iterable[str] = (),
) -> SubscriptionResult:
    """Create ours, or bring it up to date; delete any other Subscription carrying our tag.

    ``vendor``: the vendor Questionnaires a form map claims, listed in the criteria after ours.

    An unchanged, active Subscription is left alone (an update makes HAPI re-activate it, a
    window in which writes are not delivered).

    Raises:
        FhirServerError, FhirTransportError: the server refused or could not be reached.
    """
    wanted = subscription_resource(list(instruments), endpoint, secret, channel, list(vendor))
    if channel == "topic":
        ensure_topic(client)
    ours = _ours(client, "Subscription")
    current, stale = (ours[0], ours[1:]) if ours else (None, [])
    for resource in stale:
        client.request("DELETE", f"Subscription/{resource['id']}")
    if current is None:
        return SubscriptionResult("created", _create(client, wanted), len(stale))
    if current.get("criteria") != wanted["criteria"] and SUBSCRIPTION_TOPIC_URL in (
        current.get("criteria"),
        wanted["criteria"],
    ):
        # switching between rest-hook and topic: HAPI 8.8 keeps the old kind of delivery on an update; replace it
        client.request("DELETE", f"Subscription/{current['id']}")
        created = _create(client, wanted)
        return SubscriptionResult("created", created, len(stale) + 1)
    if _same(current, wanted) and current.get("status") in ("active", "requested"):
        return SubscriptionResult("unchanged", str(current["id"]), len(stale))
    client.request("PUT", f"Subscription/{current['id']}", json={**wanted, "id": current["id"]})
    return SubscriptionResult("updated", str(current["id"]), len(stale))


def remove_subscriptions(client: FhirClient) -> int:
    """Delete every Subscription (and our topic) carrying our tag; how many Subscriptions went."""
    subscriptions = _ours(client, "Subscription")
    for resource in subscriptions:
        client.request("DELETE", f"Subscription/{resource['id']}")
    for topic in _ours(client, "Basic"):
        client.request("DELETE", f"Basic/{topic['id']}")
    return len(subscriptions)


def wait_active(client: FhirClient, subscription_id: str, timeout: float = 30.0) -> str:
    """Poll (bounded) until the server has activated the Subscription; its last status."""
    deadline, status = time.monotonic() + timeout, ""
    while True:
        try:
            status = str(client.read("Subscription", subscription_id).get("status", ""))
        except NotFound:
            status = "missing"
        if status in ("active", "error", "off") or time.monotonic() >= deadline:
            return status
        time.sleep(0.25)


def _create(client: FhirClient, subscription: dict[str, Any]) -> str:
    created = client.request("POST", "Subscription", json=subscription, idempotent=False).json()
    if not isinstance(created, dict) or created.get("resourceType") != "Subscription" or not created.get("id"):
        raise FhirTransportError("POST", "Subscription", "the answer is not the created Subscription")
    return str(created["id"])


def ensure_topic(client: FhirClient) -> None:
    """Create or update our SubscriptionTopic (HAPI 8.8 registers a new topic within about a minute)."""
    wanted = topic_resource()
    existing = _ours(client, "Basic")
    if existing and _same(existing[0], wanted):
        return
    if existing:
        client.request("PUT", f"Basic/{existing[0]['id']}", json={**wanted, "id": existing[0]["id"]})
    else:
        client.request("POST", "Basic", json=wanted, idempotent=False)


def _ours(client: FhirClient, resource_type: str) -> list[dict[str, Any]]:
    return list(client.search(resource_type, {"_tag": search_token(SUBSCRIPTION_TAG), "_count": "50"}))


def _same(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    keys = ("criteria", "_criteria", "channel", "extension", "code", "reason")
    return all(current.get(k) == wanted.get(k) for k in keys)
