"""Alliance signals: pure functions over time-ordered scores (:mod:`trajectory`) -> :class:`Signal`.

Each rule is configured per instrument in the mapping's ``signals`` block and says whose rule
it is (``authors`` or ``project decision``); an instrument without a rule emits nothing of
that kind. Definitions and defaults are explained in ``docs/signals.md``.

Every signal is a *run*: it opens at the session that meets its condition, gathers the scores
that keep it open as evidence, and is resolved by the first later score that no longer meets
it (a rupture is resolved by its repair: a score back to at least the pre-rupture level). Its
``key`` depends only on the kind, the series and the Observation that opened it, so running
the detection again with more sessions updates the same signal instead of adding another.
Arithmetic is in :class:`~decimal.Decimal`, so a drop of exactly the threshold is exactly the
threshold (35.1 - 34.1 is 1.0, not 1.0000000000000014).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Final, Literal

from .._ids import SIGNAL_IDENTIFIER_SYSTEM
from ..instruments.models import Cutoff, GapRule, InstrumentMapping, RuptureRule, Severity, SplitRule
from .trajectory import ScorePoint, Series, Trajectories

__all__ = [
    "EARLY_WARNING",
    "GAP",
    "LOW_ALLIANCE",
    "RUPTURE",
    "SIGNAL_KINDS",
    "SPLIT",
    "WHOSE_RULE",
    "Signal",
    "detect_signals",
    "early_warnings",
    "gap_pairs",
    "gaps",
    "low_alliance",
    "percent_of_maximum",
    "ruptures",
    "signal_key",
    "splits",
]

SignalKind = Literal["low-alliance", "alliance-rupture", "early-alliance-warning", "alliance-gap", "split-alliance"]
LOW_ALLIANCE: Final = "low-alliance"
RUPTURE: Final = "alliance-rupture"
EARLY_WARNING: Final = "early-alliance-warning"
GAP: Final = "alliance-gap"
SPLIT: Final = "split-alliance"
SIGNAL_KINDS: dict[str, str] = {
    LOW_ALLIANCE: "Low alliance",
    RUPTURE: "Alliance rupture",
    EARLY_WARNING: "Early alliance warning",
    GAP: "Client-therapist alliance gap",
    SPLIT: "Split alliance",
}
WHOSE_RULE = {
    "authors": "the instrument authors' published rule",
    "project decision": "a project decision of alliance-fhir (the authors publish no such rule)",
}
"""Whose rule a signal applies, in words (the mapping's ``source``)."""
_KIND_ORDER = list(SIGNAL_KINDS)
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, SIGNAL_IDENTIFIER_SYSTEM)


@dataclass(frozen=True, slots=True)
class Signal:
    """One detected alliance signal and the scores it came from (``evidence``, in session order)."""

    kind: SignalKind
    severity: Severity
    subject: str
    instrument: str
    focus: str | None
    episode: str | None
    status: Literal["active", "resolved"]
    opened: ScorePoint
    evidence: tuple[ScorePoint, ...]
    resolved_by: ScorePoint | None
    headline: str  # what happened, in a few words ("SRS total fell")
    notes: str  # the sessions behind it, "; "-separated
    rule: str
    source: str
    key: str

    @property
    def finding(self) -> str:
        """What was found, as one sentence (the signals table and the card show it without the rule)."""
        return f"{SIGNAL_KINDS[self.kind]}: {self.headline} ({self.notes})."

    @property
    def detail(self) -> str:
        """The finding and the rule behind it: the DetectedIssue's ``detail``."""
        return f"{self.finding} Rule: {self.rule}. Whose rule: {WHOSE_RULE.get(self.source, self.source)}."

    @property
    def opened_at(self) -> datetime:
        return self.opened.time

    @property
    def resolved_at(self) -> datetime | None:
        return self.resolved_by.time if self.resolved_by else None


@dataclass
class _SignalRun:
    """A signal while it is being detected: the score that opened it, its evidence and notes so far."""

    opened: ScorePoint
    evidence: list[ScorePoint] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    resolved_by: ScorePoint | None = None

    def add(self, points: Iterable[ScorePoint]) -> None:
        for point in points:
            if point not in self.evidence:
                self.evidence.append(point)


Step = tuple[ScorePoint, bool, Sequence[ScorePoint], str]  # point, condition met, its evidence, a note


def signal_key(
    kind: str, subject: str, instrument: str, focus: str | None, episode: str | None, opened: ScorePoint
) -> str:
    """Deterministic signal id: same kind, series and opening score -> same key (a UUID)."""
    name = "|".join([kind, subject, instrument, focus or "", episode or "", opened.observation.key])
    return str(uuid.uuid5(_NAMESPACE, name))


def detect_signals(trajectories: Trajectories) -> list[Signal]:
    """Every configured signal for every series, ordered by subject, opening time and kind."""
    found: list[Signal] = []
    for series in trajectories.series:
        found += low_alliance(series) + ruptures(series) + early_warnings(series)
    found += gaps(trajectories) + splits(trajectories)
    return sorted(found, key=lambda s: (s.subject, s.opened_at, _KIND_ORDER.index(s.kind), s.key))


def low_alliance(series: Series) -> list[Signal]:
    """Scores meeting the instrument's C2 cutoff; resolved by the first score that no longer does."""
    rule = series.mapping.signals.low_alliance if series.mapping.signals else None
    cutoff = series.mapping.low_alliance_cutoff()
    if rule is None or cutoff is None:
        return []
    steps = []
    for point in _valued(series.points, rule.scale):
        value = _value(point, rule.scale)
        steps.append((point, _meets(value, cutoff), [point], f"session {point.session_number}: {_fmt(value)}"))
    text = f"{_scale_name(series.mapping, rule.scale)} {_cutoff_rule(cutoff)}"
    headline = f"{_scale_name(series.mapping, rule.scale)} {_cutoff_rule(cutoff)}"
    return [_signal(LOW_ALLIANCE, rule.severity, series, run, headline, text, rule.source) for run in _runs(steps)]


def ruptures(series: Series) -> list[Signal]:
    """Drops from the previous score and/or the running baseline; resolved by a repair."""
    rule = series.mapping.signals.rupture if series.mapping.signals else None
    if rule is None:
        return []
    runs: list[_SignalRun] = []
    current: _SignalRun | None = None
    pre_level = Decimal(0)
    floor = _noise_floor(series.mapping, rule.scale)
    points = _valued(series.points, rule.scale)
    for index, point in enumerate(points):
        value = _value(point, rule.scale)
        if current is not None:
            if value >= pre_level:
                current.resolved_by = point
                current.add([point])
                current.notes.append(
                    f"repaired at session {point.session_number}: {_fmt(value)}, back to at least {_fmt(pre_level)}"
                )
                current = None
            else:
                current.add([point])
            continue
        hit = _drop(points[:index], point, rule, floor) if index else None
        if hit is not None:
            pre_level = _value(points[index - 1], rule.scale)
            current = _SignalRun(point, notes=[hit[1]])
            current.add(list(hit[0]) + [point])
            runs.append(current)
    text = _drop_rule_text(rule, floor)
    name = _scale_name(series.mapping, rule.scale)
    return [_signal(RUPTURE, rule.severity, series, run, f"{name} fell", text, rule.source) for run in runs]


def early_warnings(series: Series) -> list[Signal]:
    """Low or falling alliance in the first N sessions of an episode; resolved on recovery."""
    rule = series.mapping.signals.early_warning if series.mapping.signals else None
    if rule is None:
        return []
    cutoff = series.mapping.low_alliance_cutoff() if rule.include_low else None
    floor = _noise_floor(series.mapping, rule.scale)
    runs: list[_SignalRun] = []
    current: _SignalRun | None = None
    level: Decimal | None = None
    points = _valued(series.points, rule.scale)
    for index, point in enumerate(points):
        value = _value(point, rule.scale)
        low = cutoff is not None and _meets(value, cutoff)
        if current is not None:
            current.add([point])
            if not low and (level is None or value >= level):
                current.resolved_by, current = point, None
            continue
        previous = points[index - 1] if index else None
        drop = _value(previous, rule.scale) - value if previous else None
        falling = (
            rule.min_drop is not None
            and drop is not None
            and _exceeds(drop, _at_least(rule.min_drop, floor), rule.operator)
        )
        if point.session_number <= rule.sessions and (low or falling):
            level = _value(previous, rule.scale) if falling and previous else None
            reason = [f"{_fmt(value)}, {_cutoff_rule(cutoff)}"] if low and cutoff else []
            reason += (
                [f"fell {_fmt(drop)}, from {_fmt(level)}"] if falling and drop is not None and level is not None else []
            )
            current = _SignalRun(point, notes=[f"session {point.session_number}: " + " and ".join(reason)])
            current.add(([previous] if falling and previous else []) + [point])
            runs.append(current)
    parts = [f"in the first {rule.sessions} sessions of a course of therapy"]
    parts += [f"low ({_cutoff_rule(cutoff)})"] if cutoff else []
    parts += (
        [f"falling ({_amount(_at_least(rule.min_drop, floor), rule.operator)} below the previous session)"]
        if rule.min_drop
        else []
    )
    text = f"{parts[0]}: " + " or ".join(parts[1:])
    name = _scale_name(series.mapping, rule.scale)
    return [
        _signal(EARLY_WARNING, rule.severity, series, run, f"{name} low or falling early", text, rule.source)
        for run in runs
    ]


def gaps(trajectories: Trajectories) -> list[Signal]:
    """Client vs therapist form for the same session and therapist, as percent of each scale's maximum.

    The pairing is data: a mapping's ``signals.gap.pairs_with`` names the partner form. The
    signal belongs to the client's series whichever side declares the pairing.
    """
    out: list[Signal] = []
    for series in trajectories.series:
        rule = series.mapping.signals.gap if series.mapping.signals else None
        if rule is None:
            continue
        partners = {
            _session_key(p): (other, p)
            for other in trajectories.series
            if other.instrument == rule.pairs_with
            for p in other.points
        }
        paired = [(p, *partners[_session_key(p)]) for p in series.points if _session_key(p) in partners]
        if not paired:
            continue
        steps = [_gap_step(series.mapping, p, rule, other.mapping, q) for p, other, q in paired]
        client = paired[0][1] if series.mapping.respondent == "therapist" else series
        text = (
            f"client and therapist ratings {_amount(rule.threshold, rule.operator)} points apart, "
            "each as a percentage of its form's maximum"
        )
        for run in _runs(steps):
            out.append(
                _signal(
                    GAP, rule.severity, client, run, "client and therapist rate the alliance apart", text, rule.source
                )
            )
    # Both forms may declare the pairing; each side then finds the same gaps (same key): keep one.
    return list({signal.key: signal for signal in out}.values())


def gap_pairs(trajectories: Trajectories, subject: str) -> list[tuple[Series, Series]]:
    """(client series, therapist series) pairs declared by a gap rule, for this client."""
    mine = trajectories.for_subject(subject)
    pairs = []
    for series in mine:
        rule = series.mapping.signals.gap if series.mapping.signals else None
        if rule is None:
            continue
        for other in (s for s in mine if s.instrument == rule.pairs_with and s.focus == series.focus):
            pairs.append((other, series) if series.mapping.respondent == "therapist" else (series, other))
    return pairs


def splits(trajectories: Trajectories) -> list[Signal]:
    """Members of one joint session (couple, family, group) who score apart from the others."""
    sessions: dict[tuple[str, str, str], dict[str, tuple[Series, ScorePoint]]] = defaultdict(dict)
    for series in trajectories.series:
        if series.mapping.signals and series.mapping.signals.split:
            for point in series.points:
                if point.session:  # one score per member and session: the later one
                    sessions[(series.instrument, series.focus or "", point.session)][series.subject] = (series, point)
    per_member: dict[tuple[str, str, str, str], tuple[Series, SplitRule, list[Step]]] = {}
    for members in sessions.values():
        first = next(iter(members.values()))[0].mapping.signals
        rule = first.split if first else None
        if rule is None or len(members) < rule.min_members:
            continue
        points = [point for _, point in members.values()]
        for series, point in members.values():
            per_member.setdefault(series.key, (series, rule, []))[2].append(_split_step(point, points, rule))
    out = []
    for _, (series, rule, steps) in sorted(per_member.items()):
        steps.sort(key=lambda step: (step[0].time, step[0].observation.key))
        for run in _runs(steps):
            headline = "this member rates the joint session lower than the others"
            out.append(_signal(SPLIT, rule.severity, series, run, headline, _split_rule_text(rule), rule.source))
    return out


# ---- helpers -------------------------------------------------------------------------------


def _runs(steps: Iterable[Step]) -> list[_SignalRun]:
    """Consecutive sessions meeting a condition form one run; the next session that does not resolves it."""
    runs: list[_SignalRun] = []
    current: _SignalRun | None = None
    for point, met, evidence, note in steps:
        if met:
            if current is None:
                current = _SignalRun(point)
                runs.append(current)
            current.add(evidence)
            current.notes.append(note)
        elif current is not None:
            current.add(evidence)
            current.notes.append(f"resolved: {note}")
            current.resolved_by, current = point, None
    return runs


def _signal(
    kind: SignalKind, severity: Severity, series: Series, run: _SignalRun, headline: str, rule: str, source: str
) -> Signal:
    notes = "; ".join(run.notes)
    missed = dict.fromkeys(_missed(p) for p in run.evidence if p.missed_before)
    if missed:  # a dict keeps order and drops the twin note of a paired or joint session
        notes += "; " + ", ".join(missed)
    return Signal(
        kind=kind,
        severity=severity,
        subject=series.subject,
        instrument=series.instrument,
        focus=series.focus,
        episode=series.episode,
        status="resolved" if run.resolved_by else "active",
        opened=run.opened,
        evidence=tuple(sorted(run.evidence, key=lambda p: (p.time, p.observation.key))),
        resolved_by=run.resolved_by,
        headline=headline,
        notes=notes,
        rule=rule,
        source=source,
        key=signal_key(kind, series.subject, series.instrument, series.focus, series.episode, run.opened),
    )


def _missed(point: ScorePoint) -> str:
    sessions = "1 session" if point.missed_before == 1 else f"{point.missed_before} sessions"
    return f"{sessions} without a score before session {point.session_number}"


def _valued(points: Sequence[ScorePoint], scale: str) -> list[ScorePoint]:
    return [p for p in points if p.scale(scale) is not None]


def _value(point: ScorePoint, scale: str) -> Decimal:
    value = point.scale(scale)
    return value if value is not None else Decimal(0)


def _meets(value: Decimal, cutoff: Cutoff) -> bool:
    threshold = Decimal(str(cutoff.threshold))
    return value < threshold if cutoff.operator == "<" else value <= threshold


def _exceeds(amount: Decimal, threshold: float | Decimal, operator: str) -> bool:
    limit = Decimal(str(threshold))
    return amount >= limit if operator == ">=" else amount > limit


def _drop(
    earlier: Sequence[ScorePoint], point: ScorePoint, rule: RuptureRule, floor: Decimal
) -> tuple[list[ScorePoint], str] | None:
    """The evidence and a note when ``point`` is a rupture against ``earlier``, else None."""
    value = _value(point, rule.scale)
    previous = _value(earlier[-1], rule.scale)
    window = list(earlier[-rule.baseline_window :] if rule.baseline_window else earlier)
    baseline = sum((_value(p, rule.scale) for p in window), Decimal(0)) / len(window)
    checks: list[tuple[bool, list[ScorePoint], str]] = []
    if rule.min_drop is not None:
        note = f"session {point.session_number}: fell {_fmt(previous - value)}, from {_fmt(previous)} to {_fmt(value)}"
        checks.append((_exceeds(previous - value, _at_least(rule.min_drop, floor), rule.operator), [earlier[-1]], note))
    if rule.baseline_drop is not None:
        sessions = "session" if len(window) == 1 else f"{len(window)} sessions"
        note = f"{_fmt(baseline - value)} below the average of the earlier {sessions} ({_fmt(baseline)})"
        checks.append((_exceeds(baseline - value, _at_least(rule.baseline_drop, floor), rule.operator), window, note))
    met = [c for c in checks if c[0]]
    if not met or (rule.combine == "all" and len(met) < len(checks)):
        return None
    return [p for c in met for p in c[1]], "; ".join(c[2] for c in met)


def _drop_rule_text(rule: RuptureRule, floor: Decimal) -> str:
    parts = []
    if rule.min_drop is not None:
        parts.append(f"a fall of {_amount(_at_least(rule.min_drop, floor), rule.operator)} from the previous session")
    if rule.baseline_drop is not None:
        window = f"the last {rule.baseline_window}" if rule.baseline_window else "all earlier"
        parts.append(
            f"a score {_amount(_at_least(rule.baseline_drop, floor), rule.operator)} below the average of {window} "
            "sessions of the course of therapy"
        )
    joined = (" or " if rule.combine == "any" else " and ").join(parts)
    noise = " (never less than the published reliable change)" if floor else ""
    return f"{joined}{noise}; repaired when a later score is back to at least the score before the fall"


def _at_least(threshold: float, floor: Decimal) -> Decimal:
    """A configured threshold, raised to the noise floor."""
    return max(Decimal(str(threshold)), floor)


def _noise_floor(mapping: InstrumentMapping, scale: str) -> Decimal:
    """The published reliable-change figure of ``scale`` (a smaller drop is measurement noise), else 0.

    Where the instrument's authors publish one, a drop counts only when it is at least that large,
    whatever the configured threshold; for the alliance measures we ship none is published, so
    their thresholds stay documented project decisions (``docs/signals.md``).
    """
    rc = mapping.reliable_change
    return Decimal(str(rc.value)) if rc is not None and rc.scale == scale else Decimal(0)


def _amount(threshold: float | Decimal, operator: str) -> str:
    """ "1 or more" (>=) or "more than 1" (>): a threshold in words, never as an operator sign."""
    figure = _fmt(Decimal(str(threshold)))
    return f"{figure} or more" if operator == ">=" else f"more than {figure}"


def percent_of_maximum(value: Decimal, mapping: InstrumentMapping, scale: str) -> Decimal:
    """A score on the common 0-100 scale: (value - min) / (max - min) x 100, from the scale's declared range."""
    # "total": the headline
    spec = mapping.total if scale == "total" else next(s for s in mapping.scales if s.id == scale)
    low, high = Decimal(str(spec.range.min)), Decimal(str(spec.range.max))
    return (value - low) * 100 / (high - low)


def _session_key(point: ScorePoint) -> tuple[str, str, str] | None:
    session = point.session or point.encounter
    return (point.subject, point.focus or "", session) if session else None


def _gap_step(
    mapping: InstrumentMapping,
    point: ScorePoint,
    rule: GapRule,
    partner_mapping: InstrumentMapping,
    partner: ScorePoint,
) -> Step:
    mine = percent_of_maximum(_value(point, rule.scale), mapping, rule.scale)
    theirs = percent_of_maximum(_value(partner, rule.partner_scale), partner_mapping, rule.partner_scale)
    client, therapist = (theirs, mine) if mapping.respondent == "therapist" else (mine, theirs)
    gap = client - therapist
    note = f"session {point.session_number}: client {_fmt(client)}%, therapist {_fmt(therapist)}% (apart by {_fmt(abs(gap))})"
    first, second = (partner, point) if mapping.respondent == "therapist" else (point, partner)
    return (first, _exceeds(abs(gap), rule.threshold, rule.operator), [first, second], note)


def _split_step(point: ScorePoint, members: list[ScorePoint], rule: SplitRule) -> Step:
    values = [_value(m, rule.scale) for m in members]
    mine = _value(point, rule.scale)
    highest, mean = max(values), sum(values, Decimal(0)) / len(values)
    notes: list[str] = []
    if rule.max_difference is not None and _exceeds(highest - mine, rule.max_difference, rule.operator):
        notes.append(f"{_fmt(highest - mine)} below the highest-rating member")
    if rule.below_group_mean is not None and _exceeds(mean - mine, rule.below_group_mean, rule.operator):
        notes.append(f"{_fmt(mean - mine)} below the average of the {len(members)} members")
    met = bool(notes)
    note = f"session {point.session_number}: {_fmt(mine)}" + (f", {' and '.join(notes)}" if notes else "")
    others = sorted((m for m in members if m is not point), key=lambda m: m.subject) if met else []
    return (point, met, [point] + others, note)


def _split_rule_text(rule: SplitRule) -> str:
    parts = []
    if rule.max_difference is not None:
        parts.append(f"a member {_amount(rule.max_difference, rule.operator)} below the highest-rating member")
    if rule.below_group_mean is not None:
        parts.append(f"a member {_amount(rule.below_group_mean, rule.operator)} below the members' average")
    return " or ".join(parts) + f" in a joint session (at least {rule.min_members} members rating it)"


def _cutoff_rule(cutoff: Cutoff | None) -> str:
    if cutoff is None:
        return ""
    where = "below" if cutoff.operator == "<" else "at or below"
    return f"{where} {cutoff.threshold:g}, the level of concern"


def _scale_name(mapping: InstrumentMapping, scale: str) -> str:
    return next(s.title for s in mapping.scales if s.id == scale)


def _day(point: ScorePoint) -> str:
    return point.time.date().isoformat()


def _fmt(value: Decimal | None) -> str:
    if value is None:
        return "-"
    rounded = value.quantize(Decimal("0.01")).normalize()
    return format(rounded, "f")
