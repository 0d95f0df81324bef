"""The client-facing Questionnaire: what a client portal shows, so the client never sees a score.

A client who knows the therapist reads the scores may rate higher, so the form a client fills in
carries the items and their answer options only: no numeric values (``ordinalValue``,
``itemWeight``), no calculated totals or subscales, no SDC extraction rules. It is a Questionnaire
of its own, derived from the instrument's (``derivedFrom`` its ``url|version``), with its own canonical (:attr:`Instrument.client_canonical`): a server that
holds both forms can tell them apart, and the catalog resolves responses to it to the same
instrument, so they score exactly as responses to the full form. Why derived and not the same
``url|version``: ``docs/hiding-results.md``.

Item wording is what the full form carries after text packs (the shipped domain labels, or the
user's own licensed pack): this module removes, it never adds text.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from ..instruments.catalog import CALCULATED, CLIENT_SUFFIX, ORDINAL_VALUE, Instrument

__all__ = ["HIDDEN_EXTENSIONS", "client_questionnaire"]

_ITEM_WEIGHT = "http://hl7.org/fhir/StructureDefinition/itemWeight"
_SDC = "http://hl7.org/fhir/uv/sdc/StructureDefinition/"
HIDDEN_EXTENSIONS = frozenset({ORDINAL_VALUE, _ITEM_WEIGHT, CALCULATED})
"""Extensions that carry or compute a score; with every SDC extraction extension, never in the client's form."""


def client_questionnaire(instrument: Instrument, questionnaire: dict[str, Any] | None = None) -> dict[str, Any]:
    """The client-facing copy of ``questionnaire`` (the instrument's own, text packs applied, by default).

    Score items (the read-only totals and subscales, and everything under them) are left out;
    every other item keeps its linkId, type, text and answer codes, so a response to this form
    is a valid response to the full one.
    """
    source = questionnaire if questionnaire is not None else instrument.questionnaire
    form = copy.deepcopy(source)
    form["id"] = f"{source.get('id', instrument.id)}{CLIENT_SUFFIX}"
    form["url"] = instrument.client_url
    form["version"] = instrument.version
    if isinstance(form.get("name"), str):
        form["name"] = f"{form['name']}_ForClient"
    # The relation is "complies with" (every response to this form is a valid response to the full
    # one): the Extensions pack's questionnaire-derivationType says so in code, but HAPI 8.8's
    # validator refuses its code system, so the description says it in words.
    form["description"] = (
        f"The form of {source.get('title') or instrument.id} as a client portal shows it: its items and answer "
        "options without numeric values, scores or extraction rules. It complies with the form it is derived "
        "from: a response to it is a valid response to that form and is scored against it."
    )
    form["derivedFrom"] = [instrument.canonical]
    _strip(form)
    form["item"] = _client_items(form.get("item") or [], instrument.score_link_ids)
    return form


def _client_items(items: Iterable[dict[str, Any]], score_links: frozenset[str]) -> list[dict[str, Any]]:
    kept = []
    for item in items:
        if item.get("linkId") in score_links:
            continue
        _strip(item)
        for option in item.get("answerOption") or []:
            _strip(option)
            if isinstance(option.get("valueCoding"), dict):
                _strip(option["valueCoding"])
        if item.get("item"):
            item["item"] = _client_items(item["item"], score_links)
            if not item["item"]:
                del item["item"]
        kept.append(item)
    return kept


def _strip(element: dict[str, Any]) -> None:
    """Drop the score and extraction extensions of one element (an empty list goes too)."""
    extensions = element.get("extension")
    if not isinstance(extensions, list):
        return
    kept = [e for e in extensions if not _hidden(e)]
    if kept:
        element["extension"] = kept
    else:
        del element["extension"]


def _hidden(extension: Any) -> bool:
    url = extension.get("url", "") if isinstance(extension, dict) else ""
    # extraction: observationExtract(Entry), observation-extract-category, template/definitionExtract, ...
    return url in HIDDEN_EXTENSIONS or (url.startswith(_SDC) and ("xtract" in url or "observationLinkPeriod" in url))
