"""What a FHIR package adds to the Questionnaires, derived from the mappings: a ValueSet per coded
answer scale and an ObservationDefinition per score (total and subscales)."""

from __future__ import annotations

from typing import Any

from .._ids import DEFINITION_ID_SYSTEM, MEASURE_CATEGORY, PROJECT_BASE, SURVEY_CATEGORY
from ..instruments.catalog import Catalog, Instrument, walk_items
from ..instruments.codings import SCORE_UNIT, method_coding, score_quantity
from ..instruments.models import InstrumentMapping, ScaleSpec

__all__ = ["definition_resources"]


def definition_resources(catalog: Catalog) -> list[dict[str, Any]]:
    """What a FHIR package adds to :func:`~.questionnaires.content_resources`, derived from the mappings.

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
        for (_, code), _weight in sorted(
            ((k, w) for k, w in anchors.items() if k[0] == system), key=lambda kw: (kw[1], kw[0][1])
        ):
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
    intervals: list[dict[str, Any]] = [
        {
            "category": "absolute",
            "range": {"low": score_quantity(scale.range.min), "high": score_quantity(scale.range.max)},
            "condition": f"Possible range {scale.range.min:g}-{scale.range.max:g} (higher is better)",
        }
    ]
    for cut in scale.cutoffs:
        if cut.confidence != "C2":
            continue
        interval: dict[str, Any] = {"category": "reference"}
        side = f"at or above {cut.threshold:g}" if cut.operator == "<" else f"above {cut.threshold:g}"
        if cut.operator == "<":  # the unflagged side [threshold, max] is a closed range; for '<=' it is open below
            interval["range"] = {"low": score_quantity(cut.threshold), "high": score_quantity(scale.range.max)}
        rule = f"{'<' if cut.operator == '<' else '<='} {cut.threshold:g}"
        interval["condition"] = (
            f"Cutoff '{cut.id}' {cut.threshold:g} [{cut.confidence}]: scores {side} are not flagged; "
            f"a score {rule} is flagged: {cut.label}"
        )
        intervals.append(interval)
    method_text = f"{mapping.name} scoring algorithm {mapping.algorithm_version}: {scale.aggregation} of items {', '.join(scale.items)}"
    if scale.reverse_items:
        method_text += f", items {', '.join(scale.reverse_items)} reverse-scored"
    method_text += (
        f"; missing data: {scale.missing.rule}, min {scale.missing.min_answered} answered ({scale.missing.source})"
    )
    return {
        "resourceType": "ObservationDefinition",
        "id": did,
        "identifier": [{"system": DEFINITION_ID_SYSTEM, "value": f"{mapping.questionnaire}#{scale.id}"}],
        "category": [{"coding": [dict(SURVEY_CATEGORY)]}, {"coding": [dict(MEASURE_CATEGORY[mapping.measures])]}],
        "code": {
            "coding": [c.model_dump(exclude_none=True) for c in scale.codes],
            "text": scale.codes[0].display or scale.title,
        },
        "permittedDataType": ["Quantity"],
        "multipleResultsAllowed": False,
        "method": {
            "coding": [method_coding(mapping)],
            "text": method_text,
        },
        "preferredReportName": scale.title,
        "quantitativeDetails": {
            "unit": {"coding": [dict(SCORE_UNIT)], "text": "{score}"},
            "decimalPrecision": precision,
        },
        "qualifiedInterval": intervals,
    }


def _pascal(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in "".join(c if c.isalnum() else " " for c in text).split())
