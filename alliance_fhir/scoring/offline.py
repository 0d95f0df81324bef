"""Offline scoring of a batch: records in, one outcome per record out, errors included.

A batch never stops at a bad record: each failure becomes an outcome carrying its one-line
reason, so callers (the CLI, sync) report it and go on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .._security import NO_LABELS, SecurityLabels
from ..errors import AllianceFhirError, InputError
from ..instruments.catalog import Catalog
from .engine import score_response
from .inputs import Record
from .observations import build_observation
from .results import ScoreResult

__all__ = ["Outcome", "score_records"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one input record: a result and its Observation, or an error."""

    label: str
    result: ScoreResult | None = None
    observation: dict[str, Any] | None = None
    error: AllianceFhirError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def score_records(
    records: Iterable[Record], catalog: Catalog, *, security: SecurityLabels = NO_LABELS
) -> Iterator[Outcome]:
    """Score each record; a failing record yields an Outcome with ``error`` set.

    ``security``: the meta.security labels each Observation carries (none by default).
    """
    for label, doc in records:
        if isinstance(doc, InputError):
            yield Outcome(label, error=doc)
            continue
        try:
            result = score_response(doc, catalog)
        except AllianceFhirError as exc:
            yield Outcome(label, error=exc)
            continue
        yield Outcome(label, result=result, observation=build_observation(result, doc, security=security))
