"""Signals -> situations: what one client's alliance looks like now, as one story per series.

A therapist reading a chart needs one message per situation, not one per rule: a client whose
SRS went 38, 37, 34, 32 meets the rupture rule, the low-alliance rule and the early-warning rule
at once, and three cards with three severities for one conversation is how decision support gets
switched off. A **situation** is every signal about one series (client, instrument, therapist,
episode) whose runs overlap or touch: it opens with the first of them and closes when the last is
resolved. The cards, the follow-up Tasks and the report all speak in situations; the
DetectedIssues stay one per rule, as the record of what fired.

One scale for the level of concern, derived from the situation (a project decision, documented in
``docs/signals.md``):

- ``high``: below the instrument's level of concern together with a drop not yet repaired, or
  together with being in the first sessions of the episode, or below it for
  :data:`PERSISTENT_SESSIONS` sessions or more in a row;
- ``moderate``: any one concern alone (below the level, a drop, low or falling early, a split
  in joint sessions, a client-therapist gap);
- ``low``: information only (a repair at the latest session, a client on track).

Never ``critical``: an alliance signal asks for a conversation, not an intervention.

The summary says where the client is now (the latest score and its session), the change that
matters (from the best of the recent sessions, over how many sessions), and the level of concern,
in at most :data:`SUMMARY_LIMIT` characters. Pure functions: no clock, no server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal
from typing import Final, Literal

from .._ids import SIGNAL_IDENTIFIER_SYSTEM
from ..instruments.models import AlliancePart, InstrumentMapping
from .rules import EARLY_WARNING, GAP, LOW_ALLIANCE, RUPTURE, SPLIT, Signal, percent_of_maximum
from .trajectory import ScorePoint, Series, Trajectories

__all__ = [
    "FACT_OF_KIND",
    "LEVEL_WORDS",
    "PART_WORDS",
    "PART_DROP",
    "PERSISTENT_SESSIONS",
    "RECENT_SESSIONS",
    "SUMMARY_LIMIT",
    "ConcernLevel",
    "Fact",
    "PartChange",
    "apply_levels",
    "Situation",
    "SituationKind",
    "current_situations",
    "number",
    "situation_history",
]

SUMMARY_LIMIT: Final = 140
"""A summary's limit in characters (CDS Hooks 2.0: one sentence under 140)."""
RECENT_SESSIONS: Final = 5
"""How far back "the best recent level" looks: the 5 scored sessions before the latest (project decision)."""
PART_DROP: Final = Decimal(1)
"""A part of the alliance "fell" only by at least 1 point (a tenth of an SRS line, a sixteenth of a WAI-SR
subscale); a smaller move is within the noise of a mark on a line, and the card names the lowest-rated part
instead (project decision)."""
PERSISTENT_SESSIONS: Final = 3
"""Below the level of concern this many sessions in a row is a high concern on its own (project decision)."""

ConcernLevel = Literal["high", "moderate", "low"]
LEVEL_WORDS: dict[str, str] = {"high": "High concern", "moderate": "Moderate concern", "low": "For information"}
"""The level of concern in words, as cards, Tasks and the report write it."""
SituationKind = Literal["concern", "repair", "on-track"]
Fact = Literal["fallen", "below", "early", "split", "gap"]
FACT_OF_KIND: dict[str, Fact] = {
    RUPTURE: "fallen",
    LOW_ALLIANCE: "below",
    EARLY_WARNING: "early",
    SPLIT: "split",
    GAP: "gap",
}
"""Each signal kind as the fact it adds to a situation."""
PART_WORDS: dict[str, str] = {
    "goals": "agreement on goals",
    "tasks": "agreement on tasks",
    "bond": "the bond",
    "overall": "overall rating",
}
"""Bordin's parts of the alliance in plain words (Bordin 1979: goals, tasks, bond)."""
_PART_ORDER = ["goals", "tasks", "bond", "overall"]
_LEADING = [RUPTURE, LOW_ALLIANCE, EARLY_WARNING, SPLIT, GAP]
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, f"{SIGNAL_IDENTIFIER_SYSTEM}/situation")


@dataclass(frozen=True, slots=True)
class PartChange:
    """One part of the alliance at the latest session, and its change since the best recent session."""

    part: AlliancePart
    scale: str
    domain: str  # the published domain in plain words: "approach or method", "Task"
    now: Decimal
    before: Decimal | None  # None: no earlier level to compare with (then this is the lowest-rated part)
    maximum: Decimal

    @property
    def change(self) -> Decimal | None:
        return None if self.before is None else self.now - self.before

    @property
    def words(self) -> str:
        """ "approach or method (agreement on tasks)": the instrument's domain, then Bordin's part."""
        bordin = PART_WORDS[self.part]
        return bordin if self.domain.lower() in bordin else f"{self.domain} ({bordin})"


@dataclass(frozen=True, slots=True)
class Situation:
    """One client's alliance on one series, as one story: the signals behind it and where the client is now."""

    key: str
    kind: SituationKind
    status: Literal["active", "resolved"]
    level: ConcernLevel
    facts: tuple[Fact, ...]
    series: Series
    signals: tuple[Signal, ...]
    opened: ScorePoint
    resolved_by: ScorePoint | None
    latest: ScorePoint
    best: ScorePoint | None
    part: PartChange | None
    summary: str

    @property
    def subject(self) -> str:
        return self.series.subject

    @property
    def instrument(self) -> str:
        return self.series.instrument

    @property
    def focus(self) -> str | None:
        return self.series.focus

    @property
    def mapping(self) -> InstrumentMapping:
        return self.series.mapping

    @property
    def change(self) -> Decimal | None:
        """The latest score minus the best recent level (negative: fell); None without a best level."""
        return None if self.best is None else self.latest.value - self.best.value

    @property
    def active_signals(self) -> tuple[Signal, ...]:
        """The open signals, the leading kind first (rupture, low alliance, early warning, split, gap)."""
        return tuple(sorted((s for s in self.signals if s.status == "active"), key=lambda s: _LEADING.index(s.kind)))

    @property
    def leading(self) -> Signal:
        """The signal a Task follows and a card files under: the first open one, else the first of the run."""
        return (self.active_signals or self.signals)[0]


def situation_history(signals: Sequence[Signal], trajectories: Trajectories) -> list[Situation]:
    """Every situation of concern, past and present, per series in session order (Tasks and the report use it)."""
    out: list[Situation] = []
    for series in trajectories.series:
        if series.points:
            out += _concerns(series, _of_series(signals, series))
    return out


def apply_levels(signals: Sequence[Signal], situations: Sequence[Situation]) -> list[Signal]:
    """The signals with their situation's level of concern as ``severity``: one scale wherever a signal is shown."""
    levels = {signal.key: situation.level for situation in situations for signal in situation.signals}
    return [replace(s, severity=levels[s.key]) if s.key in levels else s for s in signals]


def current_situations(
    signals: Sequence[Signal], trajectories: Trajectories, subject: str | None = None, *, on_track: bool = True
) -> list[Situation]:
    """What a clinician should see now: per series, its open situation, else a repair at the latest session,
    else (``on_track``, for the latest series of a client-rated alliance instrument) an "on track" note.

    Ordered by level (high first), then instrument and therapist. ``subject``: one client only.
    """
    found: list[Situation] = []
    latest_series = _latest_series(trajectories)
    for series in trajectories.series:
        if not series.points or (subject is not None and series.subject != subject):
            continue
        history = _concerns(series, _of_series(signals, series))
        last = history[-1] if history else None
        if last is not None and last.status == "active":
            found.append(last)
        elif (
            last is not None and last.resolved_by == series.points[-1] and any(s.kind == RUPTURE for s in last.signals)
        ):
            found.append(_repair(last))
        elif on_track and id(series) in latest_series and _trackable(series):
            found.append(_on_track(series))
    order = {"high": 0, "moderate": 1, "low": 2}
    return sorted(found, key=lambda s: (order[s.level], s.subject, s.instrument, s.focus or "", s.key))


# ---- building one series' situations --------------------------------------------------------------


def _of_series(signals: Iterable[Signal], series: Series) -> list[Signal]:
    key = series.key
    return [s for s in signals if (s.subject, s.instrument, s.focus or "", s.episode or "") == key]


def _span(signal: Signal) -> tuple[int, float]:
    """The sessions a signal covers: from its opening to its resolution (open-ended while active)."""
    end = signal.resolved_by.session_number if signal.resolved_by is not None else float("inf")
    return signal.opened.session_number, end


def _concerns(series: Series, signals: list[Signal]) -> list[Situation]:
    """Signals whose spans overlap or touch, merged into runs: one situation each."""
    runs: list[list[Signal]] = []
    end = -1.0
    for signal in sorted(signals, key=lambda s: (_span(s)[0], s.opened.time, s.key)):
        start, stop = _span(signal)
        if runs and start <= end:
            runs[-1].append(signal)
            end = max(end, stop)
        else:
            runs.append([signal])
            end = stop
    return [_concern(series, run) for run in runs]


def _concern(series: Series, run: list[Signal]) -> Situation:
    active = [s for s in run if s.status == "active"]
    opened = min((s.opened for s in run), key=lambda p: (p.session_number, p.time))
    resolved_by = None if active else max((s.resolved_by for s in run if s.resolved_by), key=_order, default=None)
    now = _client_point(series, resolved_by) if resolved_by is not None else series.points[-1]
    facts = _facts(active or run)
    best = _best_recent(series, now)
    part = _part(series, now, best)
    level = _level(facts, run, now)  # a resolved one keeps the level it ended with (its DetectedIssues' severity)
    situation = Situation(
        key=_key(series, opened),
        kind="concern",
        status="active" if active else "resolved",
        level=level,
        facts=facts,
        series=series,
        signals=tuple(run),
        opened=opened,
        resolved_by=resolved_by,
        latest=now,
        best=best,
        part=part,
        summary="",
    )
    return _with_summary(situation)


def _repair(concern: Situation) -> Situation:
    """A concern repaired at the latest session, told once as good news."""
    return _with_summary(replace(concern, kind="repair", status="resolved", level="low"))


def _on_track(series: Series) -> Situation:
    latest = series.points[-1]
    situation = Situation(
        key=_key(series, latest, "on-track"),
        kind="on-track",
        status="active",
        level="low",
        facts=(),
        series=series,
        signals=(),
        opened=latest,
        resolved_by=None,
        latest=latest,
        best=None,
        part=None,
        summary="",
    )
    return _with_summary(situation)


def _key(series: Series, opened: ScorePoint, kind: str = "concern") -> str:
    """Same series and same opening score -> same key, so Tasks and cards stay put as sessions arrive."""
    return str(uuid.uuid5(_NAMESPACE, "|".join([kind, *series.key, opened.observation.key])))


def _order(point: ScorePoint) -> tuple[int, object]:
    return (point.session_number, point.time)


def _client_point(series: Series, point: ScorePoint) -> ScorePoint:
    """The series' own score of that session (a gap's evidence may be the therapist's form)."""
    return next((p for p in series.points if p.session_number == point.session_number), series.points[-1])


def _facts(signals: Iterable[Signal]) -> tuple[Fact, ...]:
    found = {FACT_OF_KIND[s.kind] for s in signals}
    return tuple(f for f in ("fallen", "below", "early", "split", "gap") if f in found)


def _level(facts: tuple[Fact, ...], run: list[Signal], now: ScorePoint) -> ConcernLevel:
    if "below" in facts:
        persistent = any(s.kind == LOW_ALLIANCE and _sessions_low(s, now) >= PERSISTENT_SESSIONS for s in run)
        if "fallen" in facts or "early" in facts or persistent:
            return "high"
    return "moderate"


def _sessions_low(signal: Signal, now: ScorePoint) -> int:
    """How many sessions in a row a low-alliance signal has held (up to its resolution, or to ``now``)."""
    end = signal.resolved_by.session_number if signal.resolved_by is not None else now.session_number + 1
    return end - signal.opened.session_number


def _best_recent(series: Series, now: ScorePoint) -> ScorePoint | None:
    """The highest score of the :data:`RECENT_SESSIONS` scored sessions before ``now`` (the latest one at a tie)."""
    earlier = [p for p in series.points if p.session_number < now.session_number][-RECENT_SESSIONS:]
    if not earlier:
        return None
    return max(reversed(earlier), key=lambda p: p.value)


def _part(series: Series, now: ScorePoint, best: ScorePoint | None) -> PartChange | None:
    """The part that fell most since the best recent level (on the percent-of-maximum scale), else the lowest-rated."""
    parts = [s for s in series.mapping.scales if s.part is not None and now.scale(s.id) is not None]
    if not parts:
        return None
    changes = []
    for scale in sorted(parts, key=lambda s: _PART_ORDER.index(s.part or "overall")):
        value = now.scale(scale.id)
        before = best.scale(scale.id) if best is not None else None
        assert value is not None and scale.part is not None
        changes.append(
            PartChange(
                scale.part, scale.id, _domain(series.mapping, scale.title), value, before, Decimal(str(scale.range.max))
            )
        )
    fell = [c for c in changes if c.change is not None and -c.change >= PART_DROP]
    if fell:  # min() keeps the first at a tie: the Bordin order, "overall" last
        return min(
            fell, key=lambda c: _percent(series.mapping, c.scale, c.now) - _percent(series.mapping, c.scale, c.before)
        )
    lowest = min(changes, key=lambda c: _percent(series.mapping, c.scale, c.now))
    return PartChange(lowest.part, lowest.scale, lowest.domain, lowest.now, None, lowest.maximum)


def _percent(mapping: InstrumentMapping, scale: str, value: Decimal | None) -> Decimal:
    return percent_of_maximum(value if value is not None else Decimal(0), mapping, scale)


def _domain(mapping: InstrumentMapping, title: str) -> str:
    """ "SRS approach or method" -> "approach or method": the scale's title without the instrument's name."""
    prefix = f"{mapping.name} "
    return title[len(prefix) :] if title.startswith(prefix) else title


def _latest_series(trajectories: Trajectories) -> set[int]:
    """Per client, instrument and therapist: the series with the latest score (older episodes get no note)."""
    latest: dict[tuple[str, str, str], Series] = {}
    for series in trajectories.series:
        if not series.points:
            continue
        key = (series.subject, series.instrument, series.focus or "")
        if key not in latest or series.points[-1].time > latest[key].points[-1].time:
            latest[key] = series
    return {id(s) for s in latest.values()}


def _trackable(series: Series) -> bool:
    """An "on track" note only for instruments the client rates and whose alliance signals are configured."""
    mapping = series.mapping
    return mapping.measures == "alliance" and mapping.respondent != "therapist" and mapping.signals is not None


# ---- the summary: one sentence, at most SUMMARY_LIMIT characters ----------------------------------


def _with_summary(situation: Situation) -> Situation:
    return replace(situation, summary=_summary(situation))


def _summary(situation: Situation) -> str:
    mapping, now = situation.mapping, situation.latest
    if situation.kind == "on-track":
        return _fit([f"{mapping.name} {number(now.value)} at session {now.session_number}, on track."])
    if situation.kind == "repair":
        low = min(_own_points(situation), key=lambda p: (p.value, -p.session_number))
        return _fit(
            [
                f"{mapping.name} back to {number(now.value)} at session {now.session_number}",
                f" after falling to {number(low.value)} at session {low.session_number}.",
                " Alliance repaired.",
            ]
        )
    clauses = [f"{mapping.name} {number(now.value)} at session {now.session_number}"]
    change, best = situation.change, situation.best
    if change is not None and best is not None and -change >= _smallest_drop(mapping):
        span = now.session_number - best.session_number
        sessions = "session" if span == 1 else "sessions"
        clauses.append(f", down {number(-change)} from {number(best.value)} in {span} {sessions}")
    cutoff = mapping.low_alliance_cutoff()
    if "below" in situation.facts and cutoff is not None:
        where = "below" if cutoff.operator == "<" else "at or below"
        clauses.append(f"; {where} {cutoff.threshold:g}, the level of concern")
    if "split" in situation.facts:
        clauses.append("; lower than others in joint sessions")
    if "early" in situation.facts:
        clauses.append("; in the first sessions")
    if "gap" in situation.facts:
        clauses.append("; client and therapist rate it apart")
    ending = ". High concern." if situation.level == "high" else ". Moderate concern."
    return _fit(clauses, ending=ending)


def _smallest_drop(mapping: InstrumentMapping) -> Decimal:
    """The smallest change a summary reports: the instrument's rupture threshold (its noise figure), else 1 point.

    A change smaller than what the rules count as a drop is noise to a reader ("down 0.5") and is left out.
    """
    rule = mapping.signals.rupture if mapping.signals else None
    figures = [f for f in (rule.min_drop, rule.baseline_drop) if f is not None] if rule else []
    rc = mapping.reliable_change
    if rc is not None and rc.scale == "total":
        figures.append(rc.value)
    return Decimal(str(max(figures))) if figures else Decimal(1)


def _own_points(situation: Situation) -> list[ScorePoint]:
    points = [p for s in situation.signals for p in s.evidence if p.subject == situation.subject]
    return [p for p in points if p.instrument == situation.instrument] or [situation.latest]


def _fit(parts: list[str], ending: str = "") -> str:
    """The parts in order while they fit (the first always), then ``ending``; never cut mid-word."""
    text = parts[0]
    for part in parts[1:]:
        if len(text + part + ending) <= SUMMARY_LIMIT:
            text += part
    text += ending
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1].rsplit(" ", 1)[0] + "…"


def number(value: Decimal) -> str:
    """A score as clinicians write it: at most one decimal, no trailing zero ("32", "31.5")."""
    rounded = value.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP).normalize()
    return format(rounded, "f")
