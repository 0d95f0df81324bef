"""Publishable content: Questionnaires (with text packs applied), CodeSystems, Bundles.

One code path produces what ``questionnaires export`` writes, what sync publishes and what the
FHIR package (:mod:`package`) carries, so the files a vendor loads are the resources we score
against. Beside them, :func:`definition_resources` derives from the mappings what a package
adds: a ValueSet per coded answer scale and an ObservationDefinition per score.

The shipped Questionnaires carry SDC 4 observation-based extraction on their score items
(``docs/extraction.md``); :func:`extraction_problems` checks that it says what our score
Observations say.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .._ids import DEFINITION_ID_SYSTEM, MEASURE_CATEGORY, PROJECT_BASE, PROJECT_CODESYSTEM, SURVEY_CATEGORY, UCUM
from ..errors import TextPackError
from ..instruments.catalog import Catalog, Instrument, walk_items
from ..instruments.models import InstrumentMapping, ScaleSpec, TextPack

__all__ = [
    "apply_text_packs",
    "content_resources",
    "definition_resources",
    "extraction_problems",
    "if_none_exist_expression",
    "load_text_pack",
    "resource_filenames",
    "resource_json",
    "text_pack_template",
    "write_content",
]

TRANSLATION = "http://hl7.org/fhir/StructureDefinition/translation"
_UNTEXTED_TYPES = {"group", "display"}


def load_text_pack(path: Path) -> TextPack:
    """Read and validate a text pack file.

    Raises:
        TextPackError: unreadable JSON or not a text pack.
    """
    try:
        return TextPack.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TextPackError(f"{path}: not readable JSON ({exc})") from exc
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise TextPackError(f"{path}: not a text pack: {details}") from exc


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
        "source": "State where this wording comes from and the licence under which you use it.",
        "texts": {i["linkId"]: i.get("text", "") for i in items},
        "answers": answers,
    }


def _check_coverage(instrument: Instrument, pack: TextPack) -> None:
    items = list(walk_items(instrument.questionnaire["item"]))
    questions = [i["linkId"] for i in items if i.get("type") not in _UNTEXTED_TYPES and not i.get("readOnly")]
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
        raise TextPackError(f"text pack '{pack.language}' for {instrument.canonical} names unknown answer codes: {', '.join(unknown)}")


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
    translation = {"url": TRANSLATION, "extension": [{"url": "lang", "valueCode": language}, {"url": "content", "valueString": text}]}
    element.setdefault(f"_{key}", {}).setdefault("extension", []).append(translation)


def content_resources(catalog: Catalog, packs: Iterable[TextPack] = ()) -> list[dict[str, Any]]:
    """Every Questionnaire (packs applied) and every CodeSystem in the catalog.

    Raises:
        TextPackError: a pack names an instrument that is not loaded, or does not fit it.
    """
    by_instrument: dict[str, list[TextPack]] = {}
    for pack in packs:
        if pack.instrument not in catalog.instruments:
            raise TextPackError(f"text pack '{pack.language}' names {pack.instrument}, which is not a loaded instrument")
        by_instrument.setdefault(pack.instrument, []).append(pack)
    resources = [apply_text_packs(inst, by_instrument.get(inst.canonical, [])) for inst in catalog]
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


# ---------------------------------------------------------------- definitions (FHIR package)

_SCORE_UNIT = {"system": UCUM, "code": "{score}", "display": "{score}"}


def definition_resources(catalog: Catalog) -> list[dict[str, Any]]:
    """What a FHIR package adds to :func:`content_resources`, derived from the mappings.

    - one ValueSet per instrument with coded answers (its answer anchors, ``compose.include``
      of our CodeSystem's codes, version-specific), ordered by the anchors' values;
    - one R4 ObservationDefinition per score (total and subscales): code, Quantity in UCUM
      ``{score}``, decimal precision, the absolute range and, for each C2 cutoff, the range on
      the unflagged side of it as a ``reference`` interval (R4 has no interval interpretation;
      ``critical`` means values that need immediate action, which a low alliance score is not).
    """
    codesystems = {cs.get("url"): cs for cs in catalog.codesystems}
    resources: list[dict[str, Any]] = []
    for inst in catalog:
        valueset = _answer_valueset(inst, codesystems)
        if valueset is not None:
            resources.append(valueset)
    for inst in catalog:
        resources += [_observation_definition(inst.mapping, scale) for scale in inst.mapping.scales]
    return resources


def _answer_valueset(inst: Instrument, codesystems: dict[Any, dict[str, Any]]) -> dict[str, Any] | None:
    """The instrument's answer anchors as a ValueSet, or None when its items take numbers (VAS)."""
    anchors: dict[tuple[str, str], Any] = {}
    for spec in inst.items.values():
        anchors.update(spec.options)
    if not anchors:
        return None
    displays = {
        (opt["valueCoding"].get("system", ""), opt["valueCoding"]["code"]): opt["valueCoding"].get("display")
        for item in walk_items(inst.questionnaire["item"])
        for opt in item.get("answerOption", [])
        if "valueCoding" in opt
    }
    includes: list[dict[str, Any]] = []
    for system in sorted({s for s, _ in anchors}):
        concepts = []
        for (_, code), _weight in sorted(((k, w) for k, w in anchors.items() if k[0] == system), key=lambda kw: (kw[1], kw[0][1])):
            concept = {"code": code}
            if displays.get((system, code)):
                concept["display"] = displays[(system, code)]
            concepts.append(concept)
        include: dict[str, Any] = {"system": system}
        version = codesystems.get(system, {}).get("version")
        if version:
            include["version"] = version
        include["concept"] = concepts
        includes.append(include)
    m, q = inst.mapping, inst.questionnaire
    scale = m.item_scale
    vid = f"{m.instrument}-answers"
    valueset: dict[str, Any] = {
        "resourceType": "ValueSet",
        "id": vid,
        "url": f"{PROJECT_BASE}/ValueSet/{vid}",
        "version": m.version,
        "name": _pascal(f"{m.name} answers"),
        "title": f"{m.name} answer anchors",
        "status": q.get("status", "active"),
        "experimental": False,
    }
    for key in ("date", "publisher"):
        if q.get(key):
            valueset[key] = q[key]
    description = (
        f"The answer anchors of every {m.name} item ({m.title}, Questionnaire {m.questionnaire}; its copyright "
        f"statement applies), raw values {scale.min:g}-{scale.max:g} in this order; each value is the CodeSystem's itemWeight property."
    )
    if m.verification == "labels-unconfirmed" and m.verification_note:
        description += f" Verification: labels-unconfirmed. {m.verification_note}"
    valueset["description"] = description
    valueset["compose"] = {"include": includes}
    return valueset


def _observation_definition(mapping: InstrumentMapping, scale: ScaleSpec) -> dict[str, Any]:
    did = f"{mapping.instrument}-{scale.id}"
    precision = scale.decimals
    if scale.missing.rule == "prorate":
        precision = max(precision, scale.missing.round_to)
    intervals: list[dict[str, Any]] = [{
        "category": "absolute",
        "range": {"low": _score_quantity(scale.range.min), "high": _score_quantity(scale.range.max)},
        "condition": f"Possible range {scale.range.min:g}-{scale.range.max:g} (higher is better)",
    }]
    for cut in scale.cutoffs:
        if cut.confidence != "C2":
            continue
        interval: dict[str, Any] = {"category": "reference"}
        side = f"at or above {cut.threshold:g}" if cut.operator == "<" else f"above {cut.threshold:g}"
        if cut.operator == "<":  # the unflagged side [threshold, max] is a closed range; for '<=' it is open below
            interval["range"] = {"low": _score_quantity(cut.threshold), "high": _score_quantity(scale.range.max)}
        rule = f"{'<' if cut.operator == '<' else '<='} {cut.threshold:g}"
        interval["condition"] = (
            f"Cutoff '{cut.id}' {cut.threshold:g} [{cut.confidence}]: scores {side} are not flagged; "
            f"a score {rule} is flagged: {cut.label}"
        )
        intervals.append(interval)
    method_text = f"{mapping.name} scoring algorithm {mapping.algorithm_version}: {scale.aggregation} of items {', '.join(scale.items)}"
    if scale.reverse_items:
        method_text += f", items {', '.join(scale.reverse_items)} reverse-scored"
    method_text += f"; missing data: {scale.missing.rule}, min {scale.missing.min_answered} answered ({scale.missing.source})"
    return {
        "resourceType": "ObservationDefinition",
        "id": did,
        "identifier": [{"system": DEFINITION_ID_SYSTEM, "value": f"{mapping.questionnaire}#{scale.id}"}],
        "category": [{"coding": [dict(SURVEY_CATEGORY)]}, {"coding": [dict(MEASURE_CATEGORY[mapping.measures])]}],
        "code": {"coding": [c.model_dump(exclude_none=True) for c in scale.codes], "text": scale.codes[0].display or scale.title},
        "permittedDataType": ["Quantity"],
        "multipleResultsAllowed": False,
        "method": {
            "coding": [{
                "system": PROJECT_CODESYSTEM,
                "version": mapping.algorithm_version,
                "code": f"{mapping.instrument}-scoring",
                "display": f"{mapping.name} scoring algorithm",
            }],
            "text": method_text,
        },
        "preferredReportName": scale.title,
        "quantitativeDetails": {"unit": {"coding": [dict(_SCORE_UNIT)], "text": "{score}"}, "decimalPrecision": precision},
        "qualifiedInterval": intervals,
    }


def _score_quantity(number: float) -> dict[str, Any]:
    value: int | float = int(number) if float(number).is_integer() else number
    return {"value": value, "unit": "{score}", "system": UCUM, "code": "{score}"}


def _pascal(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in "".join(c if c.isalnum() else " " for c in text).split())


# ---------------------------------------------------------------- SDC observation-based extraction

_SDC = "http://hl7.org/fhir/uv/sdc/StructureDefinition"
OBSERVATION_EXTRACT = f"{_SDC}/sdc-questionnaire-observationExtract"
OBSERVATION_EXTRACT_CATEGORY = f"{_SDC}/sdc-questionnaire-observation-extract-category"
OBSERVATION_EXTRACT_ENTRY = f"{_SDC}/sdc-questionnaire-observationExtractEntry"
QUESTIONNAIRE_UNIT = "http://hl7.org/fhir/StructureDefinition/questionnaire-unit"


def extraction_problems(instrument: Instrument) -> list[str]:
    """Where the Questionnaire's SDC observation-based extraction would not give our score Observation.

    Our rule (``docs/extraction.md``): the headline score item has ``observationExtract = true``,
    the categories ``survey`` plus the measure category, the unit ``{score}``, the score's codes
    as ``item.code`` (project code first, then SNOMED where the mapping lists one) and an
    ``observationExtractEntry`` whose ``ifNoneExist`` finds the Observation of the same
    response and score code; each other score item is nested under it with
    ``observationExtract = component``. Returns one sentence per problem (none: consistent).
    """
    mapping = instrument.mapping
    by_link = {item["linkId"]: item for item in walk_items(instrument.questionnaire["item"])}
    total = mapping.total
    problems: list[str] = []
    scored_with_items = [s for s in mapping.scales if s.questionnaire_item]
    if total.questionnaire_item is None:
        return [f"{instrument.canonical}: the total has no score item to extract"] if scored_with_items else []
    head = by_link.get(total.questionnaire_item)
    if head is None:
        return [f"{instrument.canonical}: score item '{total.questionnaire_item}' does not exist"]
    problems += _score_item_problems(head, total, True)
    if _extensions(head, OBSERVATION_EXTRACT_CATEGORY) != [
        {"url": OBSERVATION_EXTRACT_CATEGORY, "valueCodeableConcept": {"coding": [c]}} for c in (SURVEY_CATEGORY, MEASURE_CATEGORY[mapping.measures])
    ]:
        problems.append(f"item '{head['linkId']}': observation-extract-category must be survey and {MEASURE_CATEGORY[mapping.measures]['code']}")
    expected_entry = [{"url": "ifNoneExist", "valueString": if_none_exist_expression(total)}]
    if [e.get("extension") for e in _extensions(head, OBSERVATION_EXTRACT_ENTRY)] != [expected_entry]:
        problems.append(f"item '{head['linkId']}': observationExtractEntry must be ifNoneExist = {if_none_exist_expression(total)}")
    children = {child["linkId"]: child for child in head.get("item", [])}
    for scale in mapping.scales:
        if scale is total or scale.questionnaire_item is None:
            continue
        child = children.get(scale.questionnaire_item)
        if child is None:
            link = scale.questionnaire_item
            problems.append(f"score item '{link}' ({scale.id}) is not nested under '{head['linkId']}', so it cannot be a component")
            continue
        problems += _score_item_problems(child, scale, False)
    return [f"{instrument.canonical}: {p}" for p in problems]


def if_none_exist_expression(total: ScaleSpec) -> str:
    """The FHIRPath of the total item's ``observationExtractEntry.ifNoneExist`` (see docs/extraction.md)."""
    code = total.codes[0]
    return f"'derived-from=QuestionnaireResponse/' + %resource.id + '&code={code.system}|{code.code}'"


def _score_item_problems(item: dict[str, Any], scale: ScaleSpec, head: bool) -> list[str]:
    link = item["linkId"]
    problems = []
    codes = [c.model_dump(exclude_none=True) for c in scale.codes]
    if item.get("code") != codes:
        problems.append(f"item '{link}': item.code must be the codes of scale '{scale.id}' in the mapping's order")
    if item.get("text") != (scale.codes[0].display or scale.title):
        problems.append(f"item '{link}': text must be the score's display (it becomes Observation.code.text)")
    expected = [{"url": OBSERVATION_EXTRACT, "valueBoolean": True}] if head else [{"url": OBSERVATION_EXTRACT, "valueCode": "component"}]
    if _extensions(item, OBSERVATION_EXTRACT) != expected:
        problems.append(f"item '{link}': observationExtract must be {'true' if head else 'component'}")
    if _extensions(item, QUESTIONNAIRE_UNIT) != [{"url": QUESTIONNAIRE_UNIT, "valueCoding": _SCORE_UNIT}]:
        problems.append(f"item '{link}': questionnaire-unit must be UCUM {{score}}")
    return problems


def _extensions(element: dict[str, Any], url: str) -> list[dict[str, Any]]:
    return [e for e in element.get("extension", []) if e.get("url") == url]
