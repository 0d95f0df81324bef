"""Checks that a Questionnaire's SDC 4 observation-based extraction rules say what our score
Observations say (``docs/extraction.md``): advisory, since scoring never depends on them."""

from __future__ import annotations

from typing import Any

from .._ids import MEASURE_CATEGORY, SURVEY_CATEGORY
from ..instruments.catalog import Instrument, walk_items
from ..instruments.codings import SCORE_UNIT
from ..instruments.models import ScaleSpec

__all__ = [
    "OBSERVATION_EXTRACT",
    "OBSERVATION_EXTRACT_CATEGORY",
    "OBSERVATION_EXTRACT_ENTRY",
    "QUESTIONNAIRE_UNIT",
    "extraction_problems",
    "if_none_exist_expression",
]

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
        {"url": OBSERVATION_EXTRACT_CATEGORY, "valueCodeableConcept": {"coding": [c]}}
        for c in (SURVEY_CATEGORY, MEASURE_CATEGORY[mapping.measures])
    ]:
        problems.append(
            f"item '{head['linkId']}': observation-extract-category must be survey and {MEASURE_CATEGORY[mapping.measures]['code']}"
        )
    expected_entry = [{"url": "ifNoneExist", "valueString": if_none_exist_expression(total)}]
    if [e.get("extension") for e in _extensions(head, OBSERVATION_EXTRACT_ENTRY)] != [expected_entry]:
        problems.append(
            f"item '{head['linkId']}': observationExtractEntry must be ifNoneExist = {if_none_exist_expression(total)}"
        )
    children = {child["linkId"]: child for child in head.get("item", [])}
    for scale in mapping.scales:
        if scale is total or scale.questionnaire_item is None:
            continue
        child = children.get(scale.questionnaire_item)
        if child is None:
            link = scale.questionnaire_item
            problems.append(
                f"score item '{link}' ({scale.id}) is not nested under '{head['linkId']}', so it cannot be a component"
            )
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
    expected = (
        [{"url": OBSERVATION_EXTRACT, "valueBoolean": True}]
        if head
        else [{"url": OBSERVATION_EXTRACT, "valueCode": "component"}]
    )
    if _extensions(item, OBSERVATION_EXTRACT) != expected:
        problems.append(f"item '{link}': observationExtract must be {'true' if head else 'component'}")
    if _extensions(item, QUESTIONNAIRE_UNIT) != [{"url": QUESTIONNAIRE_UNIT, "valueCoding": SCORE_UNIT}]:
        problems.append(f"item '{link}': questionnaire-unit must be UCUM {{score}}")
    return problems


def _extensions(element: dict[str, Any], url: str) -> list[dict[str, Any]]:
    return [e for e in element.get("extension", []) if e.get("url") == url]
