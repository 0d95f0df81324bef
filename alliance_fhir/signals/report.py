"""Reports for clinicians: a client's alliance report and a practitioner's caseload.

The HTML report (the target of every CDS card's link) needs nothing beyond the base install: its
charts are inline SVG drawn by :mod:`.svg_chart`, so ``make demo`` alone serves it. PNG, SVG and
PDF files (``report --out x.png``) are drawn by matplotlib, an optional extra, in
:mod:`.report_images`, imported only when such a format is asked for.

What the client page shows, for a clinician who opens it from the chart in a 600 px side panel:

- "Alliance report: <the client's name>" and an "as of" date (given by the caller: no clock here,
  so the same data and date give the same bytes);
- every situation a card shows (:func:`~.situations.current_situations`): its summary, level of
  concern, the part of the alliance that fell, each rule that fired and whose rule it is, and the
  discussion prompt when a prompt set is given;
- per instrument and therapist: what the instrument is (range, what higher means, its level of
  concern and whose it is), the total by session number with the level of concern shaded and
  the signals marked, each part (WAI-SR subscales, SRS lines) as its own small chart on the same
  y range, and a table mirror of every chart;
- joint sessions (couple, family, group): this client's score against the highest score of the
  other members, unnamed (see ``docs/signals.md``, "The report": another client's identity never
  appears in this client's report);
- the history: situations that are over.

One column, ``max-width``, tables that wrap: readable at 600 px. No script, no external
resource (the page carries patient data and is opened on clinical workstations). Every string
from data (names, titles, citations) is escaped.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal, Protocol

from ..instruments.models import InstrumentMapping, ScaleSpec
from .names import Names
from .rules import EARLY_WARNING, GAP, LOW_ALLIANCE, RUPTURE, SIGNAL_KINDS, SPLIT, Signal, gap_pairs, percent_of_maximum
from .situations import LEVEL_WORDS, PART_WORDS, Situation, current_situations, number, situation_history
from .svg_chart import Band, Chart, Line, Marker, chart_table, line_chart
from .trajectory import ScorePoint, Series, Trajectories

__all__ = [
    "IMAGE_FORMATS",
    "REPORT_FORMATS",
    "OverviewRow",
    "PromptSource",
    "practitioner_overview",
    "render_client_html",
    "render_practitioner_html",
    "render_report",
]

REPORT_FORMATS = ("html", "png", "svg", "pdf")
"""What ``report --out`` writes, chosen by the file's suffix."""
IMAGE_FORMATS = ("png", "svg", "pdf")
"""The formats drawn by matplotlib (the ``report`` extra); HTML needs nothing extra."""

_CSS = (
    "body{font:16px/1.45 system-ui,sans-serif;color:#1a1a1a;margin:0 auto;padding:.75rem;max-width:46rem}"
    "h1{font-size:1.35rem;margin:.2rem 0}h2{font-size:1.15rem;margin:1.6rem 0 .4rem}"
    "h3{font-size:1rem;margin:1.1rem 0 .3rem}p{margin:.4rem 0}"
    "svg{display:block;width:100%;height:auto;margin:.4rem 0}"
    "table{width:100%;table-layout:fixed;border-collapse:collapse;margin:.4rem 0 1rem;font-size:.9rem}"
    "caption{text-align:left;font-weight:600;padding:.2rem 0}"
    "th,td{border:1px solid #c8c8c8;padding:.25rem .4rem;text-align:left;vertical-align:top;"
    "overflow-wrap:anywhere;word-break:normal}th{background:#f0f0f0}"
    ".asof,.source{color:#555;font-size:.9rem}"
    ".situation{border-left:4px solid #9e9e9e;padding:.2rem .7rem;margin:.8rem 0}"
    ".high{border-color:#b71c1c}.moderate{border-color:#e65100}.low{border-color:#2e7d32}"
    ".level{font-weight:600}ul{padding-left:1.2rem;margin:.3rem 0}"
)
_RESPONDENT = {
    "client": "the client",
    "therapist": "the therapist",
    "observer": "an observer",
    "group-member": "each member of the group",
    "parent": "a parent",
}
_WHOSE = {"authors": "the instrument's authors' rule", "project decision": "a project decision of alliance-fhir"}
_SHORT = {LOW_ALLIANCE: "below level", RUPTURE: "drop", EARLY_WARNING: "early warning", SPLIT: "split", GAP: "gap"}


class PromptText(Protocol):
    """A discussion prompt (:mod:`.prompts`): its words, where it comes from and whose it is."""

    @property
    def text(self) -> str: ...

    @property
    def source(self) -> str: ...

    @property
    def whose(self) -> str: ...


class PromptSource(Protocol):
    """What the report needs of a prompt set: a prompt per situation fact and per part of the alliance."""

    def situation(self, fact: str) -> PromptText | None: ...

    def part(self, part: Literal["goals", "tasks", "bond", "overall"]) -> PromptText | None: ...


@dataclass(frozen=True, slots=True)
class OverviewRow:
    """One client-instrument line of a practitioner's caseload."""

    subject: str
    instrument: str
    episode: str | None
    sessions: int
    latest: Decimal
    latest_time: datetime
    change: Decimal | None
    trend: str
    open_signals: tuple[str, ...]


def render_report(
    fmt: str,
    trajectories: Trajectories,
    signals: Sequence[Signal],
    *,
    subject: str | None = None,
    practitioner: str | None = None,
    names: Names | None = None,
    prompts: PromptSource | None = None,
    as_of: datetime | None = None,
) -> bytes:
    """The client view (``subject``) or the caseload view (``practitioner``) in ``fmt`` (one of :data:`REPORT_FORMATS`).

    ``names`` turns references into people's names; ``prompts`` adds the discussion prompts;
    ``as_of`` is the date the page says it was made (default: the latest score's date).
    HTML needs no optional extra; the image formats import matplotlib (:mod:`.report_images`).

    Raises:
        ValueError: an unknown format, or not exactly one of subject and practitioner.
        ModuleNotFoundError: an image format without matplotlib (the message names the extra).
    """
    if fmt not in REPORT_FORMATS:
        raise ValueError(f"unknown report format {fmt!r} (formats: {', '.join(REPORT_FORMATS)})")
    if (subject is None) == (practitioner is None):
        raise ValueError("give exactly one of subject or practitioner")
    names = names or Names()
    if fmt != "html":
        from .report_images import render_image  # matplotlib: only for the image formats

        return render_image(fmt, trajectories, signals, subject=subject, practitioner=practitioner, names=names)
    if practitioner is not None:
        rows = practitioner_overview(trajectories, signals, practitioner)
        situations = _caseload_situations(signals, trajectories, practitioner)
        page = render_practitioner_html(rows, practitioner, names=names, situations=situations, as_of=as_of)
        return page.encode("utf-8")
    assert subject is not None
    return render_client_html(trajectories, signals, subject, names=names, prompts=prompts, as_of=as_of).encode("utf-8")


# ---- the client page ---------------------------------------------------------------------------


def render_client_html(
    trajectories: Trajectories,
    signals: Sequence[Signal],
    subject: str,
    *,
    names: Names | None = None,
    prompts: PromptSource | None = None,
    as_of: datetime | None = None,
) -> str:
    """The client's report as one self-contained HTML page (see the module docstring for what it shows)."""
    names = names or Names()
    mine = trajectories.for_subject(subject)
    client = names.client(subject)
    body = [f"<h1>Alliance report: {_e(client)}</h1>", _as_of_line(mine, as_of)]
    body += _now_section(current_situations(signals, trajectories, subject), names, prompts)
    counter = _Counter()
    for series in sorted(mine, key=_series_order):
        body += _series_section(series, trajectories, signals, names, counter)
    body += _gap_sections(trajectories, subject, signals, names, counter)
    body += _history_section(signals, trajectories, subject, names)
    if not mine:
        body.append("<p>No alliance or outcome scores for this client yet.</p>")
    return _page(f"Alliance report: {client}", body)


def _as_of_line(series: Sequence[Series], as_of: datetime | None) -> str:
    points = [p for s in series for p in s.points]
    when = as_of or max((p.time for p in points), default=None)
    day = when.date().isoformat() if when else "no scores yet"
    return f'<p class="asof">As of {_e(day)}.</p>'


def _series_order(series: Series) -> tuple[bool, str, str, str]:
    return (series.mapping.measures != "alliance", series.instrument, series.focus or "", series.episode or "")


class _Counter:
    """Numbers the charts of one page, so their element ids are unique and the same every time."""

    def __init__(self) -> None:
        self.count = 0

    def next(self) -> str:
        self.count += 1
        return f"chart-{self.count}"


# ---- what needs attention now (every situation a card shows) ----------------------------------------


def _now_section(situations: Sequence[Situation], names: Names, prompts: PromptSource | None) -> list[str]:
    """One block per situation, as the cards show them: summary, level, part, prompt, the rules that fired."""
    out = ["<h2>Now</h2>"]
    if not situations:
        return [*out, "<p>No alliance signal is open.</p>"]
    for situation in situations:
        out.append(_situation_block(situation, names, prompts))
    return out


def _situation_block(situation: Situation, names: Names, prompts: PromptSource | None) -> str:
    mapping = situation.mapping
    with_whom = names.known(situation.focus)
    heading = f"{mapping.name}" + (f" with {with_whom}" if with_whom else "")
    lines = [
        f'<section class="situation {situation.level}"><h3>{_e(heading)}</h3>',
        f"<p>{_e(situation.summary)}</p>",
    ]
    if situation.level == "low":  # a concern's summary already ends with its level ("High concern.")
        lines.append(f'<p class="level">{_e(LEVEL_WORDS["low"])}</p>')
    part = situation.part
    if part is not None and part.change is not None and part.change < 0:
        before = number(part.before) if part.before is not None else "-"
        lines.append(
            f"<p>Part that fell most: {_e(part.words)}, {_e(number(part.now))} of {_e(number(part.maximum))}"
            f" (down {_e(number(-part.change))} from {_e(before)}).</p>"
        )
    lines += _prompt_lines(situation, prompts)
    fired = [_signal_words(s, situation.series) for s in situation.signals]
    if fired:
        lines.append("<p>What fired:</p><ul>" + "".join(f"<li>{_e(f)}</li>" for f in fired) + "</ul>")
    lines.append("</section>")
    return "".join(lines)


def _prompt_lines(situation: Situation, prompts: PromptSource | None) -> list[str]:
    if prompts is None:
        return []
    fact = situation.kind if situation.kind != "concern" else (situation.facts[0] if situation.facts else None)
    chosen = [prompts.situation(fact)] if fact else []
    if situation.part is not None and situation.part.change is not None and situation.part.change < 0:
        chosen.append(prompts.part(situation.part.part))
    out = []
    for prompt in (p for p in chosen if p is not None):
        whose = "the literature" if prompt.whose == "literature" else prompt.whose
        out.append(
            f'<p>To ask: {_e(prompt.text)}</p><p class="source">Prompt: {_e(whose)}; source: {_e(prompt.source)}.</p>'
        )
    return out


def _signal_words(signal: Signal, series: Series) -> str:
    """One rule that fired, in plain words: what, at which session, whose rule (no ids, codes or operators)."""
    opened = signal.opened
    text = f"{SIGNAL_KINDS[signal.kind]}: {_what(signal, series)}"
    if signal.resolved_by is not None:
        verb = "repaired" if signal.kind == RUPTURE else "over"
        text += f"; {verb} at session {signal.resolved_by.session_number} ({number(signal.resolved_by.value)})"
    elif signal.kind != SPLIT:
        text += (
            f"; still open at session {series.points[-1].session_number if series.points else opened.session_number}"
        )
    return text + f". Rule: {_WHOSE.get(signal.source, signal.source)}."


def _what(signal: Signal, series: Series) -> str:
    opened = signal.opened
    at = f"session {opened.session_number}"
    if signal.kind == LOW_ALLIANCE:
        cutoff = series.mapping.low_alliance_cutoff()
        level = f", {'below' if cutoff.operator == '<' else 'at or below'} {cutoff.threshold:g}" if cutoff else ""
        return f"{number(opened.value)} at {at}{level}, the level of concern"
    if signal.kind in (RUPTURE, EARLY_WARNING):
        before = _previous(series, opened)
        fall = f", from {number(before.value)} at session {before.session_number}" if before is not None else ""
        word = "fell to" if signal.kind == RUPTURE else "low or falling early:"
        return f"{word} {number(opened.value)} at {at}{fall}"
    if signal.kind == SPLIT:
        return f"rated the joint session lower than the other members, from {at}"
    return f"client and therapist rated the alliance far apart, from {at}"


def _previous(series: Series, point: ScorePoint) -> ScorePoint | None:
    earlier = [p for p in series.points if p.session_number < point.session_number]
    return earlier[-1] if earlier else None


# ---- one instrument with one therapist: explanation, total, parts, joint sessions --------------------


def _series_section(
    series: Series, trajectories: Trajectories, signals: Sequence[Signal], names: Names, counter: _Counter
) -> list[str]:
    mapping = series.mapping
    with_whom = names.known(series.focus)
    heading = f"{mapping.name}: {mapping.title}" + (f", with {with_whom}" if with_whom else "")
    out = [f"<h2>{_e(heading)}</h2>", f"<p>{_e(_explain(mapping))}</p>"]
    out += _cutoff_lines(mapping)
    if not series.points:
        return out
    mine = [s for s in signals if (s.subject, s.instrument, s.focus or "", s.episode or "") == series.key]
    total = _series_chart(series, mapping.total, mine, counter.next(), f"{mapping.total.title} by session")
    out += [line_chart(total), chart_table(total)]
    parts = [spec for spec in mapping.subscales if any(p.scale(spec.id) is not None for p in series.points)]
    if parts:
        out.append("<h3>Parts of the alliance</h3>" if mapping.measures == "alliance" else "<h3>Subscales</h3>")
        out.append(f"<p>Each part on its own chart, all on the same range ({_e(_range(parts[0]))}).</p>")
        for spec in parts:
            chart = _series_chart(series, spec, [], counter.next(), _part_title(spec), height=150)
            out += [f"<h4>{_e(_part_title(spec))}</h4>", line_chart(chart), chart_table(chart)]  # the name first
    out += _joint_section(series, trajectories, counter)
    return out


def _explain(mapping: InstrumentMapping) -> str:
    """What the instrument is, in one or two plain sentences."""
    who = _RESPONDENT.get(mapping.respondent, mapping.respondent)
    text = f"{mapping.name} ({mapping.title}) is filled in by {who}. Scores run from {_range(mapping.total)}; "
    if mapping.measures == "alliance":
        return text + "higher means a stronger alliance."
    return text + "it measures how the client is doing (an outcome), not the alliance."


def _cutoff_lines(mapping: InstrumentMapping) -> list[str]:
    cutoff = mapping.low_alliance_cutoff()
    if cutoff is None:
        if mapping.measures == "alliance":
            return ["<p>This instrument has no published level of concern; its signals read changes only.</p>"]
        return []
    where = "below" if cutoff.operator == "<" else "at or below"
    return [
        f"<p>Level of concern: {where} {_e(f'{cutoff.threshold:g}')} (shaded), the instrument's authors' cutoff.</p>",
        f'<p class="source">Source: {_e(_without_codes(cutoff.source))}</p>',
    ]


def _without_codes(text: str) -> str:
    """A citation without our evidence-grading tags ("[C2]"): those are for maintainers, not clinicians."""
    return re.sub(r"\s*\[(?:C1|C2|U|X)\]", "", text)


def _range(spec: ScaleSpec) -> str:
    return f"{spec.range.min:g} to {spec.range.max:g}"


def _part_title(spec: ScaleSpec) -> str:
    return f"{PART_WORDS[spec.part]} ({spec.title})" if spec.part else spec.title


def _series_chart(
    series: Series, spec: ScaleSpec, signals: Sequence[Signal], key: str, title: str, height: int = 220
) -> Chart:
    count = _session_count(series)
    values = _by_session(series.points, count, spec.id)
    mapping = series.mapping
    band = _band(mapping) if spec.id == mapping.total.id else None
    markers = _markers(signals)
    missed = [str(m.session_number) for m in series.missing]
    description = (
        f"{spec.title} for sessions 1 to {count}, on a scale from {_range(spec)}"
        + (f"; no score at session(s) {', '.join(missed)}" if missed else "")
        + (f"; {band.label}" if band else "")
        + (f"; signals: {'; '.join(f'{m.label} at session {m.session}' for m in markers)}" if markers else "")
        + "."
    )
    return Chart(
        title=title,
        description=description,
        sessions=count,
        y_min=spec.range.min,
        y_max=spec.range.max,
        lines=(Line(spec.title, values),),
        band=band,
        markers=markers,
        dates=_dates(series, count),
        height=height,
        key=key,
    )


def _session_count(series: Series) -> int:
    numbers = [p.session_number for p in series.points] + [m.session_number for m in series.missing]
    return max(numbers, default=0)


def _by_session(points: Iterable[ScorePoint], count: int, scale: str) -> tuple[Decimal | None, ...]:
    found = {p.session_number: p.scale(scale) for p in points}
    return tuple(found.get(n) for n in range(1, count + 1))


def _dates(series: Series, count: int) -> tuple[str, ...]:
    days = {p.session_number: p.time.date().isoformat() for p in series.points}
    days.update({m.session_number: m.time.date().isoformat() for m in series.missing})
    return tuple(days.get(n, "") for n in range(1, count + 1))


def _band(mapping: InstrumentMapping) -> Band | None:
    cutoff = mapping.low_alliance_cutoff()
    if cutoff is None:
        return None
    where = "below" if cutoff.operator == "<" else "at or below"
    return Band(mapping.total.range.min, cutoff.threshold, f"level of concern: {where} {cutoff.threshold:g}")


def _markers(signals: Sequence[Signal]) -> tuple[Marker, ...]:
    """Where each signal opened, and where a rupture was repaired, in session order."""
    found = [Marker(s.opened.session_number, "opened", _SHORT[s.kind]) for s in signals]
    found += [
        Marker(s.resolved_by.session_number, "repaired", "repaired")
        for s in signals
        if s.kind == RUPTURE and s.resolved_by is not None
    ]
    unique = dict.fromkeys(found)  # the same label at the same session once
    return tuple(sorted(unique, key=lambda m: (m.session, m.shape, m.label)))


# ---- joint sessions: the split, without another client's identity ------------------------------------


def _joint_section(series: Series, trajectories: Trajectories, counter: _Counter) -> list[str]:
    """This client's score in each joint session against the highest score of the other members, unnamed.

    A joint session is one Encounter (or one ``partOf`` session) scored by other clients too, with
    the same instrument and therapist: the same sessions the split rule compares.

    Only values cross over: no name, reference or count of who was there beyond "the other
    members". The highest is what the split rule compares with (``docs/signals.md``).
    """
    others = _highest_other(series, trajectories)
    if not any(v is not None for v in others):
        return []
    count = _session_count(series)
    spec = series.mapping.total
    own = _by_session(series.points, count, "total")
    joint = tuple(own[n] if others[n] is not None else None for n in range(count))
    chart = Chart(
        title=f"Joint sessions: {spec.title}, this client and the highest of the other members",
        description=(
            f"{spec.title} in the joint sessions (couple, family or group) among sessions 1 to {count}: this client's "
            "score and the highest score of the other members, who are not named."
        ),
        sessions=count,
        y_min=spec.range.min,
        y_max=spec.range.max,
        lines=(Line("This client", joint), Line("Highest of the other members", others)),
        dates=_dates(series, count),
        key=counter.next(),
    )
    note = (
        "<p>In joint sessions the others' scores are shown only as the highest among them, without names: "
        "this report is about this client.</p>"
    )
    return ["<h3>Joint sessions</h3>", note, line_chart(chart), chart_table(chart)]


def _highest_other(series: Series, trajectories: Trajectories) -> tuple[Decimal | None, ...]:
    count = _session_count(series)
    by_session: dict[str, int] = {p.session: p.session_number for p in series.points if p.session}
    highest: dict[int, Decimal] = {}
    for other in trajectories.series:
        if other.subject == series.subject or other.instrument != series.instrument or other.focus != series.focus:
            continue
        for point in other.points:
            number_ = by_session.get(point.session or "")
            if number_ is not None:
                highest[number_] = max(highest.get(number_, point.value), point.value)
    return tuple(highest.get(n) for n in range(1, count + 1))


# ---- client and therapist forms side by side ----------------------------------------------------------


def _gap_sections(
    trajectories: Trajectories, subject: str, signals: Sequence[Signal], names: Names, counter: _Counter
) -> list[str]:
    out = []
    for client, therapist in gap_pairs(trajectories, subject):
        count = _session_count(client)
        by_key = {p.session or p.encounter: p for p in therapist.points}
        own = tuple(
            None if v is None else percent_of_maximum(v, client.mapping, "total")
            for v in _by_session(client.points, count, "total")
        )
        theirs_by_number = {
            p.session_number: percent_of_maximum(q.value, therapist.mapping, "total")
            for p in client.points
            if (q := by_key.get(p.session or p.encounter)) is not None
        }
        theirs = tuple(theirs_by_number.get(n) for n in range(1, count + 1))
        mine = [s for s in signals if s.kind == GAP and s.subject == subject and s.focus == client.focus]
        with_whom = names.known(client.focus)
        chart = Chart(
            title=f"{client.mapping.name} and {therapist.mapping.name}: client and therapist, percent of maximum",
            description=(
                f"The client's {client.mapping.name} and the therapist's {therapist.mapping.name} for sessions 1 to "
                f"{count}, each as a percent of its form's maximum (0 to 100)."
            ),
            sessions=count,
            y_min=0,
            y_max=100,
            lines=(Line("Client (%)", _rounded(own)), Line("Therapist (%)", _rounded(theirs))),
            markers=_markers(mine),
            dates=_dates(client, count),
            key=counter.next(),
        )
        heading = "Client and therapist ratings" + (f", with {with_whom}" if with_whom else "")
        out += [f"<h2>{_e(heading)}</h2>", line_chart(chart), chart_table(chart)]
    return out


def _rounded(values: tuple[Decimal | None, ...]) -> tuple[Decimal | None, ...]:
    """Percentages to one decimal, halves up as people round (81.25 -> 81.3)."""
    return tuple(None if v is None else v.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP) for v in values)


def _history_section(signals: Sequence[Signal], trajectories: Trajectories, subject: str, names: Names) -> list[str]:
    past = [s for s in situation_history(signals, trajectories) if s.subject == subject and s.status == "resolved"]
    out = ["<h2>History</h2>"]
    if not past:
        return [*out, "<p>No earlier signal that is now over.</p>"]
    head = ["Instrument", "Therapist", "From", "To", "What happened"]
    rows = []
    for situation in past:
        end = situation.resolved_by
        what = "; ".join(_signal_words(s, situation.series) for s in situation.signals)
        cells = [
            situation.mapping.name,
            names.therapist(situation.focus),
            f"Session {situation.opened.session_number} ({situation.opened.time.date().isoformat()})",
            f"Session {end.session_number} ({end.time.date().isoformat()})" if end else "-",
            what,
        ]
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    return [*out, _table(head, rows, "Signals that are over")]


# ---- the caseload view -------------------------------------------------------------------------------


def practitioner_overview(
    trajectories: Trajectories, signals: Iterable[Signal], practitioner: str
) -> list[OverviewRow]:
    """The practitioner's clients (alliance measures): latest score, last change, trend and open signals.

    Rows with more open signals come first, so the clients who need attention head the list.
    """
    open_by_series: dict[tuple[str, str, str | None], list[str]] = {}
    for signal in signals:
        if signal.status == "active" and signal.focus == practitioner:
            open_by_series.setdefault((signal.subject, signal.instrument, signal.episode), []).append(signal.kind)
    rows = []
    for series in trajectories.series:
        if series.focus != practitioner or series.mapping.measures != "alliance" or not series.points:
            continue
        last = series.points[-1]
        change = last.value - series.points[-2].value if len(series.points) > 1 else None
        kinds = tuple(sorted(set(open_by_series.get((series.subject, series.instrument, series.episode), []))))
        count, trend = len(series.points), _trend(change)
        rows.append(
            OverviewRow(
                series.subject, series.instrument, series.episode, count, last.value, last.time, change, trend, kinds
            )
        )
    return sorted(rows, key=lambda r: (-len(r.open_signals), r.subject, r.instrument, r.episode or ""))


def _caseload_situations(signals: Sequence[Signal], trajectories: Trajectories, practitioner: str) -> list[Situation]:
    return [s for s in current_situations(signals, trajectories, on_track=False) if s.focus == practitioner]


_CASELOAD_HEAD = ["Client", "Instrument", "Scored sessions", "Latest score", "Date", "Last change", "Now"]


def render_practitioner_html(
    rows: Sequence[OverviewRow],
    practitioner: str,
    *,
    names: Names | None = None,
    situations: Sequence[Situation] = (),
    as_of: datetime | None = None,
) -> str:
    """A practitioner's caseload as a self-contained HTML page: clients by name, with the situations the cards show."""
    names = names or Names()
    by_series: dict[tuple[str, str, str], list[Situation]] = {}
    for situation in situations:
        by_series.setdefault((situation.subject, situation.instrument, situation.series.episode or ""), []).append(
            situation
        )
    lines = []
    for row in rows:
        shown = by_series.get((row.subject, row.instrument, row.episode or ""), [])
        now = " ".join(f"{s.summary}" for s in shown) or (
            ", ".join(SIGNAL_KINDS[k] for k in row.open_signals) or "nothing open"
        )
        change = "-" if row.change is None else ("+" if row.change > 0 else "") + number(row.change)
        cells = [
            names.known(row.subject) or "(no name on file)",
            row.instrument.upper(),
            str(row.sessions),
            number(row.latest),
            row.latest_time.date().isoformat(),
            change,
        ]
        level = max((s.level for s in shown), key=["low", "moderate", "high"].index, default=None)
        css = f' class="level {level}"' if level and level != "low" else ""
        lines.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + f"<td{css}>{_e(now)}</td></tr>")
    title = f"Alliance caseload: {names.therapist(practitioner)}"
    table = (
        _table(_CASELOAD_HEAD, lines, "Clients with alliance scores")
        if rows
        else ("<p>No clients with alliance scores.</p>")
    )
    when = f'<p class="asof">As of {_e(as_of.date().isoformat())}.</p>' if as_of else ""
    return _page(title, [f"<h1>{_e(title)}</h1>", when, table])


def _trend(change: Decimal | None) -> str:
    if change is None:
        return "-"
    return "rising" if change > 0 else "falling" if change < 0 else "stable"


# ---- HTML --------------------------------------------------------------------------------------------


def _table(head: list[str], lines: list[str], caption: str) -> str:
    header = "".join(f'<th scope="col">{_e(h)}</th>' for h in head)
    return (
        f"<table><caption>{_e(caption)}</caption><thead><tr>{header}</tr></thead>"
        f"<tbody>{''.join(lines)}</tbody></table>"
    )


def _page(title: str, body: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(b for b in body if b)
        + "\n</body></html>\n"
    )


def _e(text: str) -> str:
    return html.escape(text, quote=True)
