"""Publishable content: Questionnaires (with text packs applied), CodeSystems, their files.

One code path produces what ``questionnaires export`` writes, what sync publishes and what the
FHIR package (:mod:`.package`) carries, so the files a vendor loads are the resources we score
against. What a package adds beside them (ValueSets, ObservationDefinitions) is in
:mod:`.definitions`; the check of the Questionnaires' SDC extraction rules in :mod:`.extraction`.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import TextPackError, summarise_validation
from ..instruments.catalog import Catalog, Instrument, walk_items
from ..instruments.models import TextPack
from .client import client_questionnaire

__all__ = [
    "TRANSLATION",
    "apply_text_packs",
    "content_resources",
    "load_text_pack",
    "resource_filenames",
    "resource_json",
    "text_pack_template",
    "write_content",
]

TRANSLATION = "http://hl7.org/fhir/StructureDefinition/translation"
TEMPLATE_SOURCE = "State where this wording comes from and the licence under which you use it."
"""The placeholder ``questionnaires template`` writes; a pack still carrying it is refused as unfilled."""
_UNTEXTED_TYPES = {"group", "display"}


def load_text_pack(path: Path) -> TextPack:
    """Read and validate a text pack file.

    Raises:
        TextPackError: unreadable JSON or not a text pack.
    """
    try:
        pack = TextPack.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TextPackError(f"{path}: not readable JSON ({exc})") from exc
    except ValidationError as exc:
        raise TextPackError(f"{path}: not a text pack: {summarise_validation(exc)}") from exc
    if pack.source is None or not pack.source.strip() or pack.source == TEMPLATE_SOURCE:
        raise TextPackError(
            f"{path}: an unfilled template: say in 'source' where the wording comes from and under which "
            "licence you use it (and replace the texts with that wording)"
        )
    return pack


def apply_text_packs(instrument: Instrument, packs: Sequence[TextPack]) -> dict[str, Any]:
    """A renderable copy of the instrument's Questionnaire with the packs' wording.

    The first pack replaces the texts and sets ``Questionnaire.language``; each further pack
    adds its language through the FHIR ``translation`` extension.

    Raises:
        TextPackError: a pack misses a question's linkId or names one that does not exist,
            or two packs share a language.
    """
    questionnaire = copy.deepcopy(instrument.questionnaire)
    languages: set[str] = set()
    for position, pack in enumerate(packs):
        if pack.language in languages:
            raise TextPackError(f"{instrument.canonical}: two text packs for language '{pack.language}'")
        languages.add(pack.language)
        _check_coverage(instrument, pack)
        _apply(questionnaire, pack, primary=position == 0)
    return questionnaire


def text_pack_template(instrument: Instrument, language: str) -> dict[str, Any]:
    """A text pack skeleton listing every linkId to fill in (pre-filled with our domain texts)."""
    items = [i for i in walk_items(instrument.questionnaire["item"]) if i.get("type") not in _UNTEXTED_TYPES]
    answers = {
        option["valueCoding"]["code"]: option["valueCoding"].get("display", "")
        for item in items
        for option in item.get("answerOption", [])
        if "valueCoding" in option
    }
    return {
        "language": language,
        "instrument": instrument.canonical,
        "title": instrument.questionnaire.get("title", ""),
        "source": TEMPLATE_SOURCE,
        "texts": {i["linkId"]: i.get("text", "") for i in items},
        "answers": answers,
    }


def _check_coverage(instrument: Instrument, pack: TextPack) -> None:
    items = list(walk_items(instrument.questionnaire["item"]))
    questions = [i["linkId"] for i in items if i.get("type") not in _UNTEXTED_TYPES and not i.get("readOnly")]
    shipped = {i["linkId"]: i.get("text") for i in items}
    if questions and all(pack.texts.get(link) == shipped.get(link) for link in questions):
        raise TextPackError(
            f"text pack '{pack.language}' for {instrument.canonical} is an unfilled template: its texts are "
            "still the shipped domain labels; put the licensed or translated wording in"
        )
    missing = [link for link in questions if link not in pack.texts]
    invented = [link for link in pack.texts if link not in instrument.link_ids]
    if missing or invented:
        parts = []
        if missing:
            parts.append(f"misses linkIds {', '.join(missing)}")
        if invented:
            parts.append(f"names linkIds that do not exist: {', '.join(invented)}")
        raise TextPackError(f"text pack '{pack.language}' for {instrument.canonical} {' and '.join(parts)}")
    codes = {code for spec in instrument.items.values() for (_, code) in spec.options}
    unknown = [c for c in pack.answers if c not in codes]
    if unknown:
        raise TextPackError(
            f"text pack '{pack.language}' for {instrument.canonical} names unknown answer codes: {', '.join(unknown)}"
        )


def _apply(questionnaire: dict[str, Any], pack: TextPack, *, primary: bool) -> None:
    if primary:
        questionnaire["language"] = pack.language
    if pack.title:
        _set_text(questionnaire, "title", pack.title, pack.language, primary)
    for item in walk_items(questionnaire["item"]):
        if item["linkId"] in pack.texts:
            _set_text(item, "text", pack.texts[item["linkId"]], pack.language, primary)
        for option in item.get("answerOption", []):
            coding = option.get("valueCoding", {})
            if coding.get("code") in pack.answers:
                _set_text(coding, "display", pack.answers[coding["code"]], pack.language, primary)


def _set_text(element: dict[str, Any], key: str, text: str, language: str, primary: bool) -> None:
    if primary:
        element[key] = text
        return
    translation = {
        "url": TRANSLATION,
        "extension": [{"url": "lang", "valueCode": language}, {"url": "content", "valueString": text}],
    }
    element.setdefault(f"_{key}", {}).setdefault("extension", []).append(translation)


def content_resources(
    catalog: Catalog, packs: Iterable[TextPack] = (), *, for_client: bool = False
) -> list[dict[str, Any]]:
    """Every Questionnaire (packs applied) and every CodeSystem in the catalog.

    ``for_client``: the client-facing Questionnaires instead (:mod:`.client`: no values, scores
    or extraction rules; derived from the full ones), with the same packs' wording.

    Raises:
        TextPackError: a pack names an instrument that is not loaded, or does not fit it.
    """
    by_instrument: dict[str, list[TextPack]] = {}
    for pack in packs:
        if pack.instrument not in catalog.instruments:
            raise TextPackError(
                f"text pack '{pack.language}' names {pack.instrument}, which is not a loaded instrument"
            )
        by_instrument.setdefault(pack.instrument, []).append(pack)
    resources = [apply_text_packs(inst, by_instrument.get(inst.canonical, [])) for inst in catalog]
    if for_client:
        resources = [client_questionnaire(inst, form) for inst, form in zip(catalog, resources, strict=True)]
    return resources + [copy.deepcopy(cs) for cs in catalog.codesystems]


def write_content(resources: list[dict[str, Any]], out_dir: Path, *, bundle: bool) -> list[Path]:
    """Write one JSON file per resource (``Type-id.json``), plus ``bundle.json`` if asked."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for resource, name in zip(resources, resource_filenames(resources), strict=True):
        path = out_dir / name
        path.write_text(resource_json(resource), encoding="utf-8")
        written.append(path)
    if bundle:
        path = out_dir / "bundle.json"
        entries = [{"fullUrl": _full_url(r), "resource": r} for r in resources]
        doc = {"resourceType": "Bundle", "type": "collection", "entry": entries}
        path.write_text(resource_json(doc), encoding="utf-8")
        written.append(path)
    return written


def resource_json(resource: dict[str, Any]) -> str:
    """The one serialisation of a resource file (export and package): 2-space JSON, UTF-8, final newline."""
    return json.dumps(resource, indent=2, ensure_ascii=False) + "\n"


def resource_filenames(resources: list[dict[str, Any]]) -> list[str]:
    """``Type-id.json`` per resource; a second resource with the same type and id gets ``-version``."""
    names = []
    used: set[str] = set()
    for resource in resources:
        name = f"{resource['resourceType']}-{resource['id']}"
        if name in used:
            name += f"-{resource.get('version', 'x')}"
        used.add(name)
        names.append(f"{name}.json")
    return names


def _full_url(resource: dict[str, Any]) -> str:
    """A stable ``urn:uuid`` per canonical ``url|version`` (two versions never collide)."""
    canonical = f"{resource['url']}|{resource.get('version', '')}"
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, canonical)}"
