"""Our own data models: the mapping-file schema and text packs (scoring results: :mod:`alliance_fhir.scoring.results`).

The mapping schema is the contract for everyone who adds an instrument, so it is strict
(unknown keys are rejected) and self-describing (``alliance-fhir instruments schema`` exports
it as JSON Schema for editors).
"""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AlliancePart",
    "Band",
    "CodingSpec",
    "Cutoff",
    "EarlyWarningRule",
    "GapRule",
    "InstrumentMapping",
    "ItemScale",
    "LowAllianceRule",
    "MissingRule",
    "ReliableChange",
    "RuptureRule",
    "ScaleRange",
    "ScaleSpec",
    "SignalsSpec",
    "SplitRule",
    "TextPack",
]

Confidence = Literal["C2", "C1", "U", "X"]


AlliancePart = Literal["goals", "tasks", "bond", "overall"]
"""Bordin's three parts of the working alliance (agreement on goals, agreement on tasks, the bond), plus an
overall rating (the SRS family's fourth line)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CodingSpec(_Strict):
    """A FHIR Coding written in snake_case-free FHIR form (system, code, display)."""

    system: str
    code: str
    display: str | None = None


class ScaleRange(_Strict):
    """Inclusive range of a score."""

    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> ScaleRange:
        if self.min > self.max:
            raise ValueError(f"range min {self.min} is above max {self.max}")
        return self


class ItemScale(_Strict):
    """The raw values every scored item takes: a Likert anchor set or a visual-analogue line."""

    kind: Literal["likert", "vas"]
    min: float
    max: float
    decimals: int = Field(default=0, ge=0, le=3, description="Decimal places an answer may carry (VAS: 1, to the mm).")


class MissingRule(_Strict):
    """How unanswered items are handled for one scale.

    ``source`` says whose rule it is: the instrument's authors, or a project decision that
    the Observation then states openly (the authors publish no rule for most instruments).
    """

    rule: Literal["all-required", "prorate"]
    min_answered: int = Field(ge=1)
    round_to: int = Field(default=1, ge=0, le=4, description="Decimals of a prorated score.")
    source: Literal["authors", "project decision"]
    note: str


class Cutoff(_Strict):
    """A published cutoff. Ship only those the reference tags C2, with their source."""

    id: str
    threshold: float
    operator: Literal["<", "<="] = Field(description="'<': below the threshold; '<=': at or below it.")
    label: str
    interpretation: list[CodingSpec] = Field(min_length=1)
    source: str
    confidence: Confidence
    boundary_note: str | None = None


class Band(_Strict):
    """A published score band (inclusive bounds)."""

    id: str
    min: float
    max: float
    label: str
    source: str
    confidence: Confidence


class ScaleSpec(_Strict):
    """One score of an instrument: a total, a subscale, or one line of the SRS family (a single-item
    scale kept so that a fall can be traced to its part of the alliance; the authors publish the
    lines' domains, not subscales)."""

    id: str
    title: str
    items: list[str] = Field(min_length=1)
    reverse_items: list[str] = Field(default_factory=list)
    aggregation: Literal["sum", "mean"]
    range: ScaleRange
    decimals: int = Field(default=0, ge=0, le=4)
    missing: MissingRule
    codes: list[CodingSpec] = Field(min_length=1, description="First: project code; then SNOMED CT etc.")
    cutoffs: list[Cutoff] = Field(default_factory=list)
    bands: list[Band] = Field(default_factory=list)
    questionnaire_item: str | None = Field(default=None, description="linkId of the read-only calculated score item.")
    part: AlliancePart | None = Field(
        default=None,
        description="The part of the alliance this scale measures, in Bordin's terms where the instrument maps to "
        "them (goals, tasks, bond) or 'overall'; cards name the part that fell most. None: not a part (a total).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ScaleSpec:
        if len(set(self.items)) != len(self.items):
            raise ValueError(f"scale '{self.id}' lists an item twice")
        stray = [i for i in self.reverse_items if i not in self.items]
        if stray:
            raise ValueError(f"scale '{self.id}': reverse items {stray} are not among its items")
        if self.missing.min_answered > len(self.items):
            raise ValueError(
                f"scale '{self.id}': min_answered {self.missing.min_answered} exceeds its {len(self.items)} items"
            )
        if self.missing.rule == "all-required" and self.missing.min_answered != len(self.items):
            raise ValueError(f"scale '{self.id}': rule all-required needs min_answered = {len(self.items)}")
        return self


class ReliableChange(_Strict):
    """A published reliable-change threshold (used by clinical signals)."""

    value: float = Field(gt=0)
    scale: str
    population: str | None = None
    source: str
    confidence: Confidence


SignalSource = Literal["authors", "project decision"]
Severity = Literal["high", "moderate", "low"]
DropOperator = Literal[">=", ">"]


class _SignalRule(_Strict):
    """Common to every signal rule: whose rule it is, why, and how severe a hit is.

    Alliance signals are mostly project decisions (the authors publish no numeric drop rule),
    so each rule says so itself and the emitted DetectedIssue repeats it.
    """

    scale: str = Field(default="total", description="id of the scale the rule reads (the total unless said otherwise).")
    severity: Severity = "moderate"
    source: SignalSource
    note: str

    # A rule with two optional thresholds needs at least one (with neither it could never fire):
    # (what the rule is called in the error, the two fields).
    either_threshold: ClassVar[tuple[str, str, str] | None] = None

    @model_validator(mode="after")
    def _has_threshold(self) -> Self:
        if self.either_threshold is not None:
            name, first, second = self.either_threshold
            if getattr(self, first) is None and getattr(self, second) is None:
                raise ValueError(f"a {name} rule needs {first} or {second}")
        return self


class LowAllianceRule(_SignalRule):
    """A score meets a published cutoff of the scale; threshold and operator come from that cutoff."""

    cutoff: str = Field(description="id of a cutoff on that scale; only a C2 cutoff is accepted.")


class RuptureRule(_SignalRule):
    """A drop from the previous score and/or from the client's running baseline (mean of earlier scores)."""

    either_threshold = ("rupture", "min_drop", "baseline_drop")

    min_drop: float | None = Field(default=None, gt=0, description="Drop from the previous score that counts.")
    baseline_drop: float | None = Field(default=None, gt=0, description="Drop below the running baseline that counts.")
    baseline_window: int | None = Field(
        default=None, ge=1, description="Earlier scores in the baseline; none: all of the episode."
    )
    combine: Literal["any", "all"] = Field(
        default="any", description="'any': either drop suffices; 'all': both are needed."
    )
    operator: DropOperator = ">="


class EarlyWarningRule(_SignalRule):
    """Low (per the low_alliance rule) or falling alliance within the first sessions of an episode."""

    sessions: int = Field(default=3, ge=1, description="The first N sessions of an episode of care.")
    min_drop: float | None = Field(
        default=None, gt=0, description="Drop from the previous score that counts as falling."
    )
    include_low: bool = Field(default=True, description="Also warn when the low_alliance rule is met.")
    operator: DropOperator = ">="


class GapRule(_SignalRule):
    """Client-therapist gap: this form against its partner form for the same session, on a common scale."""

    pairs_with: str = Field(
        description="Instrument id of the partner form (client form for a therapist form, or vice versa)."
    )
    partner_scale: str = "total"
    common_scale: Literal["percent-of-maximum"] = "percent-of-maximum"
    threshold: float = Field(gt=0, description="Absolute gap, in points of the common scale, that counts.")
    operator: DropOperator = ">="


class SplitRule(_SignalRule):
    """Split alliance: members of one couple, family or group session who score apart."""

    either_threshold = ("split", "max_difference", "below_group_mean")

    max_difference: float | None = Field(
        default=None, gt=0, description="A member this far below the session's highest member."
    )
    below_group_mean: float | None = Field(
        default=None, gt=0, description="A member this far below the session's mean (all members)."
    )
    min_members: int = Field(default=2, ge=2)
    operator: DropOperator = ">="


class SignalsSpec(_Strict):
    """Which alliance signals an instrument emits, and with which thresholds. Omitted rules are off."""

    low_alliance: LowAllianceRule | None = None
    rupture: RuptureRule | None = None
    early_warning: EarlyWarningRule | None = None
    gap: GapRule | None = None
    split: SplitRule | None = None

    def rules(self) -> list[tuple[str, _SignalRule]]:
        """The configured rules by name, in a fixed order."""
        names = ("low_alliance", "rupture", "early_warning", "gap", "split")
        return [(n, getattr(self, n)) for n in names if getattr(self, n) is not None]


class InstrumentMapping(_Strict):
    """A mapping file: how to score one Questionnaire ``url|version`` and how to report it."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_ref: str | None = Field(default=None, alias="$schema")
    schema_version: Literal[1] = 1
    instrument: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$", description="Short stable id, e.g. 'wai-sr'.")
    name: str
    title: str
    questionnaire: str = Field(
        pattern=r"^\S+\|\S+$", description="Canonical 'url|version' of the scored Questionnaire."
    )
    algorithm_version: str
    measures: Literal["alliance", "outcome"] = Field(
        description="What the instrument measures: the alliance, or a companion outcome."
    )
    respondent: Literal["client", "therapist", "observer", "group-member", "parent"]
    verification: Literal["confirmed", "labels-unconfirmed", "user-supplied"]
    verification_note: str | None = None
    citation: str
    key_source: str
    item_scale: ItemScale
    aggregation_note: str | None = None
    headline: str = Field(
        default="total",
        description="Id of the headline scale: the Observation's value (the other scales are its components). It must be listed "
        "first in 'scales', so that the order of the list and this name never disagree.",
    )
    scales: list[ScaleSpec] = Field(min_length=1)
    reliable_change: ReliableChange | None = None
    signals: SignalsSpec | None = Field(
        default=None, description="Alliance signals (rupture, low alliance, ...); alliance measures only."
    )

    @model_validator(mode="after")
    def _unique_scales(self) -> InstrumentMapping:
        ids = [s.id for s in self.scales]
        if len(set(ids)) != len(ids):
            raise ValueError("scale ids must be unique")
        if self.headline not in ids:
            raise ValueError(
                f"the headline scale '{self.headline}' is not among the scales ({', '.join(ids)}); "
                'name the headline with "headline": "<scale id>"'
            )
        if ids[0] != self.headline:
            raise ValueError(
                f"ambiguous headline: '{self.headline}' is the headline but '{ids[0]}' is listed first; "
                f"list '{self.headline}' first in scales (or set \"headline\" to the scale meant)"
            )
        if self.reliable_change and self.reliable_change.scale not in ids:
            raise ValueError(f"reliable_change names unknown scale '{self.reliable_change.scale}'")
        return self

    @model_validator(mode="after")
    def _signals_fit(self) -> InstrumentMapping:
        if self.signals is None:
            return self
        if self.measures != "alliance":
            raise ValueError(
                "signals are for alliance measures only (an outcome measure's low score is not a low alliance)"
            )
        scales = {s.id: s for s in self.scales}
        for name, rule in self.signals.rules():
            if rule.scale not in scales:
                raise ValueError(f"signals.{name} names unknown scale '{rule.scale}'")
        early, low = self.signals.early_warning, self.signals.low_alliance
        if early is not None and early.min_drop is None and not (early.include_low and low is not None):
            raise ValueError("signals.early_warning needs min_drop, or include_low with a low_alliance rule")
        if low is not None:
            cutoff = next((c for c in scales[low.scale].cutoffs if c.id == low.cutoff), None)
            if cutoff is None:
                raise ValueError(f"signals.low_alliance names unknown cutoff '{low.cutoff}' of scale '{low.scale}'")
            if cutoff.confidence != "C2":
                raise ValueError(
                    f"signals.low_alliance: cutoff '{low.cutoff}' is {cutoff.confidence}; only C2 cutoffs may drive signals"
                )
        return self

    def low_alliance_cutoff(self) -> Cutoff | None:
        """The C2 cutoff the low-alliance signal applies, if the mapping configures one."""
        low = self.signals.low_alliance if self.signals else None
        if low is None:
            return None
        scale = next(s for s in self.scales if s.id == low.scale)
        return next(c for c in scale.cutoffs if c.id == low.cutoff)

    @property
    def url(self) -> str:
        return self.questionnaire.split("|", 1)[0]

    @property
    def version(self) -> str:
        return self.questionnaire.split("|", 1)[1]

    @property
    def total(self) -> ScaleSpec:
        """The instrument's headline score: the scale named by ``headline``, always listed first (validated)."""
        return self.scales[0]

    @property
    def subscales(self) -> list[ScaleSpec]:
        """Every scale but the headline (the Observation's components)."""
        return self.scales[1:]


class TextPack(_Strict):
    """Licensed or translated wording for one Questionnaire version, in one language.

    The shipped Questionnaires name each item's domain only; organisations that hold a licence
    supply the owner's wording (or a translation) this way, without code changes.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_ref: str | None = Field(default=None, alias="$schema")
    language: str = Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$", description="BCP-47 tag, e.g. 'en', 'de-CH'.")
    instrument: str = Field(pattern=r"^\S+\|\S+$", description="The Questionnaire 'url|version' the texts belong to.")
    title: str | None = None
    texts: dict[str, str] = Field(description="linkId -> item text; every question item must be present.")
    answers: dict[str, str] = Field(default_factory=dict, description="answer code -> label.")
    source: str | None = Field(default=None, description="Where the wording comes from and under which licence.")
