"""The FHIR mapping: a :class:`ScoreResult` and its QuestionnaireResponse -> a score Observation.

Follows the synthesis in the team's peer survey (section 2.4): one Observation per scored
response, the total as ``valueQuantity`` (UCUM ``{score}``), subscales as ``component``s,
``derivedFrom`` the versioned response, ``focus`` the practitioner the alliance is with,
``method`` naming the algorithm version, and a deterministic ``identifier`` so that writes
can be idempotent (conditional create/update on that identifier).

Observations are built as plain dicts on the hot path; :func:`validate_observation` runs the
full fhir.resources model when a caller wants proof.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from decimal import Decimal
from typing import Any

from .models import Band, Cutoff, InstrumentMapping, ScaleScore, ScaleSpec, ScoreResult

__all__ = [
    "ALGORITHM_SYSTEM",
    "FOCUS_EXTENSION",
    "IDENTIFIER_SYSTEM",
    "PROJECT_CODESYSTEM",
    "build_observation",
    "collection_bundle",
    "observation_identifier",
    "observation_identifier_for",
]

PROJECT_BASE = "http://alliance-fhir.org/fhir"
PROJECT_CODESYSTEM = f"{PROJECT_BASE}/CodeSystem/alliance-fhir"
ALGORITHM_SYSTEM = PROJECT_CODESYSTEM
IDENTIFIER_SYSTEM = f"{PROJECT_BASE}/sid/score-observation"
FOCUS_EXTENSION = f"{PROJECT_BASE}/StructureDefinition/alliance-focus"
INSTANTIATES = "http://hl7.org/fhir/StructureDefinition/workflow-instantiatesCanonical"
UCUM = "http://unitsofmeasure.org"
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, IDENTIFIER_SYSTEM)
_SURVEY = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey", "display": "Survey"}
    ]
}
_MEASURE_CATEGORY = {
    "alliance": {"coding": [{"system": PROJECT_CODESYSTEM, "code": "therapeutic-alliance", "display": "Therapeutic alliance"}]},
    "outcome": {"coding": [{"system": PROJECT_CODESYSTEM, "code": "treatment-outcome", "display": "Treatment outcome"}]},
}


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
    digest = hashlib.sha256(json.dumps(response, sort_keys=True).encode()).hexdigest()
    return f"content:{digest}"


def observation_identifier(response: dict[str, Any], result: ScoreResult) -> dict[str, str]:
    """Deterministic identifier: same response + same instrument + same algorithm version."""
    return {"system": IDENTIFIER_SYSTEM, "value": observation_identifier_for(response, result.mapping)}


def observation_identifier_for(response: dict[str, Any], mapping: InstrumentMapping) -> str:
    """The identifier value alone, computable without scoring (to find or retract an Observation)."""
    name = f"{response_key(response)}|{mapping.url}|{mapping.algorithm_version}"
    return str(uuid.uuid5(_NAMESPACE, name))


def build_observation(result: ScoreResult, response: dict[str, Any]) -> dict[str, Any]:
    """The score Observation (R4 JSON) for one scored response."""
    mapping = result.mapping
    total = result.total
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "extension": [{"url": INSTANTIATES, "valueCanonical": mapping.questionnaire}],
        "identifier": [observation_identifier(response, result)],
        "status": "amended" if result.status == "amended" else "final",
        "category": [_SURVEY, _MEASURE_CATEGORY[mapping.measures]],
        "code": _concept(total.scale),
    }
    for key in ("subject", "encounter"):
        if isinstance(response.get(key), dict):
            obs[key] = response[key]
    focus = _focus(response)
    if focus:
        obs["focus"] = [focus]
    if isinstance(response.get("authored"), str):
        obs["effectiveDateTime"] = response["authored"]
    if isinstance(response.get("author"), dict):
        obs["performer"] = [response["author"]]
    obs["valueQuantity"] = _quantity(total.value)
    interpretation = _interpretation(total.flags)
    if interpretation:
        obs["interpretation"] = interpretation
    notes = _notes(result)
    if notes:
        obs["note"] = notes
    obs["method"] = _method(result)
    obs["derivedFrom"] = [_response_reference(response)]
    obs["referenceRange"] = _reference_ranges(total.scale)
    components = [_component(score) for score in result.scores[1:]]
    if components:
        obs["component"] = components
    return obs


def collection_bundle(observations: list[dict[str, Any]]) -> dict[str, Any]:
    """A FHIR ``collection`` Bundle whose fullUrls are the Observations' identifier UUIDs."""
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:{o['identifier'][0]['value']}", "resource": o} for o in observations],
    }


def _concept(scale: ScaleSpec) -> dict[str, Any]:
    codings = [c.model_dump(exclude_none=True) for c in scale.codes]
    return {"coding": codings, "text": scale.codes[0].display or scale.title}


def _quantity(value: Decimal) -> dict[str, Any]:
    exponent = value.as_tuple().exponent
    is_whole = isinstance(exponent, int) and exponent >= 0  # '46' stays 46; '46.0' (prorated) stays 46.0
    number: int | float = int(value) if is_whole else float(value)
    return {"value": number, "unit": "{score}", "system": UCUM, "code": "{score}"}


def _interpretation(flags: tuple[Cutoff | Band, ...]) -> list[dict[str, Any]]:
    out = []
    for flag in flags:
        if isinstance(flag, Cutoff):
            rule = f"total {'<' if flag.operator == '<' else '<='} {flag.threshold:g}"
            text = f"{flag.label} (rule applied: {rule})"
            out.append({"coding": [c.model_dump(exclude_none=True) for c in flag.interpretation], "text": text})
        else:
            out.append({"text": f"{flag.label} ({flag.min:g}-{flag.max:g}; {flag.source})"})
    return out


def _notes(result: ScoreResult) -> list[dict[str, str]]:
    texts = list(result.rules_applied)
    mapping = result.mapping
    for flag in result.total.flags:
        if isinstance(flag, Cutoff) and flag.boundary_note:
            texts.append(flag.boundary_note)
    if mapping.verification == "labels-unconfirmed" and mapping.verification_note:
        texts.append(f"Verification: labels-unconfirmed. {mapping.verification_note}")
    texts += [f"{name} not reported: missing answers" for name in result.omitted]
    return [{"text": t} for t in texts]


def _method(result: ScoreResult) -> dict[str, Any]:
    mapping = result.mapping
    total = mapping.total
    parts = [f"{mapping.name} scoring algorithm {mapping.algorithm_version} (alliance-fhir)"]
    parts.append(f"{total.aggregation} of {len(total.items)} items")
    if total.reverse_items:
        parts.append(f"items {', '.join(total.reverse_items)} reverse-scored")
    parts.append(f"missing data: {total.missing.rule}, min {total.missing.min_answered} answered ({total.missing.source})")
    if mapping.aggregation_note:
        parts.append(mapping.aggregation_note)
    coding = {
        "system": ALGORITHM_SYSTEM,
        "code": f"{mapping.instrument}-scoring",
        "version": mapping.algorithm_version,
        "display": f"{mapping.name} scoring algorithm",
    }
    return {"coding": [coding], "text": "; ".join(parts)}


def _response_reference(response: dict[str, Any]) -> dict[str, str]:
    rid = response.get("id")
    if not (isinstance(rid, str) and rid):
        return {"display": "QuestionnaireResponse without a server id"}
    version = (response.get("meta") or {}).get("versionId")
    ref = f"QuestionnaireResponse/{rid}" + (f"/_history/{version}" if isinstance(version, str) and version else "")
    return {"reference": ref}


def _focus(response: dict[str, Any]) -> dict[str, Any] | None:
    for ext in response.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == FOCUS_EXTENSION and isinstance(ext.get("valueReference"), dict):
            return ext["valueReference"]  # type: ignore[no-any-return]
    return None


def _reference_ranges(scale: ScaleSpec) -> list[dict[str, Any]]:
    ranges: list[dict[str, Any]] = [
        {
            "low": _quantity(Decimal(str(scale.range.min)).normalize()),
            "high": _quantity(Decimal(str(scale.range.max)).normalize()),
            "text": f"Possible range {scale.range.min:g}-{scale.range.max:g} (higher is better)",
        }
    ]
    for cut in scale.cutoffs:
        text = f"Cutoff {cut.threshold:g} [{cut.confidence}]: {cut.label}"
        entry: dict[str, Any] = {"text": text}
        if cut.operator == "<":
            entry["low"] = _quantity(Decimal(str(cut.threshold)).normalize())
            entry["high"] = _quantity(Decimal(str(scale.range.max)).normalize())
        ranges.append(entry)
    return ranges


def _component(score: ScaleScore) -> dict[str, Any]:
    component: dict[str, Any] = {"code": _concept(score.scale), "valueQuantity": _quantity(score.value)}
    interpretation = _interpretation(score.flags)
    if interpretation:
        component["interpretation"] = interpretation
    component["referenceRange"] = _reference_ranges(score.scale)
    return component
