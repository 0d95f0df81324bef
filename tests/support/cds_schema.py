"""The CDS Hooks 2.0 response shapes as checks (written from the specification's field tables).

Each function returns the list of problems (empty: conforms), so a test can show all of them.
What is checked, per the specification:

- discovery: ``services`` array; each service has string ``hook``, ``id`` (URL-safe) and
  ``description``; optional string ``title`` and ``usageRequirements``; ``prefetch`` an object of
  string templates;
- response: ``cards`` array (required, may be empty); optional ``systemActions`` array;
- card: ``summary`` string, required, under 140 characters; ``indicator`` one of ``info``,
  ``warning``, ``critical``; ``source`` object with a string ``label`` and optional ``url``,
  ``icon`` (URL strings) and ``topic`` (a Coding: strings ``system``, ``code``, ``display``);
  optional ``uuid`` (a UUID string), ``detail`` (string, markdown); ``suggestions`` (array of
  objects with a ``label``), ``selectionBehavior`` (``at-most-one`` or ``any``; required when
  there are suggestions), ``overrideReasons`` (Codings); ``links`` (objects with string
  ``label``, absolute ``url`` and ``type`` ``absolute`` or ``smart``, optional string
  ``appContext`` and boolean ``autoLaunchable``).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

SUMMARY_LIMIT = 140  # the spec: a one-sentence summary of fewer than 140 characters (the issue: at most 140)
_INDICATORS = {"info", "warning", "critical"}
_SELECTION = {"at-most-one", "any"}
_LINK_TYPES = {"absolute", "smart"}
_CARD_FIELDS = {
    "uuid",
    "summary",
    "detail",
    "indicator",
    "source",
    "suggestions",
    "selectionBehavior",
    "overrideReasons",
    "links",
    "extension",
}
_URL = re.compile(r"^https?://[^\s]+$")
_SERVICE_ID = re.compile(r"^[A-Za-z0-9\-._~]+$")


def discovery_problems(document: Any) -> list[str]:
    if not isinstance(document, dict) or not isinstance(document.get("services"), list):
        return ["discovery: no services array"]
    problems = []
    for index, service in enumerate(document["services"]):
        where = f"services[{index}]"
        if not isinstance(service, dict):
            problems.append(f"{where}: not an object")
            continue
        for name in ("hook", "id", "description"):
            if not isinstance(service.get(name), str) or not service[name]:
                problems.append(f"{where}.{name}: required string")
        if isinstance(service.get("id"), str) and not _SERVICE_ID.match(service["id"]):
            problems.append(f"{where}.id: not URL-safe")
        for name in ("title", "usageRequirements"):
            if name in service and not isinstance(service[name], str):
                problems.append(f"{where}.{name}: must be a string")
        prefetch = service.get("prefetch", {})
        if not isinstance(prefetch, dict) or not all(isinstance(v, str) for v in prefetch.values()):
            problems.append(f"{where}.prefetch: must map keys to template strings")
    return problems


def response_problems(response: Any) -> list[str]:
    if not isinstance(response, dict) or not isinstance(response.get("cards"), list):
        return ["response: no cards array"]
    problems = []
    if "systemActions" in response and not isinstance(response["systemActions"], list):
        problems.append("response.systemActions: must be an array")
    for index, card in enumerate(response["cards"]):
        problems += [f"cards[{index}]{p}" for p in card_problems(card)]
    return problems


def card_problems(card: Any) -> list[str]:
    if not isinstance(card, dict):
        return [": not an object"]
    problems = [f".{name}: not a card field" for name in card if name not in _CARD_FIELDS]
    summary = card.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        problems.append(".summary: required string")
    elif len(summary) > SUMMARY_LIMIT:
        problems.append(f".summary: {len(summary)} characters, over {SUMMARY_LIMIT}")
    if card.get("indicator") not in _INDICATORS:
        problems.append(".indicator: must be info, warning or critical")
    problems += _source_problems(card.get("source"))
    if "uuid" in card:
        try:
            uuid.UUID(str(card["uuid"]))
        except ValueError:
            problems.append(".uuid: not a UUID")
    if "detail" in card and not isinstance(card["detail"], str):
        problems.append(".detail: must be a string (markdown)")
    suggestions = card.get("suggestions")
    if suggestions is not None:
        if not isinstance(suggestions, list) or not all(
            isinstance(s, dict) and isinstance(s.get("label"), str) for s in suggestions
        ):
            problems.append(".suggestions: objects with a label")
        if card.get("selectionBehavior") not in _SELECTION:
            problems.append(".selectionBehavior: required with suggestions (at-most-one or any)")
    elif "selectionBehavior" in card and card["selectionBehavior"] not in _SELECTION:
        problems.append(".selectionBehavior: at-most-one or any")
    for index, reason in enumerate(card.get("overrideReasons") or []):
        problems += [f".overrideReasons[{index}]{p}" for p in _coding_problems(reason)]
    for index, link in enumerate(card.get("links") or []):
        problems += [f".links[{index}]{p}" for p in _link_problems(link)]
    return problems


def _source_problems(source: Any) -> list[str]:
    if not isinstance(source, dict):
        return [".source: required object"]
    problems = []
    if not isinstance(source.get("label"), str) or not source["label"]:
        problems.append(".source.label: required string")
    for name in ("url", "icon"):
        if name in source and not (isinstance(source[name], str) and _URL.match(source[name])):
            problems.append(f".source.{name}: must be an absolute URL")
    if "topic" in source:
        problems += [f".source.topic{p}" for p in _coding_problems(source["topic"])]
    return problems


def _coding_problems(coding: Any) -> list[str]:
    if not isinstance(coding, dict):
        return [": not a Coding"]
    problems = [
        f".{k}: must be a string"
        for k in ("system", "code", "display")
        if k in coding and not isinstance(coding[k], str)
    ]
    if not coding.get("code"):
        problems.append(".code: required")
    return problems


def _link_problems(link: Any) -> list[str]:
    if not isinstance(link, dict):
        return [": not an object"]
    problems = []
    if not isinstance(link.get("label"), str) or not link["label"]:
        problems.append(".label: required string")
    if not isinstance(link.get("url"), str) or not _URL.match(link["url"]):
        problems.append(".url: required absolute URL")
    if link.get("type") not in _LINK_TYPES:
        problems.append(".type: absolute or smart")
    if "appContext" in link and not isinstance(link["appContext"], str):
        problems.append(".appContext: must be a string")
    if "autoLaunchable" in link and not isinstance(link["autoLaunchable"], bool):
        problems.append(".autoLaunchable: must be a boolean")
    return problems
