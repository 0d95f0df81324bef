"""Pipeline (b), "the SDC way": evaluate our own Questionnaires' calculatedExpressions with fhirpathpy.

Each score item's ``sdc-questionnaire-calculatedExpression`` is compiled once (with the R4
model) and cached; per response, every expression is evaluated with ``%resource`` bound to the
response. Two honest adjustments, because fhirpathpy 2.2 is not an SDC engine:

- ``weight()`` (SDC 4; ``ordinal()`` in SDC 3) is not built in. We register it as a
  user-defined function through fhirpathpy's ``userInvocationTable``: for a Coding it returns
  the Coding's own ``itemWeight``/``ordinalValue`` extension if present, else the weight of
  the matching ``answerOption`` in the Questionnaire (matched by system and code); a number is
  its own weight. fhirpathpy hands the function the answer values, not the answers, so a
  weight extension on the answer element itself (rather than on its Coding) is not seen; the
  generated responses carry none.
- ``answer.value.sum()`` raises ``TypeError`` in fhirpathpy on FHIR decimals (the SRS total).
  It is evaluated as the equivalent ``answer.value.aggregate($this + $total, 0)``.

The expressions do not prorate (``iif(count() = n, ..., {})``), so an incomplete response
gets no score here where our scorer prorates it; the Observation built is lean (code, total,
subscales as components, derivedFrom): FHIRPath evaluation, not building, is what costs.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from fhirpathpy import compile as fhirpath_compile
from fhirpathpy.models import models

from alliance_fhir.instruments.catalog import CALCULATED, WEIGHT_URLS, Instrument, walk_items

__all__ = ["SdcScorer"]

_SUM_OF_VALUES = ".answer.value.sum()"
_SUM_OF_VALUES_FHIRPATHPY = ".answer.value.aggregate($this + $total, 0)"

Weights = dict[tuple[str | None, str], Decimal]
Compiled = Callable[[Any, Any], list[Any]]


class SdcScorer:
    """Scores one instrument's responses by evaluating its Questionnaire's calculatedExpressions."""

    def __init__(self, instrument: Instrument) -> None:
        self.instrument = instrument
        self.total_id = instrument.mapping.total.id
        self.codes = {s.id: s.codes[0].model_dump(exclude_none=True) for s in instrument.mapping.scales}
        weights = _option_weights(instrument.questionnaire)
        table = {
            "weight": {"fn": lambda inputs: [w for w in (_weight(value, weights) for value in inputs) if w is not None]}
        }
        options = {"userInvocationTable": table}
        scales = {s.questionnaire_item: s for s in instrument.mapping.scales if s.questionnaire_item}
        self.expressions: list[tuple[str, Compiled]] = []
        for item in walk_items(instrument.questionnaire["item"]):
            expression = _calculated_expression(item)
            if expression is not None and item["linkId"] in scales:
                compiled = fhirpath_compile(
                    expression.replace(_SUM_OF_VALUES, _SUM_OF_VALUES_FHIRPATHPY), models["r4"], options
                )
                self.expressions.append((scales[item["linkId"]].id, compiled))

    def scores(self, response: dict[str, Any]) -> dict[str, Decimal]:
        """Scale id -> value, for every expression that gave a value."""
        out = {}
        for scale_id, compiled in self.expressions:
            result = compiled(response, {"resource": response})
            if result:
                out[scale_id] = Decimal(str(result[0]))
        return out

    def observation(self, response: dict[str, Any]) -> dict[str, Any]:
        """A lean score Observation: total as valueQuantity, subscales as components."""
        scores = self.scores(response)
        codes, total_id = self.codes, self.total_id
        obs: dict[str, Any] = {"resourceType": "Observation", "status": "final", "code": {"coding": [codes[total_id]]}}
        obs["derivedFrom"] = [{"reference": f"QuestionnaireResponse/{response.get('id')}"}]
        if total_id in scores:
            obs["valueQuantity"] = _quantity(scores[total_id])
        components = [
            {"code": {"coding": [codes[k]]}, "valueQuantity": _quantity(v)} for k, v in scores.items() if k != total_id
        ]
        if components:
            obs["component"] = components
        return obs


def _calculated_expression(item: dict[str, Any]) -> str | None:
    for ext in item.get("extension", []):
        if ext.get("url") == CALCULATED:
            return str(ext["valueExpression"]["expression"])
    return None


def _option_weights(questionnaire: dict[str, Any]) -> Weights:
    """(system, code) -> weight, from every answerOption's ordinalValue/itemWeight extension."""
    weights: Weights = {}
    for item in walk_items(questionnaire["item"]):
        for option in item.get("answerOption", []):
            coding = option.get("valueCoding") or {}
            found = _extension_weight(option)
            found = _extension_weight(coding) if found is None else found
            if found is not None and "code" in coding:
                weights[(coding.get("system"), coding["code"])] = found
    return weights


def _extension_weight(element: dict[str, Any]) -> Decimal | None:
    for ext in element.get("extension", []):
        if ext.get("url") in WEIGHT_URLS and "valueDecimal" in ext:
            return Decimal(str(ext["valueDecimal"]))
    return None


def _weight(value: Any, weights: Weights) -> Decimal | int | float | None:
    """SDC weight() for one answer value: the Coding's own weight, then the Questionnaire's."""
    if isinstance(value, dict):
        own = _extension_weight(value)
        return own if own is not None else weights.get((value.get("system"), str(value.get("code"))))
    return value if isinstance(value, int | float | Decimal) else None


def _quantity(value: Decimal) -> dict[str, Any]:
    number: int | float = int(value) if value == value.to_integral_value() else float(value)
    return {"value": number, "unit": "{score}", "system": "http://unitsofmeasure.org", "code": "{score}"}
