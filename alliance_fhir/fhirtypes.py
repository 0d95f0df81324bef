"""The only importer of fhir.resources: full-model validation at the edges (and the one
definition of what a server manages in a resource, :func:`comparable`).

fhir.resources has no R4 package; R4B is the closest and accepts R4 JSON for the resources
we use (Questionnaire, QuestionnaireResponse, Observation, CodeSystem, Bundle). Validation
costs about a millisecond per resource, so it is used where a full model earns its cost
(content we publish, tests, ``--validate``), never on the scoring hot path.
"""

from __future__ import annotations

import json
import re
from importlib import import_module
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import FhirValidationError, summarise_validation

__all__ = ["FHIR_ID_RULE", "comparable", "is_fhir_id", "plain_resource", "validate_resource"]

_SERVER_MANAGED = ("id", "meta", "text")
FHIR_ID_RULE = "[A-Za-z0-9-.]{1,64}"
"""FHIR R4's logical id (the ``id`` datatype), as error messages name it."""
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")

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


def is_fhir_id(value: Any) -> bool:
    """Whether ``value`` is a FHIR logical id: 1-64 letters, digits, ``-`` and ``.``.

    A server's ids become ledger keys, references and message text: one without an id cannot be
    told apart from another, and one with a newline, a ``/`` or ten million characters would
    forge log lines, break references or fill the ledger. Checked on length first, so a huge
    value costs nothing.
    """
    return isinstance(value, str) and len(value) <= 64 and _FHIR_ID.fullmatch(value) is not None


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
