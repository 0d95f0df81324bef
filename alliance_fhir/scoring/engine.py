"""Scoring QuestionnaireResponses exactly as the instruments' authors publish.

Pure functions from plain JSON (a ``dict``) to :class:`ScoreResult`: no FHIR models, no I/O,
because bulk back-fills score tens of thousands of responses per second and fhir.resources
costs about a millisecond per resource. Every check here is explicit and ends in a
:class:`ScoringError` that names the resource, the item and the reason.

A response to a vendor's own form that a form map claims (:mod:`.vendor_forms`) is first read
into our instrument's shape, then scored by the same code as our own form.

Answer values follow SDC 4's ``weight()`` order: a weight on the answer itself, then the
Questionnaire's answerOption (matched by Coding system and code); a plain ``valueInteger`` /
``valueDecimal`` is the raw value. Our key is authoritative: an answer whose own weight
disagrees with the key is refused rather than silently trusted.

Speed (``docs/benchmarks.md``): what depends only on the mapping (reverse keys, cutoffs and
bands as Decimals, each scale's answer lookup) is prepared once per instrument, and equal
scale outcomes share one frozen :class:`ScaleScore`. The common response shape (a flat list of
items, one plain answer each) is read by a lean loop that gives up, without raising, at
anything else; the general walk then scores or refuses the response, so both paths give the
same result and the same error.

The contract: whatever JSON value is given (parsed by any JSON library, numbers as ``int``,
``float`` or ``Decimal``), :func:`score_response` returns a result or raises
:class:`ScoringError`, never another exception. Nothing here recurses into the data: the item
walk is iterative and refuses items nested deeper than :data:`MAX_ITEM_DEPTH`; the elements
copied into the Observation (subject, encounter, author, focus) and, for a response with
neither id nor identifier, the whole response (it is hashed) are checked iteratively to at most
:data:`MAX_JSON_DEPTH` levels. Messages name the resource, the item and the reason with every
data-derived value made safe (:mod:`.._text`) and never repeat an answer's content.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from .._cache import IdentityCache
from .._text import describe, safe_text
from ..errors import InstrumentError, ScoringError
from ..fhirtypes import plain_resource
from ..instruments.catalog import WEIGHT_URLS, Catalog, Instrument, ItemSpec
from ..instruments.models import Band, Cutoff, ScaleSpec
from .results import ScaleScore, ScoreResult
from .vendor_forms import translate_response

__all__ = ["MAX_ITEM_DEPTH", "MAX_JSON_DEPTH", "SCORABLE_STATUSES", "resource_ref", "score_response"]

SCORABLE_STATUSES = frozenset({"completed", "amended"})
_KNOWN_STATUSES = SCORABLE_STATUSES | {"in-progress", "entered-in-error", "stopped"}
_VALUE_KEYS = (
    "valueCoding",
    "valueInteger",
    "valueDecimal",
    "valueString",
    "valueBoolean",
    "valueDate",
    "valueDateTime",
    "valueTime",
    "valueUri",
    "valueAttachment",
    "valueQuantity",
    "valueReference",
)
_NO_ANSWERS: tuple[Any, ...] = ()
_ZERO = Decimal(0)
_MAX_OUTCOMES = 4096  # per scale; a likert total has a few hundred possible outcomes
MAX_ITEM_DEPTH = 100
"""Items nested in items (groups in groups, items under answers) deeper than this are refused."""
MAX_JSON_DEPTH = 100
"""JSON levels allowed in an element copied into the Observation, or in a response that is hashed."""
_MAX_INT_BITS = 10_000  # ~3,000 digits: beyond this an integer cannot be written as JSON text by Python
_REFERENCES = ("subject", "encounter", "author")
# FHIR dateTime (R4): a year, optionally month, day, and a time with a zone.
_DATETIME = re.compile(  # FHIR R4 dateTime; the zone is optional here because servers store zone-less times as given
    r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))?)?)?)?"
)


def resource_ref(resource: Any) -> str:
    """A PHI-free label for error messages: ``Type/id`` (no content)."""
    if not isinstance(resource, dict):
        return "(not a JSON object)"
    rtype = resource.get("resourceType")
    rtype = safe_text(rtype, 60) if isinstance(rtype, str) and rtype else "(no resourceType)"
    rid = resource.get("id")
    return f"{rtype}/{safe_text(rid, 80)}" if isinstance(rid, str) and rid else f"{rtype} (no id)"


def score_response(response: Any, catalog: Catalog) -> ScoreResult:
    """Score one QuestionnaireResponse given as parsed JSON (a dict) or as a fhir.resources model.

    Raises:
        ScoringError: the response is not scorable (wrong resource or status, unknown or
            mismatched Questionnaire, unknown linkId, duplicate, wrong-type or out-of-range
            answer, too many missing answers).
    """
    response = plain_resource(response)
    ref = resource_ref(response)
    if catalog.forms:
        response = _as_our_form(response, catalog, ref)
    instrument, warnings = _resolve(response, ref, catalog)
    _check_elements(response, ref)
    plan = _plan(instrument)
    values, stored = _collect_answers(response, instrument, plan, ref)
    scores: list[ScaleScore] = []
    rules: list[str] = []
    omitted: list[str] = []
    for position, scale_plan in enumerate(plan.scales):
        score, rule = _score_scale(scale_plan, values)
        if score is None:
            if position == 0:
                raise ScoringError(ref, rule)
            omitted.append(scale_plan.spec.id)
            warnings.append(f"{scale_plan.spec.id} not reported: {rule}")
            continue
        if rule:
            rules.append(rule)
        scores.append(score)
        if stored:
            _compare_stored(scale_plan.spec, score, stored, warnings)
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


def _as_our_form(response: Any, catalog: Catalog, ref: str) -> Any:
    """A scorable response to a vendor form that a form map claims, in our instrument's shape
    (:mod:`.vendor_forms`); anything else unchanged (its status or type is refused as usual)."""
    if not (isinstance(response, dict) and response.get("resourceType") == "QuestionnaireResponse"):
        return response
    status = response.get("status")
    if not (isinstance(status, str) and status in SCORABLE_STATUSES):
        return response
    entry = catalog.forms.match(response)
    return response if entry is None else translate_response(response, entry, ref)


def _resolve(response: Any, ref: str, catalog: Catalog) -> tuple[Instrument, list[str]]:
    if not isinstance(response, dict):
        raise ScoringError(ref, "not a FHIR resource (expected a JSON object)")
    rtype = response.get("resourceType")
    if rtype != "QuestionnaireResponse":
        shown = f"'{safe_text(rtype, 60)}'" if isinstance(rtype, str) else describe(rtype)
        raise ScoringError(ref, f"not a QuestionnaireResponse (resourceType is {shown})")
    if "id" in response and not (isinstance(response["id"], str) and response["id"]):
        raise ScoringError(ref, f"id is {describe(response['id'])}, not a non-empty string")
    status = response.get("status")
    if not isinstance(status, str):
        raise ScoringError(ref, f"status is {describe(status)}, not a QuestionnaireResponse status code")
    if status not in _KNOWN_STATUSES:
        raise ScoringError(ref, f"status '{safe_text(status, 40)}' is not a QuestionnaireResponse status")
    if status not in SCORABLE_STATUSES:
        raise ScoringError(ref, f"status '{status}' is not scorable (only completed or amended responses are scored)")
    canonical = response.get("questionnaire")
    if not isinstance(canonical, str) or not canonical:
        raise ScoringError(ref, "no questionnaire canonical, so the instrument is unknown")
    try:
        instrument, warning = catalog.resolve(canonical)
    except InstrumentError as exc:
        raise ScoringError(ref, safe_text(str(exc), 400)) from exc
    return instrument, [safe_text(warning, 400)] if warning else []


def _check_elements(response: dict[str, Any], ref: str) -> None:
    """The elements the Observation copies or hashes must be well-formed, or nothing is written.

    A subject given as a string, a ``meta`` that is a list, an ``authored`` that is not a FHIR
    dateTime: each would otherwise be dropped silently or copied into an invalid Observation.
    """
    for name in _REFERENCES:
        if name in response:
            _check_reference(response[name], name, ref)
    meta = response.get("meta", {})
    if not isinstance(meta, dict) or not isinstance(meta.get("versionId", ""), str):
        raise ScoringError(ref, "meta is malformed: expected a JSON object with a string versionId")
    authored = response.get("authored", "")
    if not isinstance(authored, str) or (authored and not _DATETIME.fullmatch(authored)):
        raise ScoringError(ref, f"authored is {describe(authored)}, not a FHIR dateTime")
    for position, ext in enumerate(_extensions(response, "extension", ref, None)):
        if "valueReference" in ext:
            _check_reference(ext["valueReference"], f"extension[{position}].valueReference", ref)
    identifier = response.get("identifier", {})
    if not isinstance(identifier, dict) or not all(isinstance(identifier.get(k, ""), str) for k in ("system", "value")):
        raise ScoringError(ref, "identifier is malformed: expected a JSON object with string system and value")
    if not response.get("id") and not identifier.get("value"):  # the content is hashed for the Observation's identifier
        problem = _json_problem(response, "the response")
        if problem:
            raise ScoringError(ref, f"cannot identify the response (no id, no identifier): {problem}")


def _check_reference(value: Any, name: str, ref: str) -> None:
    if type(value) is dict and _only_strings(value) and (value.get("reference") or value.get("display")):
        return  # the common Reference ({"reference": "Patient/1"}): nothing below can fail on it
    if not isinstance(value, dict):
        raise ScoringError(ref, f"{name} is {describe(value)}, not a FHIR Reference (a JSON object)")
    if not any(isinstance(value.get(k), str) and value[k] for k in ("reference", "display")) and not isinstance(
        value.get("identifier"), dict
    ):
        raise ScoringError(ref, f"{name} is a Reference with no reference, identifier or display")
    for key in ("reference", "display", "type"):
        if key in value and not isinstance(value[key], str):
            raise ScoringError(ref, f"{name}.{key} is {describe(value[key])}, not a string")
    problem = _json_problem(value, name)
    if problem:
        raise ScoringError(ref, f"{name} is malformed: {problem}")


def _only_strings(value: dict[Any, Any]) -> bool:
    """Every key and value a string (a flat Reference), checked without building anything."""
    for key, item in value.items():
        if type(key) is not str or type(item) is not str:
            return False
    return True


def _is_finite(number: float | Decimal) -> bool:
    return number.is_finite() if isinstance(number, Decimal) else math.isfinite(number)


def _json_problem(value: Any, name: str) -> str | None:
    """The first thing that would stop ``value`` being copied or written as JSON, or None (iterative)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"{name} is nested deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(node, dict):
            if not all(isinstance(k, str) for k in node):
                return f"{name} has an object key that is not a string"
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
        elif isinstance(node, bool) or node is None or isinstance(node, str):
            continue
        elif isinstance(node, int):
            if node.bit_length() > _MAX_INT_BITS:
                return f"{name} holds an integer of more than 3,000 digits"
        elif isinstance(node, float | Decimal):
            if not _is_finite(node):
                return f"{name} holds a non-finite number"
            # beyond a double: copied as an int too long to write
            if isinstance(node, Decimal) and node.adjusted() > 308:
                return f"{name} holds a number beyond a double's range"
        else:
            return f"{name} holds {describe(node)}"
    return None


def _collect_answers(
    response: dict[str, Any], instrument: Instrument, plan: _InstrumentPlan, ref: str
) -> tuple[dict[str, Decimal], dict[str, Any]]:
    """Scored item values by linkId, and the stored score items' answers (read-only items)."""
    lean = _collect_flat(response.get("item"), plan)
    return lean if lean is not None else _collect_walk(response, instrument, ref)


def _collect_flat(items: Any, plan: _InstrumentPlan) -> tuple[dict[str, Decimal], dict[str, Any]] | None:
    """The common shape, read fast: a flat list of items, each with at most one plain answer.

    Returns None, never raising, at the first thing off that path (nesting, extensions,
    several answers, a repeated or unknown linkId, anything malformed); :func:`_collect_walk`
    then handles the response and names the problem, if there is one.
    """
    if type(items) is not list:
        return None
    remaining = dict(plan.entries)  # each linkId may appear once
    values: dict[str, Decimal] = {}
    stored: dict[str, Any] = {}
    for item in items:
        if type(item) is not dict or "item" in item or "extension" in item:
            return None
        link = item.get("linkId")
        if type(link) is not str:
            return None
        entry = remaining.pop(link, None)  # None: not in this Questionnaire, or already seen
        answers = item.get("answer", _NO_ANSWERS)
        if entry is None or (type(answers) is not list and answers is not _NO_ANSWERS):
            return None
        if type(entry) is ItemSpec and answers:
            value = _plain_value(entry, answers)
            if value is None:
                return None
            values[link] = value
        elif not _plain_answers(answers):
            return None
        elif entry is True:
            stored[link] = answers[0] if answers else None
    return values, stored


def _plain_answers(answers: Sequence[Any]) -> bool:
    return all(type(answer) is dict and "item" not in answer and "extension" not in answer for answer in answers)


def _plain_value(spec: ItemSpec, answers: Sequence[Any]) -> Decimal | None:
    """A scored item's value when it has one plain, valid answer (a Coding without weights, or a number); else None."""
    answer = answers[0]
    if len(answers) != 1 or type(answer) is not dict or "item" in answer or "extension" in answer:
        return None
    if "valueCoding" in answer:
        coding = answer["valueCoding"]
        if spec.kind != "choice" or type(coding) is not dict or "extension" in coding:
            return None
        system, code = coding.get("system"), coding.get("code")
        return spec.options.get((system, code)) if type(system) is str and system and type(code) is str else None
    if "valueInteger" in answer:
        raw = answer["valueInteger"]
        value = Decimal(raw) if type(raw) is int else None
    elif "valueDecimal" in answer:
        value = _plain_number(answer["valueDecimal"])
    else:
        return None
    if value is None or spec.kind == "choice":
        return value if value in spec.values else None
    if not spec.min <= value <= spec.max or -value.as_tuple().exponent > spec.decimals:  # type: ignore[operator]
        return None
    return value


def _plain_number(raw: Any) -> Decimal | None:
    """A finite JSON number as a Decimal (from ``int``, ``float`` or ``Decimal``), else None."""
    kind = type(raw)
    if kind is float:
        return Decimal(repr(raw)) if math.isfinite(raw) else None
    if kind is int:
        return Decimal(raw)
    if kind is Decimal:
        return raw if raw.is_finite() else None
    return None


def _collect_walk(
    response: dict[str, Any], instrument: Instrument, ref: str
) -> tuple[dict[str, Decimal], dict[str, Any]]:
    """Any shape (nested groups, answers with items, weights on answers), checked item by item."""
    values: dict[str, Decimal] = {}
    stored: dict[str, Any] = {}
    seen: set[str] = set()
    stack = [(item, 1) for item in reversed(_array(response, "item", ref, None))]
    while stack:
        item, depth = stack.pop()
        link = item.get("linkId") if isinstance(item, dict) else None
        if not isinstance(link, str):
            raise ScoringError(
                ref,
                "an item has no linkId"
                if isinstance(item, dict)
                else f"an item is {describe(item)}, not a JSON object",
            )
        if link not in instrument.link_ids:
            raise ScoringError(ref, f"unknown linkId (not in {instrument.canonical})", safe_text(link, 60))
        if link in seen:
            raise ScoringError(ref, "duplicate item (the linkId appears more than once)", link)
        if depth > MAX_ITEM_DEPTH:
            raise ScoringError(ref, f"items nested deeper than {MAX_ITEM_DEPTH} levels", link)
        seen.add(link)
        _extensions(item, "item.extension", ref, link)
        answers = _array(item, "answer", ref, link)
        children = list(_array(item, "item", ref, link))
        for answer in answers:
            if isinstance(answer, dict):
                _extensions(answer, "answer.extension", ref, link)
                children += _array(answer, "item", ref, link, name="answer.item")
        stack.extend((child, depth + 1) for child in reversed(children))
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


def _array(owner: dict[str, Any], key: str, ref: str, link: str | None, *, name: str | None = None) -> list[Any]:
    """A list-valued FHIR element (item, answer, extension, at any level): absent is empty, an
    array is itself, anything else is refused, the same way wherever it is read. Before this one
    rule, an answer's ``extension`` given as an object was ignored while the response's was refused.

    Raises:
        ScoringError: the element is present but not a JSON array (names the element and the item).
    """
    value = owner.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ScoringError(ref, f"{name or key} is malformed: expected a JSON array, found {describe(value)}", link)
    return value


def _extensions(owner: dict[str, Any], name: str, ref: str, link: str | None) -> list[dict[str, Any]]:
    """An ``extension`` element: a JSON array (:func:`_array`) of objects."""
    extensions = _array(owner, "extension", ref, link, name=name)
    if not all(isinstance(ext, dict) for ext in extensions):
        raise ScoringError(ref, f"{name} is malformed: expected a JSON array of objects", link)
    return extensions


def _answer_value(spec: ItemSpec, answer: Any, ref: str) -> Decimal:
    if not isinstance(answer, dict):
        raise ScoringError(ref, f"malformed answer: {describe(answer)}, expected a JSON object", spec.link_id)
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
                raise ScoringError(ref, f"{key} is out of range (answer values: {allowed})", spec.link_id)
            return value
        raise ScoringError(ref, f"wrong type: {key} given, expected valueCoding or valueInteger", spec.link_id)
    if key not in ("valueDecimal", "valueInteger"):
        raise ScoringError(ref, f"wrong type: {key} given, expected valueDecimal", spec.link_id)
    value = _number(answer[key], key, spec, ref)
    if not spec.min <= value <= spec.max:
        raise ScoringError(ref, f"{key} is out of range {spec.min}-{spec.max}", spec.link_id)
    if -value.as_tuple().exponent > spec.decimals:  # type: ignore[operator]
        raise ScoringError(ref, f"{key} has more than {spec.decimals} decimal place(s)", spec.link_id)
    return value


def _number(raw: Any, key: str, spec: ItemSpec, ref: str) -> Decimal:
    """The answer's number; its content is never repeated in the message, only its type."""
    is_number = isinstance(raw, int | float | Decimal) and not isinstance(raw, bool)
    if not is_number or (key == "valueInteger" and not isinstance(raw, int)):
        wanted = "an integer" if key == "valueInteger" else "a number"
        raise ScoringError(ref, f"wrong type: {key} is {describe(raw)}, not {wanted}", spec.link_id)
    value = _plain_number(raw)
    if value is None:
        raise ScoringError(ref, f"{key} is not a finite number", spec.link_id)
    return value


def _coded_value(spec: ItemSpec, answer: dict[str, Any], ref: str) -> Decimal:
    coding = answer["valueCoding"]
    if not isinstance(coding, dict) or not isinstance(coding.get("code"), str):
        raise ScoringError(ref, "valueCoding has no code", spec.link_id)
    code, system = coding["code"], coding.get("system")
    if system is not None and not isinstance(system, str):
        raise ScoringError(ref, f"valueCoding.system is {describe(system)}, not a string", spec.link_id)
    weight = spec.options.get((system, code)) if system else _by_code_only(spec, code)
    if weight is None:
        where = f"system {safe_text(system)}" if system else "no system"
        raise ScoringError(ref, f"the valueCoding ({where}) is not an answer option of this item", spec.link_id)
    claimed = (
        _answer_weight(answer, coding, ref, spec.link_id) if "extension" in answer or "extension" in coding else None
    )
    if claimed is not None and claimed != weight:
        raise ScoringError(
            ref, "the answer carries a weight that differs from the scoring key's for its code", spec.link_id
        )
    return weight


def _by_code_only(spec: ItemSpec, code: str) -> Decimal | None:
    matches = [w for (_, c), w in spec.options.items() if c == code]
    return matches[0] if len(matches) == 1 else None


def _answer_weight(answer: dict[str, Any], coding: dict[str, Any], ref: str, link: str) -> Decimal | None:
    """SDC weight() step 1: a weight carried by the answer (or its Coding, as LHC-Forms writes it)."""
    extensions = _extensions(answer, "answer.extension", ref, link) + _extensions(
        coding, "valueCoding.extension", ref, link
    )
    for ext in extensions:
        if isinstance(ext.get("url"), str) and ext["url"] in WEIGHT_URLS:
            weight = _plain_number(ext.get("valueDecimal", ext.get("valueInteger")))
            if weight is not None:
                return weight
    return None


def _score_scale(plan: _ScalePlan, values: dict[str, Decimal]) -> tuple[ScaleScore | None, str]:
    """Return the score, or None and the reason it cannot be given; the string is the rule applied."""
    scale, reverse, flip = plan.spec, plan.reverse, plan.flip
    answered: Sequence[Decimal] | None
    try:  # every item answered, none reversed (the common case): one lookup in C
        answered = plan.all_answers(values) if plan.all_answers is not None else None
    except KeyError:
        answered = None
    if answered is None:
        answered = [flip - values[i] if i in reverse else values[i] for i in scale.items if i in values]
    n_items, n = len(scale.items), len(answered)
    rule = scale.missing
    if n < rule.min_answered:
        missing = ", ".join(i for i in scale.items if i not in values)
        return None, (
            f"too many missing answers for {scale.id}: unanswered item(s) {missing}; "
            f"at least {rule.min_answered} of {n_items} needed ({rule.source})"
        )
    total = sum(answered, _ZERO)
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
    key = (str(value), n)
    score = plan.outcomes.get(key)
    if score is None:
        flags = tuple(_flags(plan, value)) if plan.cutoffs or plan.bands else ()
        score = ScaleScore(scale=scale, value=value, answered=n, prorated=n != n_items, flags=flags)
        if len(plan.outcomes) < _MAX_OUTCOMES:
            plan.outcomes[key] = score
    return score, note


def _decimal(number: float) -> Decimal:
    """Mapping numbers arrive as floats; 7.0 must become Decimal('7'), not '7.0'."""
    return Decimal(int(number)) if float(number).is_integer() else Decimal(repr(number))


def _round(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def _flags(plan: _ScalePlan, value: Decimal) -> list[Cutoff | Band]:
    flags: list[Cutoff | Band] = []
    for cut, threshold in plan.cutoffs:
        if value < threshold or (cut.operator == "<=" and value == threshold):
            flags.append(cut)
    for band, low, high in plan.bands:
        if low <= value <= high:
            flags.append(band)
    return flags


def _compare_stored(scale: ScaleSpec, score: ScaleScore, stored: dict[str, Any], warnings: list[str]) -> None:
    """A score the form filler stored is re-computed, never trusted; say so when they differ."""
    answer = stored.get(scale.questionnaire_item or "")
    if not isinstance(answer, dict):
        return
    value = _plain_number(answer.get("valueDecimal", answer.get("valueInteger")))
    if value is not None and value != score.value:
        warnings.append(f"the stored {scale.id} differs from the re-computed one; the stored value is ignored")


# Prepared once per instrument.


@dataclass(frozen=True, slots=True)
class _ScalePlan:
    """One scale with the numbers of its key prepared as Decimals.

    ``outcomes`` shares :class:`ScaleScore` objects (frozen, so safe to share) between
    responses that score the same: a score is fully set by its value, written exactly
    (``str``), and the number of answered items.
    """

    spec: ScaleSpec
    reverse: frozenset[str]
    flip: Decimal
    cutoffs: tuple[tuple[Cutoff, Decimal], ...]
    bands: tuple[tuple[Band, Decimal, Decimal], ...]
    all_answers: Callable[[dict[str, Decimal]], tuple[Decimal, ...]] | None  # None: reversed or single-item scale
    outcomes: dict[tuple[str, int], ScaleScore] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _InstrumentPlan:
    """An instrument prepared for scoring.

    ``entries`` maps every linkId of the Questionnaire to what the lean answer loop does with
    it: an :class:`ItemSpec` (a scored item), ``True`` (a stored score item, compared, never
    trusted) or ``False`` (any other item).
    """

    scales: tuple[_ScalePlan, ...]
    entries: dict[str, ItemSpec | bool]


def _prepare_instrument(instrument: Instrument) -> _InstrumentPlan:
    item_scale = instrument.mapping.item_scale
    flip = _decimal(item_scale.min) + _decimal(item_scale.max)
    scales = tuple(_prepare_scale(scale, flip) for scale in instrument.mapping.scales)
    entries: dict[str, ItemSpec | bool] = {}
    for link in instrument.link_ids:
        spec = instrument.items.get(link)
        entries[link] = True if link in instrument.score_link_ids else spec if spec is not None else False
    return _InstrumentPlan(scales, entries)


def _prepare_scale(scale: ScaleSpec, flip: Decimal) -> _ScalePlan:
    cutoffs = tuple((cut, _decimal(cut.threshold)) for cut in scale.cutoffs)
    bands = tuple((band, _decimal(band.min), _decimal(band.max)) for band in scale.bands)
    all_answers = operator.itemgetter(*scale.items) if len(scale.items) > 1 and not scale.reverse_items else None
    return _ScalePlan(scale, frozenset(scale.reverse_items), flip, cutoffs, bands, all_answers)


_plan: IdentityCache[Instrument, _InstrumentPlan] = IdentityCache(_prepare_instrument, limit=256)
