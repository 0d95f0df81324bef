"""The FHIR mapping: a :class:`ScoreResult` and its QuestionnaireResponse -> a score Observation.

Follows the synthesis in the team's peer survey (section 2.4): one Observation per scored
response, the total as ``valueQuantity`` (UCUM ``{score}``), every other scale of the mapping (the
WAI-SR subscales, the SRS-family line values) as a ``component`` named by the scale's code,
``derivedFrom`` the versioned response, ``focus`` the practitioner the alliance is with,
``method`` naming the algorithm version, and a deterministic ``identifier`` so that writes
can be idempotent (conditional create/update on that identifier).

Observations are built as plain dicts on the hot path; :func:`validate_observation` runs the
full fhir.resources model when a caller wants proof. What depends only on the mapping (codes,
reference ranges, method, interpretations) is prepared once per scale, mapping or flag, and
every Observation still gets containers of its own: a caller may edit one freely.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from .._cache import IdentityCache
from .._ids import (
    FOCUS_EXTENSION,
    IDENTIFIER_SYSTEM,
    INSTANTIATES,
    MEASURE_CATEGORY,
    PROJECT_CODESYSTEM,
    SURVEY_CATEGORY,
)
from .._json import dumps
from .._refs import ONE_SERVER, References
from .._security import NO_LABELS, SecurityLabels, with_labels
from ..fhirtypes import plain_resource
from ..instruments.codings import method_coding, score_quantity
from ..instruments.models import Band, Cutoff, InstrumentMapping, ScaleSpec
from .results import ScaleScore, ScoreResult

__all__ = [
    "ALGORITHM_SYSTEM",
    "build_observation",
    "observation_json",
    "collection_bundle",
    "observation_identifier",
    "observation_identifier_for",
]

ALGORITHM_SYSTEM = PROJECT_CODESYSTEM
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, IDENTIFIER_SYSTEM)
_NAMESPACE_BYTES = _NAMESPACE.bytes
_NAMESPACE_SHA1 = hashlib.sha1(_NAMESPACE_BYTES)  # copied per identifier, never re-fed the namespace
# Coding leaves (strings only). Prepared parts are never handed out: builders copy them.


def response_key(response: dict[str, Any]) -> str:
    """The identity of a response, stable across its versions (amendments keep it).

    Server id first; then a business identifier; as a last resort (a file with neither) a
    hash of its content, which then changes when the content does.
    """
    rid = response.get("id")
    if isinstance(rid, str) and rid:
        return f"QuestionnaireResponse/{rid}"
    ident = response.get("identifier")
    if isinstance(ident, dict) and ident.get("value"):
        return f"identifier:{ident.get('system', '')}|{ident['value']}"
    # default=str: Decimal input
    digest = hashlib.sha256(json.dumps(response, sort_keys=True, default=str).encode()).hexdigest()
    return f"content:{digest}"


def observation_identifier(response: dict[str, Any] | BaseModel, result: ScoreResult) -> dict[str, str]:
    """Deterministic identifier: same response + same instrument + same algorithm version."""
    return {"system": IDENTIFIER_SYSTEM, "value": observation_identifier_for(plain_resource(response), result.mapping)}


def observation_identifier_for(response: dict[str, Any], mapping: InstrumentMapping) -> str:
    """The identifier value alone, computable without scoring (to find or retract an Observation)."""
    return _uuid5(response_key(response), _templates(mapping).identifier_suffix)


def _uuid5(key: str, suffix: bytes) -> str:
    """``str(uuid.uuid5(_NAMESPACE, key + suffix))`` without a UUID object or re-hashing the namespace."""
    sha = _NAMESPACE_SHA1.copy()
    sha.update(key.encode())
    sha.update(suffix)
    digest = bytearray(sha.digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def build_observation(
    result: ScoreResult,
    response: dict[str, Any] | BaseModel,
    *,
    security: SecurityLabels = NO_LABELS,
    references: References = ONE_SERVER,
) -> dict[str, Any]:
    """The score Observation (R4 JSON) for one scored response (a dict or a fhir.resources model).

    ``security``: the ``meta.security`` labels to carry (none by default, and then the
    Observation has no ``meta`` at all). ``references``: how the subject, encounter, focus,
    performer and derivedFrom name the source's resources (as found by default; absolute on the
    source when the Observation goes to a results store beside it). The identifier never depends on it.
    """
    return with_labels(_observation(result, plain_resource(response), references), security)


def _observation(result: ScoreResult, response: dict[str, Any], refs: References) -> dict[str, Any]:
    mapping = result.mapping
    total = result.total
    parts, total_parts = _mapping_parts(mapping), _scale_parts(total.scale)
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "extension": [{"url": INSTANTIATES, "valueCanonical": mapping.questionnaire}],
        "identifier": [observation_identifier(response, result)],
        "status": "amended" if result.status == "amended" else "final",
        "category": [{"coding": [SURVEY_CATEGORY.copy()]}, {"coding": [parts.category.copy()]}],
        "code": _concept(total_parts),
    }
    for key in ("subject", "encounter"):
        if isinstance(response.get(key), dict):
            obs[key] = _copied(refs.value(response[key]))
    focus = _focus_reference(response)
    if focus:
        obs["focus"] = [_copied(refs.value(focus))]
    if isinstance(response.get("authored"), str):
        obs["effectiveDateTime"] = response["authored"]
    if isinstance(response.get("author"), dict):
        obs["performer"] = [_copied(refs.value(response["author"]))]
    obs["valueQuantity"] = score_quantity(total.value)
    if total.flags:
        obs["interpretation"] = _interpretation(total.flags)
    notes = _notes(result, parts)
    if notes:
        obs["note"] = notes
    obs["method"] = {"coding": [parts.method_coding.copy()], "text": parts.method_text}
    obs["derivedFrom"] = [_response_reference(response, refs)]
    obs["referenceRange"] = _reference_ranges(total_parts)
    components = [_component(score) for score in result.scores[1:]]
    if components:
        obs["component"] = components
    return obs


def observation_json(
    result: ScoreResult,
    response: dict[str, Any],
    *,
    security: SecurityLabels = NO_LABELS,
    references: References = ONE_SERVER,
) -> bytes:
    """:func:`build_observation` as compact JSON bytes, equal to ``_json.dumps(build_observation(...))``, made faster.

    The parts that are the same for every response of an instrument (code, category, method,
    reference ranges) are serialised once per mapping, and each scale outcome (value, flags,
    ranges; :class:`ScaleScore` objects are shared between responses) once per outcome; only
    the response's own parts (identifier, references, date, notes) are serialised per call.
    """
    mapping, total = result.mapping, result.total
    t = _templates(mapping)
    status = b'"amended"' if result.status == "amended" else b'"final"'
    head = [_OPEN, security.meta_json(), t.head] if security else [_OPEN, t.head]
    out = [*head, _uuid5(response_key(response), t.identifier_suffix).encode(), b'"}],"status":', status, t.code]
    for key in ("subject", "encounter"):
        value = response.get(key)
        if isinstance(value, dict):
            out += (_KEY[key], _value(references.value(value)))
    focus = _focus_reference(response)
    if focus is not None:
        out += (b',"focus":[', _value(references.value(focus)), b"]")
    authored = response.get("authored")
    if isinstance(authored, str):
        out += (b',"effectiveDateTime":', dumps(authored))
    author = response.get("author")
    if isinstance(author, dict):
        out += (b',"performer":[', _value(references.value(author)), b"]")
    out.append(_total_json(total))
    notes = _notes(result, _mapping_parts(mapping))
    if notes:
        out += (b',"note":', dumps(notes))
    out += (t.method, b',"derivedFrom":[', dumps(_response_reference(response, references)), b"]", t.reference_range)
    if len(result.scores) > 1:
        out += (b',"component":[', b",".join([_component_json(score) for score in result.scores[1:]]), b"]")
    out.append(b"}")
    return b"".join(out)


def collection_bundle(observations: list[dict[str, Any]]) -> dict[str, Any]:
    """A FHIR ``collection`` Bundle whose fullUrls are the Observations' identifier UUIDs."""
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:{o['identifier'][0]['value']}", "resource": o} for o in observations],
    }


def _notes(result: ScoreResult, parts: _MappingParts) -> list[dict[str, str]]:
    if not (result.rules_applied or result.omitted or parts.verification or result.total.flags):
        return []
    texts = list(result.rules_applied)
    for flag in result.total.flags:
        if isinstance(flag, Cutoff) and flag.boundary_note:
            texts.append(flag.boundary_note)
    if parts.verification:
        texts.append(parts.verification)
    texts += [f"{name} not reported: missing answers" for name in result.omitted]
    return [{"text": t} for t in texts]


def _response_reference(response: dict[str, Any], refs: References) -> dict[str, str]:
    rid = response.get("id")
    if not (isinstance(rid, str) and rid):
        return {"display": "QuestionnaireResponse without a server id"}
    version = (response.get("meta") or {}).get("versionId")
    ref = f"QuestionnaireResponse/{rid}" + (f"/_history/{version}" if isinstance(version, str) and version else "")
    return {"reference": refs.text(ref)}


def _focus_reference(response: dict[str, Any]) -> dict[str, Any] | None:
    """The practitioner the alliance is with (our focus extension's Reference), as found in the response."""
    for ext in response.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == FOCUS_EXTENSION and isinstance(ext.get("valueReference"), dict):
            return ext["valueReference"]  # type: ignore[no-any-return]
    return None


def _component(score: ScaleScore) -> dict[str, Any]:
    parts = _scale_parts(score.scale)
    component: dict[str, Any] = {"code": _concept(parts), "valueQuantity": score_quantity(score.value)}
    if score.flags:
        component["interpretation"] = _interpretation(score.flags)
    component["referenceRange"] = _reference_ranges(parts)
    return component


# Builders: fresh containers around prepared leaves (dicts of strings and numbers, copied).


def _concept(parts: _ScaleParts) -> dict[str, Any]:
    return {"coding": [coding.copy() for coding in parts.codings], "text": parts.text}


def _reference_ranges(parts: _ScaleParts) -> list[dict[str, Any]]:
    ranges: list[dict[str, Any]] = []
    for entry in parts.ranges:
        if entry.low is None or entry.high is None:
            ranges.append({"text": entry.text})
        elif entry.text_first:
            ranges.append({"text": entry.text, "low": entry.low.copy(), "high": entry.high.copy()})
        else:
            ranges.append({"low": entry.low.copy(), "high": entry.high.copy(), "text": entry.text})
    return ranges


def _interpretation(flags: tuple[Cutoff | Band, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for flag in flags:
        parts = _flag_parts(flag)
        if parts.codings is None:
            out.append({"text": parts.text})
        else:
            out.append({"coding": [coding.copy() for coding in parts.codings], "text": parts.text})
    return out


# Prepared once per mapping, scale or flag (see IdentityCache), from the frozen mapping models.


@dataclass(frozen=True, slots=True)
class _MappingParts:
    """The mapping's share of every Observation: measure category, method, verification note."""

    category: dict[str, str]
    method_coding: dict[str, str]
    method_text: str
    verification: str | None


@dataclass(frozen=True, slots=True)
class _RangeParts:
    """One referenceRange entry: its text and, for a range, the low and high Quantities."""

    text: str
    low: dict[str, Any] | None = None
    high: dict[str, Any] | None = None
    text_first: bool = False  # the instrument range names its bounds first, a cutoff band its text


@dataclass(frozen=True, slots=True)
class _ScaleParts:
    """A scale's share of an Observation or component: code and reference ranges."""

    codings: tuple[dict[str, Any], ...]
    text: str
    ranges: tuple[_RangeParts, ...]


@dataclass(frozen=True, slots=True)
class _FlagParts:
    """An interpretation entry: Codings and text for a cutoff, text alone (codings None) for a band."""

    codings: tuple[dict[str, Any], ...] | None
    text: str


def _prepare_mapping(mapping: InstrumentMapping) -> _MappingParts:
    total = mapping.total
    parts = [f"{mapping.name} scoring algorithm {mapping.algorithm_version} (alliance-fhir)"]
    parts.append(f"{total.aggregation} of {len(total.items)} items")
    if total.reverse_items:
        parts.append(f"items {', '.join(total.reverse_items)} reverse-scored")
    parts.append(
        f"missing data: {total.missing.rule}, min {total.missing.min_answered} answered ({total.missing.source})"
    )
    if mapping.aggregation_note:
        parts.append(mapping.aggregation_note)
    coding = method_coding(mapping)
    unconfirmed = mapping.verification == "labels-unconfirmed" and mapping.verification_note
    verification = f"Verification: labels-unconfirmed. {mapping.verification_note}" if unconfirmed else None
    return _MappingParts(MEASURE_CATEGORY[mapping.measures], coding, "; ".join(parts), verification)


def _prepare_scale(scale: ScaleSpec) -> _ScaleParts:
    high = _bound(scale.range.max)
    ranges = [
        _RangeParts(
            f"Possible range {scale.range.min:g}-{scale.range.max:g} (higher is better)", _bound(scale.range.min), high
        )
    ]
    for cut in scale.cutoffs:
        text = f"Cutoff {cut.threshold:g} [{cut.confidence}]: {cut.label}"
        ranges.append(
            _RangeParts(text, _bound(cut.threshold), high, text_first=True)
            if cut.operator == "<"
            else _RangeParts(text)
        )
    codings = tuple(c.model_dump(exclude_none=True) for c in scale.codes)
    return _ScaleParts(codings, scale.codes[0].display or scale.title, tuple(ranges))


def _prepare_flag(flag: Cutoff | Band) -> _FlagParts:
    if isinstance(flag, Cutoff):
        rule = f"total {'<' if flag.operator == '<' else '<='} {flag.threshold:g}"
        return _FlagParts(
            tuple(c.model_dump(exclude_none=True) for c in flag.interpretation), f"{flag.label} (rule applied: {rule})"
        )
    return _FlagParts(None, f"{flag.label} ({flag.min:g}-{flag.max:g}; {flag.source})")


def _bound(number: float) -> dict[str, Any]:
    return score_quantity(Decimal(str(number)).normalize())


_mapping_parts: IdentityCache[InstrumentMapping, _MappingParts] = IdentityCache(_prepare_mapping)
_scale_parts: IdentityCache[ScaleSpec, _ScaleParts] = IdentityCache(_prepare_scale)
_flag_parts: IdentityCache[Cutoff | Band, _FlagParts] = IdentityCache(_prepare_flag)


# Serialised once (observation_json): per mapping, and per scale outcome.

_KEY = {"subject": b',"subject":', "encounter": b',"encounter":'}
_OPEN = b'{"resourceType":"Observation"'  # then meta (labels, when any), then the template's head


@dataclass(frozen=True, slots=True)
class _Templates:
    """A mapping's constant parts of an Observation, as JSON bytes, in the order build_observation writes them."""

    head: bytes  # from the extension (after resourceType and meta) to the identifier value's opening quote
    identifier_suffix: bytes  # what follows the response key in the identifier's uuid5 name
    code: bytes  # category and code
    method: bytes
    reference_range: bytes


def _prepare_templates(mapping: InstrumentMapping) -> _Templates:
    parts, total_parts = _mapping_parts(mapping), _scale_parts(mapping.total)
    extension = dumps([{"url": INSTANTIATES, "valueCanonical": mapping.questionnaire}])
    head = b',"extension":' + extension + b',"identifier":[{"system":' + dumps(IDENTIFIER_SYSTEM) + b',"value":"'
    category = dumps([{"coding": [SURVEY_CATEGORY]}, {"coding": [parts.category]}])
    code = b',"category":' + category + b',"code":' + dumps(_concept(total_parts))
    method = b',"method":' + dumps({"coding": [parts.method_coding], "text": parts.method_text})
    reference_range = b',"referenceRange":' + dumps(_reference_ranges(total_parts))
    return _Templates(head, f"|{mapping.url}|{mapping.algorithm_version}".encode(), code, method, reference_range)


def _prepare_total(score: ScaleScore) -> bytes:
    out = b',"valueQuantity":' + dumps(score_quantity(score.value))
    return out + b',"interpretation":' + dumps(_interpretation(score.flags)) if score.flags else out


def _value(value: Any) -> bytes:
    """A JSON value taken from the response; Decimal numbers (a caller's parse_float=Decimal) as plain numbers."""
    try:
        return dumps(value)
    except TypeError:
        return dumps(_copied(value))


_templates: IdentityCache[InstrumentMapping, _Templates] = IdentityCache(_prepare_templates)
_total_json: IdentityCache[ScaleScore, bytes] = IdentityCache(_prepare_total, limit=1 << 16)
_component_json: IdentityCache[ScaleScore, bytes] = IdentityCache(lambda score: dumps(_component(score)), limit=1 << 16)


def _copied(value: Any) -> Any:
    """A copy of a JSON value taken from the response, so editing the Observation never edits the response.

    Numbers parsed as ``Decimal`` become plain JSON numbers, so the Observation serialises with
    any JSON library. Depth is bounded by the scorer (``engine.MAX_JSON_DEPTH``).
    """
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copied(v) for v in value]
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value
