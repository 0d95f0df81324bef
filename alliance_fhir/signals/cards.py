"""Signals -> CDS Hooks 2.0 cards: what a clinician sees when the chart opens (``patient-view``).

A pure function of the detected signals and the trajectories they came from: no clock, no
server, no HTTP. The service layer (``service/cds``) authorises the call, gathers the scores
(prefetch or its own FHIR read), detects the signals and hands them here.

What makes a card, and why:

- one card per **open** signal (rupture, low alliance, early warning, split alliance,
  client/therapist gap): resolved history belongs in the report, not in an alert;
- a rupture **repaired at the latest session** of its series gets an ``info`` card: the repair
  conversation is worth acknowledging once, and it is gone at the next session;
- never ``critical``: an alliance signal asks for a conversation, not an intervention, and
  alert fatigue is how decision support gets switched off. ``warning`` for every open signal,
  ``info`` for a signal whose rule is configured with ``severity: low``, and for a repair;
- ``summary`` is one plain sentence of at most :data:`SUMMARY_LIMIT` characters (the
  instrument, the score, the date; no cutoff-confidence codes); ``detail`` is markdown with the
  scores, dates, instrument, the rule and whose rule it is (the authors' or a project decision);
- ``source.topic`` is the signal's code in the project CodeSystem, so an EHR can file, filter
  or suppress cards by kind.

A card says only what this code computed from the scores. A DetectedIssue found on the FHIR
server is never shown: anyone who can write to the server can write one, with our identifier
and any text. Our open issues only lend their server id to the card of the signal they record
(a FHIR id, checked) and, for a split alliance, say which other members' scores to read so
the service can detect the split again (:func:`split_evidence`). Every string in ``detail``
that comes from data rather than from this module (instrument names and titles, the therapist
reference, the rule sentences built with scale names) goes through
:func:`~alliance_fhir._text.markdown_text`, so it renders as the text it is: no link, image or
HTML can ride in on it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from .._ids import CDS_CARD_ID_BASE, PROJECT_CODESYSTEM, SIGNAL_IDENTIFIER_SYSTEM, SIGNAL_STATUS_EXTENSION
from .._refs import parse_reference, valid_id
from .._text import markdown_text
from ..instruments.models import InstrumentMapping
from .rules import EARLY_WARNING, GAP, LOW_ALLIANCE, RUPTURE, SIGNAL_KINDS, SPLIT, Signal, percent_of_maximum
from .trajectory import ScorePoint, Trajectories

__all__ = [
    "CARD_KINDS",
    "REPAIR",
    "SOURCE_LABEL",
    "SUMMARY_LIMIT",
    "alliance_cards",
    "card_for",
    "open_issues",
    "split_evidence",
]

SUMMARY_LIMIT = 140
"""The card summary's limit in characters (CDS Hooks 2.0: a one-sentence summary under 140)."""
SOURCE_LABEL = "alliance-fhir (therapeutic alliance signals)"
REPAIR = "alliance-repair"
CARD_KINDS = (RUPTURE, LOW_ALLIANCE, EARLY_WARNING, SPLIT, GAP)
"""The signal kinds that make a card while open, in the order cards are listed."""
_TOPIC_DISPLAY = {**SIGNAL_KINDS, REPAIR: "Alliance repaired"}
_WHOSE_RULE = {
    "authors": "the instrument authors' published rule",
    "project decision": "a project decision of alliance-fhir (the authors publish no such rule; see the signals documentation)",
}
_CARD_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, CDS_CARD_ID_BASE)
MAX_EVIDENCE = 200
"""Most score references read from the open split issues of one patient (a bound on the hook's extra read)."""
ReportLink = Callable[[str], str | None]
"""Patient reference -> the URL of that patient's report (or None: no link)."""


def alliance_cards(
    signals: Iterable[Signal],
    trajectories: Trajectories,
    patient: str,
    *,
    hook_instance: str = "",
    report_link: ReportLink | None = None,
    issues: Iterable[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    """The cards for ``patient`` (``Patient/<id>``): open signals first by kind, then repairs; [] when nothing to say.

    ``issues`` are the patient's DetectedIssues as read from the server (ours are recognised by
    their identifier): a card names the record of its signal by id, nothing more is taken from
    them. A split alliance makes a card only when ``signals`` hold it, i.e. when the caller read
    the other members' scores (:func:`split_evidence`) and detected it again.
    ``hook_instance`` makes each card's uuid unique to the call.
    """
    mappings = {s.instrument: s.mapping for s in trajectories.series}
    latest = {(s.subject, s.instrument, s.focus, s.episode): s.points[-1] for s in trajectories.series if s.points}
    mine = [s for s in signals if s.subject == patient and s.instrument in mappings]
    chosen = [s for s in mine if s.status == "active" and s.kind in CARD_KINDS]
    chosen.sort(key=lambda s: (CARD_KINDS.index(s.kind), s.opened_at, s.key))
    repairs = [
        s
        for s in mine
        if s.kind == RUPTURE
        and s.resolved_by is not None
        and latest.get((s.subject, s.instrument, s.focus, s.episode)) == s.resolved_by
    ]
    link = report_link(patient) if report_link else None
    ids = {key: str(issue["id"]) for key, issue in open_issues(issues, patient).items()}
    cards = [card_for(s, mappings, hook_instance=hook_instance, link=link, issue_id=ids.get(s.key)) for s in chosen]
    cards += [
        card_for(s, mappings, hook_instance=hook_instance, link=link, issue_id=ids.get(s.key), repair=True)
        for s in repairs
    ]
    return cards


def open_issues(issues: Iterable[Any], patient: str) -> dict[str, dict[str, Any]]:
    """Our open DetectedIssues about ``patient`` (with a valid FHIR id), by signal key; malformed ones are skipped."""
    found: dict[str, dict[str, Any]] = {}
    for issue in issues:
        if not isinstance(issue, dict) or issue.get("resourceType") != "DetectedIssue" or not valid_id(issue.get("id")):
            continue
        subject = issue.get("patient")
        if not isinstance(subject, dict) or subject.get("reference") != patient or issue.get("status") != "final":
            continue
        status = next(
            (e.get("valueCode") for e in _dicts(issue.get("extension")) if e.get("url") == SIGNAL_STATUS_EXTENSION),
            "active",
        )
        key = next(
            (
                i["value"]
                for i in _dicts(issue.get("identifier"))
                if i.get("system") == SIGNAL_IDENTIFIER_SYSTEM and isinstance(i.get("value"), str) and i["value"]
            ),
            None,
        )
        if key is not None and status == "active":
            found[key] = issue
    return found


def split_evidence(issues: Iterable[dict[str, Any]], base_url: str) -> set[str]:
    """Ids of the score Observations that our open split-alliance issues cite (on ``base_url``), at most :data:`MAX_EVIDENCE`.

    Only where to look: the caller reads those Observations from its own server and detects the
    split again, so an issue citing anything else simply makes no card.
    """
    ids: set[str] = set()
    for issue in issues:
        if _issue_kind(issue) != SPLIT:
            continue
        for evidence in _dicts(issue.get("evidence")):
            for detail in _dicts(evidence.get("detail")):
                ref = parse_reference(detail.get("reference"))
                if ref is not None and ref.type == "Observation" and ref.on(base_url) and len(ids) < MAX_EVIDENCE:
                    ids.add(ref.id)
    return ids


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _links(link: str) -> list[dict[str, Any]]:
    # autoLaunchable is optional in CDS Hooks 2.0; stated anyway (false: the clinician chooses), since
    # some clients' models require it (HealthChain 0.16's Link does)
    return [
        {"label": "Open the alliance report for this client", "url": link, "type": "absolute", "autoLaunchable": False}
    ]


def _issue_kind(issue: dict[str, Any]) -> str | None:
    code = issue.get("code")
    for coding in _dicts(code.get("coding")) if isinstance(code, dict) else []:
        if coding.get("system") == PROJECT_CODESYSTEM and coding.get("code") in SIGNAL_KINDS:
            return str(coding["code"])
    return None


def card_for(
    signal: Signal,
    mappings: Mapping[str, InstrumentMapping],
    *,
    hook_instance: str = "",
    link: str | None = None,
    issue_id: str | None = None,
    repair: bool = False,
) -> dict[str, Any]:
    """One CDS Hooks card for one signal (``repair``: the info card of a repaired rupture)."""
    mapping = mappings[signal.instrument]
    code = REPAIR if repair else signal.kind
    indicator = "info" if repair or signal.severity == "low" else "warning"
    summary = _repair_summary(signal, mapping) if repair else _summary(signal, mappings)
    detail = _detail(signal, mappings, issue_id, repair)
    return _card(f"{hook_instance}|{code}|{signal.key}", code, summary, detail, indicator, link)


def _card(name: str, code: str, summary: str, detail: str, indicator: str, link: str | None) -> dict[str, Any]:
    """The card's shape, in one place: uuid derived from ``name``, topic from ``code``."""
    card: dict[str, Any] = {
        "uuid": str(uuid.uuid5(_CARD_NAMESPACE, name)),
        "summary": _fit(summary),
        "detail": detail,
        "indicator": indicator,
        "source": {
            "label": SOURCE_LABEL,
            "topic": {"system": PROJECT_CODESYSTEM, "code": code, "display": _TOPIC_DISPLAY[code]},
        },
    }
    if link:
        card["links"] = _links(link)
    return card


# ---- summaries: one plain sentence each ---------------------------------------------------------


def _summary(signal: Signal, mappings: Mapping[str, InstrumentMapping]) -> str:
    mapping = mappings[signal.instrument]
    name, opened = mapping.name, signal.opened
    if signal.kind == RUPTURE:
        before = _before(signal)
        fell = f"fell from {_n(before.value)} to {_n(opened.value)}" if before else f"fell to {_n(opened.value)}"
        return f"Possible alliance rupture: {name} {fell} on {_day(opened)}, not yet back to the earlier level"
    if signal.kind == LOW_ALLIANCE:
        last = signal.evidence[-1]
        cutoff = mapping.low_alliance_cutoff()
        level = f", below the level of concern ({cutoff.threshold:g})" if cutoff else ""
        return f"Low alliance: {name} {_n(last.value)} on {_day(last)}{level}"
    if signal.kind == EARLY_WARNING:
        return (
            f"Early alliance warning: {name} {_n(opened.value)} in session {opened.session_number} "
            f"({_day(opened)}), low or falling early in treatment"
        )
    if signal.kind == GAP:
        client, therapist = _gap_pair(signal, mappings)
        return (
            f"Client rates the alliance {_gap_word(client, therapist)} than the therapist does: "
            f"{_n(client)}% vs {_n(therapist)}% of the maximum on {_day(opened)}"
        )
    others = [p for p in signal.evidence if p.subject != signal.subject and p.session == opened.session]
    highest = max((p.value for p in others), default=None)
    versus = f", others up to {_n(highest)}" if highest is not None else ""
    return f"Split alliance in joint sessions: this client rated {name} {_n(opened.value)} on {_day(opened)}{versus}"


def _repair_summary(signal: Signal, mapping: InstrumentMapping) -> str:
    assert signal.resolved_by is not None  # only repaired ruptures reach here
    return (
        f"Alliance repaired: {mapping.name} back to {_n(signal.resolved_by.value)} on {_day(signal.resolved_by)} "
        f"after the drop to {_n(signal.opened.value)} on {_day(signal.opened)}"
    )


def _fit(text: str) -> str:
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1].rstrip(" ,;:") + "…"


# ---- detail: markdown with the evidence and the rule --------------------------------------------


def _detail(signal: Signal, mappings: Mapping[str, InstrumentMapping], issue_id: str | None, repair: bool) -> str:
    mapping = mappings[signal.instrument]
    title = "Alliance repaired" if repair else SIGNAL_KINDS[signal.kind]
    therapist = f", with {markdown_text(signal.focus)}" if signal.focus else ""
    status = (
        f"opened {_day(signal.opened)}, repaired {_day(signal.resolved_by)}"
        if signal.resolved_by is not None
        else f"open since {_day(signal.opened)}"
    )
    lines = [
        f"**{title}** on the {markdown_text(mapping.name)} ({markdown_text(mapping.title)}){therapist}: {status}.",
        "",
        _evidence_table(signal.evidence, mappings, signal),
        "",
        f"What was found: {markdown_text(signal.finding, limit=2000)}",
        "",
        f"Rule: {markdown_text(signal.rule, limit=1000)}. This is {_whose_rule(signal.source)}.",
    ]
    if issue_id and valid_id(issue_id):
        lines += ["", f"Recorded on the FHIR server as DetectedIssue/{markdown_text(issue_id)}."]
    lines += ["", "Scores are the client's own ratings; discuss them with the client rather than acting on them alone."]
    return "\n".join(lines)


def _evidence_table(points: Sequence[ScorePoint], mappings: Mapping[str, InstrumentMapping], signal: Signal) -> str:
    rows = ["| Date | Session | Form | Total score | Note |", "|---|---|---|---|---|"]
    for point in points:
        mapping = mappings.get(point.instrument)
        form = markdown_text(mapping.name if mapping else point.instrument)
        who = "this client" if point.subject == signal.subject else "another member"
        note = "signal opened" if point == signal.opened else "repair" if point == signal.resolved_by else ""
        if signal.kind == SPLIT:
            note = ", ".join(n for n in (who, note) if n)
        if signal.kind == GAP and mapping is not None:
            pct = percent_of_maximum(point.value, mapping, "total")
            form += f" ({markdown_text(mapping.respondent)}, {_n(pct)}% of maximum)"
        rows.append(f"| {_day(point)} | {point.session_number or '-'} | {form} | {_n(point.value)} | {note} |")
    return "\n".join(rows)


def _whose_rule(source: str) -> str:
    return _WHOSE_RULE.get(source) or markdown_text(source)


# ---- helpers --------------------------------------------------------------------------------


def _before(signal: Signal) -> ScorePoint | None:
    earlier = [p for p in signal.evidence if p.time < signal.opened.time and p.subject == signal.subject]
    return earlier[-1] if earlier else None


def _gap_pair(signal: Signal, mappings: Mapping[str, InstrumentMapping]) -> tuple[Decimal, Decimal]:
    """(client %, therapist %) of the opening session."""
    values: dict[str, Decimal] = {}
    opened_session = signal.opened.session or signal.opened.encounter
    for point in signal.evidence:
        mapping = mappings.get(point.instrument)
        if mapping is None or (point.session or point.encounter) != opened_session:
            continue
        side = "therapist" if mapping.respondent == "therapist" else "client"
        values.setdefault(side, percent_of_maximum(point.value, mapping, "total"))
    return values.get("client", Decimal(0)), values.get("therapist", Decimal(0))


def _gap_word(client: Decimal, therapist: Decimal) -> str:
    return "lower" if client < therapist else "higher"


def _day(point: ScorePoint) -> str:
    return point.time.date().isoformat()


def _n(value: Decimal) -> str:
    rounded = value.quantize(Decimal("0.1")).normalize()
    return format(rounded, "f")
