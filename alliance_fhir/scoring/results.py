"""What scoring one QuestionnaireResponse yields, before any FHIR output: the scale scores and how
they came about. Built by :mod:`.engine`, turned into an Observation by :mod:`.observations`.

These live in ``scoring/`` (not with the mapping models in ``instruments/``): the mapping is the
data contract every sibling reads; a result is scoring's output, and only what sits above scoring
(server, cli) needs it. Plain frozen dataclasses rather than pydantic models: they are built on
the hot path, tens of thousands per second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from ..instruments.models import Band, Cutoff, InstrumentMapping, ScaleSpec

__all__ = ["ScaleScore", "ScoreResult"]


@dataclass(frozen=True, slots=True)
class ScaleScore:
    """One computed scale score and how it came about."""

    scale: ScaleSpec
    value: Decimal
    answered: int
    prorated: bool
    flags: tuple[Cutoff | Band, ...] = ()


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """Everything known after scoring one QuestionnaireResponse (no FHIR output yet)."""

    response_ref: str
    mapping: InstrumentMapping
    status: str
    scores: tuple[ScaleScore, ...]
    answered: int
    item_count: int
    rules_applied: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    omitted: tuple[str, ...] = field(default=())

    @property
    def instrument_id(self) -> str:
        return self.mapping.instrument

    @property
    def questionnaire(self) -> str:
        return self.mapping.questionnaire

    @property
    def algorithm_version(self) -> str:
        return self.mapping.algorithm_version

    @property
    def total(self) -> ScaleScore:
        """The headline score (always present: without it scoring fails)."""
        return self.scores[0]
