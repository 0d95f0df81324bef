"""Scoring one partition of QuestionnaireResponse JSON: the pure part of the Spark adapter (no pyspark here).

Each input line goes the way ``alliance-fhir score --format ndjson`` takes it (the same parser,
the same scorer, the same Observation bytes), so a DataFrame scored on Spark and a file scored
by the CLI agree byte for byte. A line that cannot be scored gives one error (the one-line
reason, naming the response) instead of stopping the partition.

The flat score rows have the columns of our ``alliance_scores`` ViewDefinition (``content/views``)
except ``observation_id``, which only a server assigns: a data team gets the same table whether
it scores QuestionnaireResponses itself or runs the view over Observations exported from a server.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .._ids import IDENTIFIER_SYSTEM, INSTANTIATES, PROJECT_CODESYSTEM
from ..errors import AllianceFhirError, InputError
from ..instruments.catalog import Catalog
from ..scoring.engine import score_response
from ..scoring.inputs import parse_raw
from ..scoring.observations import build_observation, observation_json

__all__ = ["SCORE_ROW_COLUMNS", "Scored", "score_lines", "score_rows_of"]

SCORE_ROW_COLUMNS = (
    "identifier",
    "patient",
    "encounter",
    "therapist_focus",
    "instrument",
    "questionnaire_response",
    "effective_time",
    "status",
    "method_version",
    "scale",
    "scale_kind",
    "value",
    "interpretation",
)
"""The flat score row: ``alliance_scores``'s columns, in its order, without ``observation_id``."""

Scored = tuple[bytes | None, dict[str, Any] | None, str | None]
"""(Observation JSON, the Observation as a dict when asked for, error line): exactly one of JSON and error is set."""


def score_lines(lines: Iterable[str | bytes | None], catalog: Catalog, *, as_dict: bool = False) -> Iterator[Scored]:
    """Score each line (one QuestionnaireResponse JSON) as the CLI's NDJSON path does; one result per line."""
    for n, line in enumerate(lines):
        if line is None:
            yield None, None, f"row {n} of the partition: no JSON (null)"
            continue
        data = line.encode() if isinstance(line, str) else line
        records = list(parse_raw(("row", data, True)))
        if len(records) != 1:
            yield None, None, f"row {n} of the partition: not one JSON value"
            continue
        _, doc = records[0]
        try:
            if isinstance(doc, InputError):
                raise doc
            result = score_response(doc, catalog)
        except AllianceFhirError as exc:
            yield None, None, str(exc)
            continue
        yield observation_json(result, doc), (build_observation(result, doc) if as_dict else None), None


def score_rows_of(observation: dict[str, Any]) -> list[tuple[Any, ...]]:
    """One row per score of a score Observation (total, then each subscale), as ``alliance_scores`` gives them."""
    head = (
        _first(observation.get("identifier"), "system", IDENTIFIER_SYSTEM, "value"),
        _reference(observation.get("subject")),
        _reference(observation.get("encounter")),
        _reference(_only(observation.get("focus"))),
        _first(observation.get("extension"), "url", INSTANTIATES, "valueCanonical"),
        _reference(_only(observation.get("derivedFrom"))),
        observation.get("effectiveDateTime"),
        observation.get("status"),
        _first((observation.get("method") or {}).get("coding"), "system", PROJECT_CODESYSTEM, "version"),
    )
    rows = [head + _scale(observation, "total")]
    rows += [head + _scale(component, "subscale") for component in observation.get("component") or []]
    return rows


def _scale(part: dict[str, Any], kind: str) -> tuple[Any, ...]:
    code = _first((part.get("code") or {}).get("coding"), "system", PROJECT_CODESYSTEM, "code")
    value = (part.get("valueQuantity") or {}).get("value")
    flag = _only(_only(part.get("interpretation")) and _only(part["interpretation"]).get("coding"))
    return code, kind, None if value is None else float(value), flag.get("code") if flag else None


def _first(items: Any, key: str, wanted: str, field: str) -> Any:
    for item in items or []:
        if isinstance(item, dict) and item.get(key) == wanted:
            return item.get(field)
    return None


def _only(items: Any) -> Any:
    return items[0] if isinstance(items, list) and items else None


def _reference(ref: Any) -> str | None:
    return ref.get("reference") if isinstance(ref, dict) else None
