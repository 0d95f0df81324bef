"""The only importer of fhir.resources: full-model validation at the edges (and the one
definition of what a server manages in a resource, :func:`comparable`).

fhir.resources has no R4 package; R4B is the closest and accepts R4 JSON for the resources
we use (Questionnaire, QuestionnaireResponse, Observation, CodeSystem, Bundle). Validation
costs about a millisecond per resource, so it is used where a full model earns its cost
(content we publish, tests, ``--validate``), never on the scoring hot path.
"""

from __future__ import annotations

import json
from importlib import import_module
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import FhirValidationError, summarise_validation

__all__ = ["comparable", "plain_resource", "validate_resource"]

_SERVER_MANAGED = ("id", "meta", "text")

_MODULES = {
    "Bundle": "bundle",
    "CodeSystem": "codesystem",
    "DetectedIssue": "detectedissue",
    "Device": "device",
    "Observation": "observation",
    "Questionnaire": "questionnaire",
    "QuestionnaireResponse": "questionnaireresponse",
    "Task": "task",
}


def validate_resource(resource: dict[str, Any]) -> None:
    """Validate a resource with fhir.resources (R4B).

    Raises:
        FhirValidationError: unknown resource type or the model rejects it; the message lists
            each failing element path.
    """
    rtype = resource.get("resourceType")
    if rtype not in _MODULES:
        raise FhirValidationError(f"cannot validate resource type {rtype!r}")
    model = getattr(import_module(f"fhir.resources.R4B.{_MODULES[rtype]}"), rtype)
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        raise FhirValidationError(f"{rtype} is not valid FHIR: {summarise_validation(exc, limit=5)}") from exc


def comparable(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource without what the server manages (id, meta, narrative): two resources whose
    ``comparable`` forms are equal need no write (publish, signal sync)."""
    return {k: v for k, v in resource.items() if k not in _SERVER_MANAGED}


def plain_resource(resource: Any) -> Any:
    """A fhir.resources model (R4B, or any pydantic FHIR model) as the FHIR JSON it stands for;
    anything else unchanged.

    Through ``model_dump_json``, which writes FHIR's own JSON: ``model_dump()`` would give Python
    ``datetime`` objects where FHIR has strings (``authored`` would be lost from the Observation)
    and snake_case where a name is a Python keyword.
    """
    if isinstance(resource, BaseModel):
        return json.loads(resource.model_dump_json())
    return resource
