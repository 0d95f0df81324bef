"""What a notification may tell us: "QuestionnaireResponse X (version V) changed", nothing more.

A notification is a hint, never data. Whatever arrives (a rest-hook PUT with a whole resource,
a Backport ``history`` Bundle with ``fullUrl``s and focus references) is reduced here to
``(response id, version id)`` pairs. An id must match the FHIR id pattern; an absolute
reference is accepted only when its base is the configured server's. Nothing here fetches a
URL: the worker re-reads the response from the configured server with our own credentials.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from .._refs import parse_reference
from .._refs import valid_id as valid_id
from .._text import describe

__all__ = [
    "Hint",
    "MalformedNotification",
    "TopicNotification",
    "hint_from_reference",
    "hint_from_put",
    "topic_notification",
    "valid_id",
]

_T = TypeVar("_T")
_RESOURCE = "QuestionnaireResponse"


@dataclass(frozen=True, slots=True)
class Hint:
    """A response to re-check; ``version_id`` is "" when the notification named none."""

    response_id: str
    version_id: str = ""


@dataclass
class TopicNotification:
    """The parts of a Backport notification Bundle we act on."""

    kind: str  # event-notification | handshake | heartbeat | query-status | query-event | "" (unknown)
    subscription: str = ""
    events_since_start: int | None = None
    hints: list[Hint] = field(default_factory=list)
    rejected: int = 0  # references that were not QuestionnaireResponses of our server
    events: int = 0  # notification events (focus entries) the notification carries
    ignored: list[str] = field(default_factory=list)  # focus of another resource type ("Patient"), or identifier only
    skipped: list[str] = field(default_factory=list)  # one line per malformed event: where, and why (no value)


def hint_from_put(response_id: str, body: object) -> Hint | None:
    """The hint of a rest-hook ``PUT .../QuestionnaireResponse/{id}``; None when the id is not a FHIR id.

    The body's ``meta.versionId`` is taken only when the body is a QuestionnaireResponse with
    the same id: it keys the inbox (two notifications of one version are one entry). A forged
    version can do no harm: the worker scores what the server holds.
    """
    if not valid_id(response_id):
        return None
    version = ""
    if isinstance(body, dict) and body.get("resourceType") == _RESOURCE and body.get("id") == response_id:
        meta = body.get("meta")
        candidate = meta.get("versionId") if isinstance(meta, dict) else None
        version = candidate if isinstance(candidate, str) and valid_id(candidate) else ""
    return Hint(response_id, version)


def hint_from_reference(reference: object, base_url: str) -> Hint | None:
    """``QuestionnaireResponse/{id}[/_history/{v}]``, relative or absolute on ``base_url``; else None."""
    if isinstance(reference, str) and len(reference) > 1024:
        return None
    ref = parse_reference(reference)
    if ref is None or ref.type != _RESOURCE or not ref.on(base_url):
        return None
    return Hint(ref.id, ref.version) if ref.version else Hint(ref.id)


def topic_notification(bundle: object, base_url: str) -> TopicNotification | None:
    """Read a Backport notification (a ``history`` Bundle led by a SubscriptionStatus Parameters).

    Returns None when ``bundle`` is not shaped like one. Hints come from each
    ``notification-event.focus`` and from entries whose ``fullUrl`` names a QuestionnaireResponse
    of our server (the id-only and full-resource content codes); the entries' resources are ignored.

    Raises:
        MalformedNotification: a field we read has the wrong JSON type (the message names it).
    """
    if (
        not isinstance(bundle, dict)
        or bundle.get("resourceType") != "Bundle"
        or not isinstance(bundle.get("entry"), list)
    ):
        return None
    entries = [_object(e, f"entry[{i}]") for i, e in enumerate(bundle["entry"])]
    status = entries[0].get("resource") if entries else None
    if isinstance(status, dict) and status.get("resourceType") == "SubscriptionStatus":
        return _status_notification(status, base_url)
    if not isinstance(status, dict) or status.get("resourceType") != "Parameters":
        return None
    notification = TopicNotification(kind="")
    references: list[object] = []
    for i, parameter in enumerate(_objects(status, "parameter", "SubscriptionStatus.")):
        name, where = _field(parameter, "name", str, f"parameter[{i}]."), f"parameter[{i}]."
        if name == "type":
            notification.kind = _field(parameter, "valueCode", str, where) or ""
        elif name == "subscription":
            notification.subscription = (_reference(parameter, where) or "")[:200]
        elif name == "events-since-subscription-start":
            notification.events_since_start = _integer(parameter.get("valueString", parameter.get("valueInteger64")))
        elif name == "notification-event":
            notification.events += 1
            for j, part in enumerate(_objects(parameter, "part", where)):
                if _field(part, "name", str, f"{where}part[{j}].") == "focus":
                    references.append(_reference(part, f"{where}part[{j}]."))
    references += [_field(e, "fullUrl", str, f"entry[{i}].") for i, e in enumerate(entries) if i and e.get("fullUrl")]
    seen: dict[str, Hint] = {}
    for reference in references:
        hint = hint_from_reference(reference, base_url)
        if hint is None:
            notification.rejected += 1
        elif hint.response_id not in seen or not seen[hint.response_id].version_id:
            seen[hint.response_id] = hint
    notification.hints = list(seen.values())
    return notification


def _status_notification(status: dict[str, Any], base_url: str) -> TopicNotification:
    """An id-only notification led by a ``SubscriptionStatus`` resource (the R4B/R5 shape athenahealth sends).

    athenahealth's Event Subscription Platform sends "R5 Backport"-style Bundles whose first and
    only entry is a SubscriptionStatus with ``type``, ``subscription`` and ``notificationEvent[]``
    (each an ``id``, a ``timestamp`` and a ``focus`` with a relative ``reference`` and/or an
    ``identifier``), id-only: no resource content (https://github.com/athenahealth/aone-fhir-subscriptions#event-payload).
    A QuestionnaireResponse focus becomes a hint; a focus of another type (Patient, Encounter...)
    or one with an identifier only is ignored (counted, a debug line); a malformed event is one
    line in ``skipped`` and the others go on. ``eventsSinceSubscriptionStart`` is not read: in
    athenahealth's platform it counts the events of this Bundle only (same README, "Event
    Payload"), so it cannot show missed notifications.

    Raises:
        MalformedNotification: ``type``, ``subscription`` or ``notificationEvent`` has the wrong JSON type.
    """
    where = "SubscriptionStatus."
    notification = TopicNotification(kind=_field(status, "type", str, where) or "")
    subscription = _field(status, "subscription", dict, where)
    if subscription is not None:
        notification.subscription = (_field(subscription, "reference", str, f"{where}subscription.") or "")[:200]
    seen: dict[str, Hint] = {}
    for i, event in enumerate(_field(status, "notificationEvent", list, where) or []):
        notification.events += 1
        at = f"{where}notificationEvent[{i}]"
        reference = _focus_reference(event, at, notification)
        if reference is None:
            continue
        hint = hint_from_reference(reference, base_url)
        if hint is not None:
            if hint.response_id not in seen or not seen[hint.response_id].version_id:
                seen[hint.response_id] = hint
        elif (ref := parse_reference(reference)) is not None and ref.type != _RESOURCE:
            notification.ignored.append(ref.type)
        else:
            notification.rejected += 1
    notification.hints = list(seen.values())
    return notification


def _focus_reference(event: object, at: str, notification: TopicNotification) -> str | None:
    """The event's ``focus.reference``; None (with a line in ``skipped`` or ``ignored``) when it has none to use."""
    try:
        focus = _field(_object(event, at), "focus", dict, f"{at}.")
        if focus is None:
            notification.skipped.append(f"{at}: no focus")
            return None
        reference = _field(focus, "reference", str, f"{at}.focus.")
    except MalformedNotification as exc:
        notification.skipped.append(str(exc))
        return None
    if reference is None:  # a proprietary identifier only: nothing FHIR to re-read
        notification.ignored.append("identifier")
    return reference


class MalformedNotification(ValueError):
    """A notification field has the wrong JSON type; the message names the field and the type (no value)."""


def _field(container: dict[str, Any], key: str, kind: type[_T], where: str) -> _T | None:
    """The typed accessor for every field read from a notification: absent is None, a wrong type is refused."""
    value = container.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise MalformedNotification(f"{where}{key} is {describe(value)}, not a JSON {_JSON_TYPE[kind]}")
    return value


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedNotification(f"{where} is {describe(value)}, not a JSON object")
    return value


def _objects(container: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    return [_object(v, f"{where}{key}[{i}]") for i, v in enumerate(_field(container, key, list, where) or [])]


def _reference(container: dict[str, Any], where: str) -> str | None:
    """``valueReference.reference`` of a parameter or part (both typed)."""
    reference = _field(container, "valueReference", dict, where)
    return _field(reference, "reference", str, f"{where}valueReference.") if reference is not None else None


_JSON_TYPE: dict[type, str] = {str: "string", dict: "object", list: "array", bool: "boolean", int: "integer"}


def _integer(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) < 19:
        return int(value)
    return None
