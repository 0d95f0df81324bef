"""Scoring QuestionnaireResponses exactly as the instruments' authors publish.

Pure functions from plain JSON (a ``dict``) to :class:`ScoreResult`: no FHIR models, no I/O,
because bulk back-fills score tens of thousands of responses per second and fhir.resources
costs about a millisecond per resource. Every check here is explicit and ends in a
:class:`ScoringError` that names the resource, the item and the reason.

Answer values follow SDC 4's ``weight()`` order: a weight on the answer itself, then the
Questionnaire's answerOption (matched by Coding system and code); a plain ``valueInteger`` /
``valueDecimal`` is the raw value. Our key is authoritative: an answer whose own weight
disagrees with the key is refused rather than silently trusted.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from .catalog import WEIGHT_URLS, Catalog, Instrument, ItemSpec
from .errors import InstrumentError, ScoringError
from .models import Band, Cutoff, ScaleScore, ScaleSpec, ScoreResult

__all__ = ["SCORABLE_STATUSES", "resource_ref", "score_response"]

SCORABLE_STATUSES = frozenset({"completed", "amended"})
_KNOWN_STATUSES = SCORABLE_STATUSES | {"in-progress", "entered-in-error", "stopped"}
_VALUE_KEYS = ("valueCoding", "valueInteger", "valueDecimal", "valueString", "valueBoolean", "valueDate",
               "valueDateTime", "valueTime", "valueUri", "valueAttachment", "valueQuantity", "valueReference")


def resource_ref(resource: Any) -> str:
    """A PHI-free label for error messages: ``Type/id`` (no content)."""
    if not isinstance(resource, dict):
        return "(not a JSON object)"
    rtype = resource.get("resourceType") or "(no resourceType)"
    rid = resource.get("id")
    return f"{rtype}/{rid}" if isinstance(rid, str) and rid else f"{rtype} (no id)"


def score_response(response: Any, catalog: Catalog) -> ScoreResult:
    """Score one QuestionnaireResponse given as parsed JSON.

    Raises:
        ScoringError: the response is not scorable (wrong resource or status, unknown or
            mismatched Questionnaire, unknown linkId, duplicate, wrong-type or out-of-range
            answer, too many missing answers).
    """
    ref = resource_ref(response)
    instrument, warnings = _resolve(response, ref, catalog)
    values, stored = _collect_answers(response, instrument, ref)
    scores: list[ScaleScore] = []
    rules: list[str] = []
    omitted: list[str] = []
    for position, scale in enumerate(instrument.mapping.scales):
        score, rule = _score_scale(scale, values, instrument)
        if score is None:
            if position == 0:
                raise ScoringError(ref, rule)
            omitted.append(scale.id)
            warnings.append(f"{scale.id} not reported: {rule}")
            continue
        if rule:
            rules.append(rule)
        scores.append(score)
        _compare_stored(scale, score, stored, warnings)
    return ScoreResult(
        response_ref=ref,
        mapping=instrument.mapping,
        status=response["status"],
        scores=tuple(scores),
        answered=len(values),
        item_count=len(instrument.items),
        rules_applied=tuple(rules),
        warnings=tuple(warnings),
        omitted=tuple(omitted),
    )


def _resolve(response: Any, ref: str, catalog: Catalog) -> tuple[Instrument, list[str]]:
    if not isinstance(response, dict):
        raise ScoringError(ref, "not a FHIR resource (expected a JSON object)")
    if response.get("resourceType") != "QuestionnaireResponse":
        raise ScoringError(ref, f"not a QuestionnaireResponse (resourceType is {response.get('resourceType')!r})")
    status = response.get("status")
    if status not in _KNOWN_STATUSES:
        raise ScoringError(ref, f"status {status!r} is not a QuestionnaireResponse status")
    if status not in SCORABLE_STATUSES:
        raise ScoringError(ref, f"status '{status}' is not scorable (only completed or amended responses are scored)")
    canonical = response.get("questionnaire")
    if not isinstance(canonical, str) or not canonical:
        raise ScoringError(ref, "no questionnaire canonical, so the instrument is unknown")
    try:
        instrument, warning = catalog.resolve(canonical)
    except InstrumentError as exc:
        raise ScoringError(ref, str(exc)) from exc
    return instrument, [warning] if warning else []


def _collect_answers(
    response: dict[str, Any], instrument: Instrument, ref: str
) -> tuple[dict[str, Decimal], dict[str, Any]]:
    values: dict[str, Decimal] = {}
    stored: dict[str, Any] = {}
    seen: set[str] = set()
    stack = list(reversed(_as_list(response.get("item"), ref, None)))
    while stack:
        item = stack.pop()
        link = item.get("linkId") if isinstance(item, dict) else None
        if not isinstance(link, str):
            raise ScoringError(ref, "an item has no linkId")
        if link not in instrument.link_ids:
            raise ScoringError(ref, f"unknown linkId (not in {instrument.canonical})", link)
        if link in seen:
            raise ScoringError(ref, "duplicate item (the linkId appears more than once)", link)
        seen.add(link)
        answers = _as_list(item.get("answer"), ref, link)
        children = _as_list(item.get("item"), ref, link)
        for answer in answers:
            children += _as_list(answer.get("item"), ref, link) if isinstance(answer, dict) else []
        stack.extend(reversed(children))
        if link in instrument.score_link_ids:
            stored[link] = answers[0] if answers else None
            continue
        spec = instrument.items.get(link)
        if spec is None or not answers:
            continue
        if len(answers) > 1:
            raise ScoringError(ref, f"duplicate answers ({len(answers)} given, the item takes one)", link)
        values[link] = _answer_value(spec, answers[0], ref)
    return values, stored


def _as_list(value: Any, ref: str, link: str | None) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ScoringError(ref, "malformed: expected a JSON array", link)
    return value


def _answer_value(spec: ItemSpec, answer: Any, ref: str) -> Decimal:
    if not isinstance(answer, dict):
        raise ScoringError(ref, "malformed answer (expected a JSON object)", spec.link_id)
    present = [k for k in _VALUE_KEYS if k in answer]
    if not present:
        raise ScoringError(ref, "answer has no value", spec.link_id)
    key = present[0]
    if spec.kind == "choice":
        if key == "valueCoding":
            return _coded_value(spec, answer, ref)
        if key in ("valueInteger", "valueDecimal"):
            value = _number(answer[key], key, spec, ref)
            if value not in spec.values:
                allowed = ", ".join(f"{v}" for v in sorted(spec.values))
                raise ScoringError(ref, f"value {value} is out of range (answer values: {allowed})", spec.link_id)
            return value
        raise ScoringError(ref, f"wrong type: {key} given, expected valueCoding or valueInteger", spec.link_id)
    if key not in ("valueDecimal", "valueInteger"):
        raise ScoringError(ref, f"wrong type: {key} given, expected valueDecimal", spec.link_id)
    value = _number(answer[key], key, spec, ref)
    if not spec.min <= value <= spec.max:
        raise ScoringError(ref, f"value {value} is out of range {spec.min}-{spec.max}", spec.link_id)
    if -value.as_tuple().exponent > spec.decimals:  # type: ignore[operator]
        raise ScoringError(ref, f"value {value} has more than {spec.decimals} decimal place(s)", spec.link_id)
    return value


def _number(raw: Any, key: str, spec: ItemSpec, ref: str) -> Decimal:
    is_number = isinstance(raw, int | float) and not isinstance(raw, bool)
    if not is_number or (key == "valueInteger" and not isinstance(raw, int)):
        raise ScoringError(ref, f"wrong type: {key} is {raw!r}, not a number of that type", spec.link_id)
    if raw != raw or raw in (float("inf"), float("-inf")):
        raise ScoringError(ref, f"{key} is not a finite number", spec.link_id)
    return Decimal(raw) if isinstance(raw, int) else Decimal(repr(raw))


def _coded_value(spec: ItemSpec, answer: dict[str, Any], ref: str) -> Decimal:
    coding = answer["valueCoding"]
    if not isinstance(coding, dict) or not isinstance(coding.get("code"), str):
        raise ScoringError(ref, "valueCoding has no code", spec.link_id)
    code, system = coding["code"], coding.get("system")
    weight = spec.options.get((system, code)) if system else _by_code_only(spec, code)
    if weight is None:
        raise ScoringError(ref, f"code '{code}' (system {system}) is not an answer option of this item", spec.link_id)
    claimed = _answer_weight(answer) if "extension" in answer or "extension" in coding else None
    if claimed is not None and claimed != weight:
        raise ScoringError(
            ref, f"answer carries weight {claimed} but the scoring key gives {weight} for code '{code}'", spec.link_id
        )
    return weight


def _by_code_only(spec: ItemSpec, code: str) -> Decimal | None:
    matches = [w for (_, c), w in spec.options.items() if c == code]
    return matches[0] if len(matches) == 1 else None


def _answer_weight(answer: dict[str, Any]) -> Decimal | None:
    """SDC weight() step 1: a weight carried by the answer (or its Coding, as LHC-Forms writes it)."""
    for ext in answer.get("extension", []) + answer["valueCoding"].get("extension", []):
        if isinstance(ext, dict) and ext.get("url") in WEIGHT_URLS:
            raw = ext.get("valueDecimal", ext.get("valueInteger"))
            if isinstance(raw, int | float) and not isinstance(raw, bool):
                return Decimal(repr(raw)) if isinstance(raw, float) else Decimal(raw)
    return None


def _score_scale(scale: ScaleSpec, values: dict[str, Decimal], instrument: Instrument) -> tuple[ScaleScore | None, str]:
    """Return the score, or None and the reason it cannot be given; the string is the rule applied."""
    item_scale = instrument.mapping.item_scale
    flip = _decimal(item_scale.min) + _decimal(item_scale.max)
    answered = [flip - values[i] if i in scale.reverse_items else values[i] for i in scale.items if i in values]
    n_items, n = len(scale.items), len(answered)
    rule = scale.missing
    if n < rule.min_answered:
        missing = ", ".join(i for i in scale.items if i not in values)
        return None, (
            f"too many missing answers for {scale.id}: unanswered item(s) {missing}; "
            f"at least {rule.min_answered} of {n_items} needed ({rule.source})"
        )
    total = sum(answered, Decimal(0))
    if n == n_items:
        value = total if scale.aggregation == "sum" else _round(total / n, scale.decimals)
        note = ""
    else:
        mean = total / n
        value = _round(mean * n_items if scale.aggregation == "sum" else mean, rule.round_to)
        note = (
            f"{scale.id} prorated: {n} of {n_items} items answered; "
            f"{'mean of the answered items x ' + str(n_items) if scale.aggregation == 'sum' else 'mean of the answered items'}, "
            f"rounded to {rule.round_to} decimal(s) ({rule.source})"
        )
    flags = tuple(_flags(scale, value))
    return ScaleScore(scale=scale, value=value, answered=n, prorated=n != n_items, flags=flags), note


def _decimal(number: float) -> Decimal:
    """Mapping numbers arrive as floats; 7.0 must become Decimal('7'), not '7.0'."""
    return Decimal(int(number)) if float(number).is_integer() else Decimal(repr(number))


def _round(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def _flags(scale: ScaleSpec, value: Decimal) -> list[Cutoff | Band]:
    flags: list[Cutoff | Band] = []
    for cut in scale.cutoffs:
        threshold = _decimal(cut.threshold)
        if value < threshold or (cut.operator == "<=" and value == threshold):
            flags.append(cut)
    for band in scale.bands:
        if _decimal(band.min) <= value <= _decimal(band.max):
            flags.append(band)
    return flags


def _compare_stored(scale: ScaleSpec, score: ScaleScore, stored: dict[str, Any], warnings: list[str]) -> None:
    """A score the form filler stored is re-computed, never trusted; say so when they differ."""
    answer = stored.get(scale.questionnaire_item or "")
    if not isinstance(answer, dict):
        return
    raw = answer.get("valueDecimal", answer.get("valueInteger"))
    if isinstance(raw, int | float) and not isinstance(raw, bool) and Decimal(repr(raw)) != score.value:
        warnings.append(f"stored {scale.id} {raw} differs from the re-computed {score.value}; the stored value is ignored")
