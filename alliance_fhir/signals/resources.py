"""Signals -> FHIR R4: a DetectedIssue per signal, the plugin as its author Device, optional Tasks.

Why DetectedIssue and not Flag (the long form is in ``docs/signals.md``): a DetectedIssue has
``evidence.detail`` to point at the score Observations, ``severity``, an ``author`` that may be
a Device, and ``identifiedPeriod`` for when it opened and closed; a Flag has none of these and
is shown to everyone who opens the chart, while alliance signals are for the treating clinician.

R4 DetectedIssue has no "resolved" status (R5 adds ``mitigated``), so a signal's lifecycle is
carried three ways that agree: ``status`` ``final`` while active and ``amended`` once resolved,
``identifiedPeriod.end`` set on resolution, and the ``alliance-signal-status`` extension
(``active`` / ``resolved``). A repaired rupture also gets a ``mitigation`` entry. The identifier
is the signal's deterministic key, so an update lands on the same resource.

Everything here is a pure function of the signals: no clock, no server. ``references``
(:class:`~alliance_fhir._refs.References`) says how the client, the therapist and the episode are
named: as the scores name them on one server, absolute on the source when the results are stored
beside it. The evidence names our Observations, which are where the DetectedIssue is: relative.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .._ids import (
    DEVICE_IDENTIFIER_SYSTEM,
    FOCUS_EXTENSION,
    PROJECT_BASE,
    PROJECT_CODESYSTEM,
    SIGNAL_IDENTIFIER_SYSTEM,
    SIGNAL_STATUS_EXTENSION,
    TASK_IDENTIFIER_SYSTEM,
)
from .._refs import ONE_SERVER, References
from .._security import NO_LABELS, SecurityLabels, with_labels
from .._version import installed_version
from .prompts import PromptSet
from .rules import RUPTURE, SIGNAL_KINDS, Signal
from .situations import ConcernLevel, Situation, number
from .trajectory import ScorePoint

__all__ = [
    "DEVICE_ID",
    "OPEN_TASK_STATUSES",
    "detected_issue",
    "device_reference",
    "follow_up_task",
    "plugin_device",
    "signal_bundle",
    "signal_resources",
    "task_description",
    "task_follow_ups",
    "withdrawn_issues",
]

OPEN_TASK_STATUSES = frozenset({"draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold"})
"""Task statuses in which the work is not yet done, refused or cancelled: a Task we may still touch."""

DEVICE_ID = "alliance-fhir"
_BUNDLE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, f"{PROJECT_BASE}/bundle-entry")
_REPAIR = {"system": PROJECT_CODESYSTEM, "code": "alliance-repair", "display": "Alliance repaired"}
_FOLLOW_UP = {"system": PROJECT_CODESYSTEM, "code": "alliance-follow-up", "display": "Follow up an alliance signal"}
_ENGINE = {"system": PROJECT_CODESYSTEM, "code": "signal-engine", "display": "Alliance signal engine"}


def plugin_device(software_version: str | None = None) -> dict[str, Any]:
    """The Device that authors every DetectedIssue: alliance-fhir itself, at a fixed id.

    Same version -> same resource, so writing it (``PUT Device/alliance-fhir``) is idempotent.
    """
    return {
        "resourceType": "Device",
        "id": DEVICE_ID,
        "identifier": [{"system": DEVICE_IDENTIFIER_SYSTEM, "value": DEVICE_ID}],
        "status": "active",
        "manufacturer": "alliance-fhir project",
        "deviceName": [{"name": "alliance-fhir", "type": "user-friendly-name"}],
        "type": {"coding": [_ENGINE], "text": _ENGINE["display"]},
        "version": [{"value": software_version or installed_version()}],
        "note": [
            {
                "text": "Software that scores psychotherapy alliance measures and detects alliance signals from the scores."
            }
        ],
    }


def device_reference() -> dict[str, Any]:
    """Reference to :func:`plugin_device`: literal id plus identifier, so it resolves either way."""
    return {
        "reference": f"Device/{DEVICE_ID}",
        "identifier": {"system": DEVICE_IDENTIFIER_SYSTEM, "value": DEVICE_ID},
        "display": "alliance-fhir",
    }


def detected_issue(
    signal: Signal,
    *,
    level: ConcernLevel | None = None,
    security: SecurityLabels = NO_LABELS,
    references: References = ONE_SERVER,
) -> dict[str, Any]:
    """The DetectedIssue (R4 JSON) for one signal; the same signal always gives the same resource.

    ``level``: the level of concern of the signal's situation (:mod:`.situations`), its
    ``severity``; without it, the severity configured on the rule. ``security``: ``meta.security``
    labels to carry (none by default: no ``meta`` at all). ``references``: how the patient, the
    therapist (focus extension) and the episode (``implicated``) name the source's resources.
    """
    name = references.text
    concept = _kind_concept(signal.kind)
    period: dict[str, str] = {"start": signal.opened_at.isoformat()}
    if signal.resolved_at is not None:
        period["end"] = signal.resolved_at.isoformat()
    extensions: list[dict[str, Any]] = [{"url": SIGNAL_STATUS_EXTENSION, "valueCode": signal.status}]
    if signal.focus:
        extensions.insert(0, {"url": FOCUS_EXTENSION, "valueReference": {"reference": name(signal.focus)}})
    issue: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "extension": extensions,
        "identifier": [{"system": SIGNAL_IDENTIFIER_SYSTEM, "value": signal.key}],
        "status": "final" if signal.status == "active" else "amended",
        "code": concept,
        "severity": level or signal.severity,
        "patient": {"reference": name(signal.subject)},
        "identifiedPeriod": period,
        "author": device_reference(),
        "evidence": [{"code": [concept], "detail": [p.observation.reference() for p in signal.evidence]}],
        "detail": signal.detail,
    }
    if signal.episode:
        issue["implicated"] = [{"reference": name(signal.episode)}]
    if signal.kind == RUPTURE and signal.resolved_by is not None:
        action = {"coding": [_REPAIR], "text": "Score back to at least the pre-rupture level"}
        issue["mitigation"] = [{"action": action, "date": signal.resolved_by.time.isoformat()}]
    return with_labels(issue, security)


def follow_up_task(
    situation: Situation,
    *,
    prompts: PromptSet | None = None,
    security: SecurityLabels = NO_LABELS,
    references: References = ONE_SERVER,
) -> dict[str, Any] | None:
    """One Task per open situation, asking the treating clinician to follow it up; None otherwise.

    Its description is what the card says: the summary, the part of the alliance that fell most,
    and what to ask (the prompt set's, with its source). ``priority`` follows the level of
    concern (high: ``urgent``; moderate: ``routine``). It names the client, so it carries the same
    ``security`` labels as the DetectedIssues. Write it with conditional create only
    (``If-None-Exist`` on its identifier) and never update it after: the Task belongs to the
    clinician, whose status must not be overwritten by the next run. ``references``: how ``for``
    (the client) and ``owner`` (the therapist) name the source's resources.
    """
    if situation.kind != "concern" or situation.status != "active":
        return None
    leading = situation.leading
    task: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [{"system": TASK_IDENTIFIER_SYSTEM, "value": situation.key}],
        "status": "requested",
        "intent": "proposal",
        "priority": "urgent" if situation.level == "high" else "routine",
        "code": {"coding": [_FOLLOW_UP], "text": _FOLLOW_UP["display"]},
        "description": task_description(situation, prompts),
        "focus": _issue_reference(leading),
        "for": {"reference": references.text(situation.subject)},
        "authoredOn": situation.opened.time.isoformat(),
        "requester": device_reference(),
        "reasonReference": _issue_reference(leading),
    }
    if situation.focus:
        task["owner"] = {"reference": references.text(situation.focus)}
    return with_labels(task, security)


def task_description(situation: Situation, prompts: PromptSet | None = None) -> str:
    """ "Follow up the alliance: <summary> Part that fell most: ... What to ask: ..." in plain text."""
    parts = [f"Follow up the alliance: {situation.summary}"]
    part = situation.part
    if part is not None and part.change is not None and part.change < 0:
        parts.append(f"Part that fell most: {part.words}, down {number(-part.change)}.")
    elif part is not None:
        parts.append(f"Part rated lowest: {part.words}.")
    fact = situation.facts[0] if situation.facts else None
    prompt = prompts.situation(fact) if prompts is not None and fact else None
    if prompt is not None:
        parts.append(f"What to ask: {prompt.text} (Source: {prompt.source}.)")
    return " ".join(parts)


def signal_resources(
    signals: Iterable[Signal],
    *,
    situations: Sequence[Situation] = (),
    tasks: bool = False,
    prompts: PromptSet | None = None,
    software_version: str | None = None,
    security: SecurityLabels = NO_LABELS,
    references: References = ONE_SERVER,
) -> list[dict[str, Any]]:
    """The Device first, then each signal's DetectedIssue, then (``tasks``) one Task per open situation.

    ``situations`` (:func:`~.situations.situation_history` of the same signals) give each
    DetectedIssue its situation's level of concern and make the Tasks; without them the issues
    carry the rules' configured severity and no Task is made. ``security`` labels the
    DetectedIssues and Tasks (they are about the client); the Device is not. ``references``: how
    they name the source's resources (:func:`detected_issue`).
    """
    levels = {signal.key: situation.level for situation in situations for signal in situation.signals}
    out = [plugin_device(software_version)]
    for signal in signals:
        out.append(detected_issue(signal, level=levels.get(signal.key), security=security, references=references))
    for situation in situations if tasks else ():
        task = follow_up_task(situation, prompts=prompts, security=security, references=references)
        if task is not None:
            out.append(task)
    return out


def signal_bundle(
    signals: Iterable[Signal],
    *,
    situations: Sequence[Situation] = (),
    tasks: bool = False,
    prompts: PromptSet | None = None,
    software_version: str | None = None,
    security: SecurityLabels = NO_LABELS,
    references: References = ONE_SERVER,
) -> dict[str, Any]:
    """A ``collection`` Bundle of :func:`signal_resources`, with fullUrls derived from identifiers."""
    resources = signal_resources(
        signals,
        situations=situations,
        tasks=tasks,
        prompts=prompts,
        software_version=software_version,
        security=security,
        references=references,
    )
    entries = [{"fullUrl": f"urn:uuid:{_entry_uuid(r)}", "resource": r} for r in resources]
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def withdrawn_issues(existing: Iterable[dict[str, Any]], current: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Earlier DetectedIssues of ours that the current run no longer produces, marked entered-in-error.

    That happens when the scores they came from were amended or withdrawn. ``existing`` is
    what a server holds (with ``id``/``meta``, which are kept so the update lands on them).
    """
    produced = {_signal_id(r) for r in current}
    out = []
    for issue in existing:
        key = _signal_id(issue)
        if key is None or key in produced or issue.get("status") == "entered-in-error":
            continue
        updated = {**issue, "status": "entered-in-error"}
        others = [e for e in issue.get("extension") or [] if e.get("url") != SIGNAL_STATUS_EXTENSION]
        updated["extension"] = others + [{"url": SIGNAL_STATUS_EXTENSION, "valueCode": "withdrawn"}]
        out.append(updated)
    return out


def task_follow_ups(
    tasks: Mapping[str, dict[str, Any]],
    situations: Iterable[Situation],
    withdrawn: Iterable[dict[str, Any]],
    signals: Iterable[Signal] = (),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Tasks that follow their situation: (cancelled, noted), as updated copies ready to PUT by id.

    ``tasks`` are our existing follow-up Tasks by identifier value (as read from the server, with
    ``id``/``meta``): one per situation, or one per signal for Tasks written before situations
    (their identifier is the signal's key; ``signals`` lets them follow their signal as before).
    A Task whose DetectedIssue (its ``focus``) was **withdrawn** (the scores were amended or
    entered in error) is ``cancelled`` with a reason: there is nothing left to follow up. A Task
    whose situation (or signal) was **resolved** gets one note saying so and is otherwise left as it
    is: the clinician may still want the conversation, so closing it is theirs. Tasks that are
    already done, refused or cancelled are never touched; a second run changes nothing.
    """
    gone = {_signal_id(issue) for issue in withdrawn}
    cancelled: list[dict[str, Any]] = []
    for task in tasks.values():
        if task.get("status") in OPEN_TASK_STATUSES and _focus_key(task) in gone:
            reason = "The alliance signal was withdrawn: the scores it came from were amended or entered in error."
            cancelled.append(
                {
                    **task,
                    "status": "cancelled",
                    "statusReason": {"text": reason},
                    "note": [*_notes(task), {"authorReference": device_reference(), "text": reason}],
                }
            )
    resolved: dict[str, ScorePoint] = {}
    for signal in signals:
        if signal.status == "resolved" and signal.resolved_by is not None:
            resolved[signal.key] = signal.resolved_by
    for situation in situations:
        if situation.status == "resolved" and situation.resolved_by is not None:
            resolved[situation.key] = situation.resolved_by
    cancelled_ids = {t.get("id") for t in cancelled}
    noted: list[dict[str, Any]] = []
    for key, task in tasks.items():
        point = resolved.get(key)
        if point is None or task.get("id") in cancelled_ids or task.get("status") not in OPEN_TASK_STATUSES:
            continue
        text = (
            f"The alliance concern was resolved by the score of session {point.session_number} "
            f"({point.time.date().isoformat()}). This Task is left open for the clinician to close."
        )
        if any(isinstance(n, dict) and n.get("text") == text for n in _notes(task)):
            continue
        note = {"authorReference": device_reference(), "time": point.time.isoformat(), "text": text}
        noted.append({**task, "note": [*_notes(task), note]})
    return cancelled, noted


def _focus_key(task: dict[str, Any]) -> str | None:
    """The signal key of the DetectedIssue a Task follows (its ``focus`` identifier)."""
    focus = task.get("focus")
    ident = focus.get("identifier") if isinstance(focus, dict) else None
    if isinstance(ident, dict) and ident.get("system") == SIGNAL_IDENTIFIER_SYSTEM:
        return str(ident.get("value"))
    return None


def _notes(task: dict[str, Any]) -> list[Any]:
    notes = task.get("note")
    return list(notes) if isinstance(notes, list) else []


def _signal_id(resource: dict[str, Any]) -> str | None:
    """The signal key of one of our DetectedIssues or Tasks (their identifiers share the key)."""
    for ident in resource.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("system") in (SIGNAL_IDENTIFIER_SYSTEM, TASK_IDENTIFIER_SYSTEM):
            return str(ident.get("value"))
    return None


def _issue_reference(signal: Signal) -> dict[str, Any]:
    return {"type": "DetectedIssue", "identifier": {"system": SIGNAL_IDENTIFIER_SYSTEM, "value": signal.key}}


def _kind_concept(kind: str) -> dict[str, Any]:
    return {
        "coding": [{"system": PROJECT_CODESYSTEM, "code": kind, "display": SIGNAL_KINDS[kind]}],
        "text": SIGNAL_KINDS[kind],
    }


def _entry_uuid(resource: dict[str, Any]) -> str:
    ident = resource["identifier"][0]
    return str(uuid.uuid5(_BUNDLE_NAMESPACE, f"{resource['resourceType']}|{ident['system']}|{ident['value']}"))
