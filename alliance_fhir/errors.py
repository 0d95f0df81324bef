"""The single exception tree of alliance-fhir.

Every error that crosses the public API is an :class:`AllianceFhirError`, so callers
(and the CLI) can catch one class and still tell the cases apart::

    AllianceFhirError
    ├── InstrumentError        an instrument's Questionnaire/mapping pair is unusable
    │   └── TextPackError      a text pack does not fit its Questionnaire
    ├── InputError             an input file or stream cannot be read as JSON/NDJSON
    ├── ScoringError           one QuestionnaireResponse cannot be scored (names resource, item, reason)
    ├── FhirValidationError    a resource fails the FHIR (R4B) model
    ├── ConfigError            server settings or secrets are missing or invalid
    ├── FhirTransportError     no usable HTTP answer (connection refused, timeout, TLS)
    ├── FhirServerError        the server answered with an error status (keeps the OperationOutcome)
    │   ├── AuthError          401/403, or the token endpoint refused us
    │   ├── UnexpectedResponse a 2xx answer we cannot trust (wrong shape, loop, too large, not R4)
    │   ├── NotFound           404/410
    │   └── Conflict           409/412
    ├── StateError             the local sync-state database cannot be used
    └── CdsAuthError           a CDS Hooks request's JWT is refused (the service answers 401)

This module imports nothing from the package, so every other module can use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: this module imports nothing at run time
    from collections.abc import Mapping

    from pydantic import ValidationError

__all__ = [
    "AllianceFhirError",
    "AuthError",
    "CdsAuthError",
    "ConfigError",
    "Conflict",
    "FhirServerError",
    "FhirTransportError",
    "FhirValidationError",
    "InputError",
    "InstrumentError",
    "NotFound",
    "ScoringError",
    "StateError",
    "TextPackError",
    "UnexpectedResponse",
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


class ConfigError(AllianceFhirError):
    """Server settings or secrets are missing or invalid (CLI exit code 2)."""


class StateError(AllianceFhirError):
    """The local sync-state database cannot be opened or written."""


class CdsAuthError(AllianceFhirError):
    """A CDS Hooks request's JWT is refused; the message is for the log and names no patient."""


class FhirTransportError(AllianceFhirError):
    """No usable HTTP answer: connection refused or dropped, timeout, TLS failure."""

    def __init__(self, method: str, path: str, reason: str) -> None:
        self.method = method
        self.path = path
        super().__init__(f"{method} {path}: {reason}")


class FhirServerError(AllianceFhirError):
    """The FHIR server answered with an error status; keeps the OperationOutcome as evidence.

    The message names the method, the path (never query values, which may hold patient
    data), the status and the OperationOutcome's diagnostics.
    """

    def __init__(self, method: str, path: str, status: int, outcome: dict[str, Any] | None = None) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.outcome = outcome
        super().__init__(f"{method} {path}: HTTP {status}" + (f": {summarise_outcome(outcome)}" if outcome else ""))


class AuthError(FhirServerError):
    """401/403 from the server, or the token endpoint refused our credentials."""


class UnexpectedResponse(FhirServerError):
    """The server answered, but not with what FHIR promises: never trusted, never retried.

    A search that is not a searchset Bundle, a paging loop, a body over the size limit, a
    transaction-response that does not account for every entry, a server that is not R4.
    """

    def __init__(self, method: str, path: str, status: int, reason: str) -> None:
        self.reason = reason
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "invalid", "diagnostics": reason}],
        }
        super().__init__(method, path, status, outcome)


class NotFound(FhirServerError):
    """404/410: the resource or endpoint does not exist (or was deleted)."""


class Conflict(FhirServerError):
    """409/412: a version conflict or a conditional operation matched more than one resource."""


def summarise_outcome(outcome: dict[str, Any]) -> str:
    """One line from an OperationOutcome: each issue's severity and diagnostics (or details)."""
    parts = []
    for issue in outcome.get("issue") or []:
        if isinstance(issue, dict):
            text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code", "")
            parts.append(f"{issue.get('severity', '?')}: {text}")
    return "; ".join(parts)[:500] or "(no diagnostics)"


def summarise_validation(
    exc: ValidationError,
    limit: int | None = None,
    *,
    sources: Mapping[tuple[str, ...], str] | None = None,
    prefix: str = "",
) -> str:
    """One line from a pydantic ValidationError: ``field.path: message`` per error (``(top)`` for
    the document itself), the first ``limit`` of them when given.

    For settings, ``sources`` says where each value came from (by its location, or that of the
    table or field holding it), and each error is blamed on it: ``timeout: ... (from environment
    ALLIANCE_FHIR_TIMEOUT)``; an unknown key reads ``unknown setting``, and ``prefix`` (a table
    name) goes before each field. The input values are never shown (some are secrets).
    """
    errors = exc.errors()[:limit] if limit is not None else exc.errors()
    if sources is None:
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in errors)
    return "; ".join(_blame(dict(e), sources, prefix) for e in errors)


def _blame(error: dict[str, Any], sources: Mapping[tuple[str, ...], str], prefix: str) -> str:
    loc = tuple(str(part) for part in error["loc"])
    name = ".".join((prefix, *loc) if prefix else loc) or "(top)"
    where = sources.get(loc) or sources.get(loc[:1])
    message = (
        "unknown setting" if error.get("type") == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
    )
    return f"{name}: {message}" + (f" (from {where})" if where else "")
