"""The single exception tree of alliance-fhir.

Every error that crosses the public API is an :class:`AllianceFhirError`, so callers
(and the CLI) can catch one class and still tell the cases apart::

    AllianceFhirError
    ├── InstrumentError        an instrument's Questionnaire/mapping pair is unusable
    │   └── TextPackError      a text pack does not fit its Questionnaire
    ├── InputError             an input file or stream cannot be read as JSON/NDJSON
    ├── ScoringError           one QuestionnaireResponse cannot be scored (names resource, item, reason)
    └── FhirValidationError    a resource fails the FHIR (R4B) model

This module imports nothing from the package, so every other module can use it.
"""

from __future__ import annotations

__all__ = [
    "AllianceFhirError",
    "FhirValidationError",
    "InputError",
    "InstrumentError",
    "ScoringError",
    "TextPackError",
]


class AllianceFhirError(Exception):
    """Base class of every error alliance-fhir raises on purpose."""


class InstrumentError(AllianceFhirError):
    """An instrument (Questionnaire + mapping) is missing, malformed or inconsistent."""


class TextPackError(InstrumentError):
    """A text pack is malformed, names an unknown instrument, or misses or invents linkIds."""


class InputError(AllianceFhirError):
    """An input (file, NDJSON line, stdin) is not readable JSON; ``source`` says where."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class ScoringError(AllianceFhirError):
    """One QuestionnaireResponse cannot be scored.

    The message always names the resource, the item (when one is at fault) and the reason,
    on one line, because operators read these in batch logs.
    """

    def __init__(self, resource: str, reason: str, link_id: str | None = None) -> None:
        self.resource = resource
        self.link_id = link_id
        self.reason = reason
        where = f"{resource}: item '{link_id}': " if link_id is not None else f"{resource}: "
        super().__init__(where + reason)


class FhirValidationError(AllianceFhirError):
    """A resource does not validate against the FHIR (R4B) model."""
