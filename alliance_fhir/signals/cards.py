"""Situations -> CDS Hooks 2.0 cards: what a clinician sees when the chart opens (``patient-view``).

A pure function of the detected signals and the trajectories they came from: no clock, no
server, no HTTP. The service layer (``service/cds``) authorises the call, gathers the scores
(prefetch or its own FHIR read) and the people's names, detects the signals and hands them here.

What makes a card, and why:

- **one card per situation** (:mod:`.situations`): the signals about one client, instrument and
  therapist that are open together are one story, told once. The card's summary says where the
  client is now and how concerned to be; its detail names the part of the alliance that fell most,
  what to ask (a prompt from the clinic's prompt set, with its source), the recent sessions and
  every rule that fired, with whose rule it is;
- a situation **repaired at the latest session** gets an ``info`` card, once: the repair is worth
  acknowledging, and it is gone at the next session;
- with ``on_track`` (a per-site setting), a client whose latest score meets no rule gets a quiet
  ``info`` card with the link, so every client with scores is one click from the trend;
- never ``critical``: ``warning`` for a high or moderate concern, ``info`` otherwise; alert
  fatigue is how decision support gets switched off;
- ``source.topic`` is a code of the project CodeSystem (the leading signal kind, or
  ``alliance-repair`` / ``alliance-on-track``), so an EHR can file or suppress cards by kind.

Clinical words only: names (from the server, or "this client" / "the therapist"), session numbers
and plain words; no FHIR references, ids or confidence codes. A DetectedIssue found on the FHIR
server is never shown: anyone who can write to the server can write one, with our identifier and
any text; the service only reads our open split issues to know which other members' scores to
read (:func:`split_evidence`). Every string from data (names, instrument titles, prompts, rule
sentences built with scale names) goes through :func:`~alliance_fhir._text.markdown_text`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from .._ids import CDS_CARD_ID_BASE, PROJECT_CODESYSTEM, SIGNAL_IDENTIFIER_SYSTEM, SIGNAL_STATUS_EXTENSION
from .._refs import ONE_SERVER, References, parse_reference, valid_id
from .._text import markdown_text
from ..instruments.models import InstrumentMapping
from .names import Names
from .prompts import PromptSet
from .rules import GAP, SIGNAL_KINDS, SPLIT, Signal
from .rules import percent_of_maximum as _percent
from .situations import LEVEL_WORDS, SUMMARY_LIMIT, Situation, current_situations, number
from .trajectory import ScorePoint, Trajectories

__all__ = [
    "LEVEL_WORDS",
    "PART_LABELS",
    "ON_TRACK",
    "REPAIR",
    "SOURCE_LABEL",
    "SUMMARY_LIMIT",
    "alliance_cards",
    "open_issues",
    "situation_card",
    "topic_code",
    "card_detail",
    "split_evidence",
]

SOURCE_LABEL = "alliance-fhir (therapeutic alliance signals)"
REPAIR = "alliance-repair"
ON_TRACK = "alliance-on-track"
PART_LABELS = {
    "goals": "the goals",
    "tasks": "the way of working",
    "bond": "the relationship",
    "overall": "the session overall",
}
"""How a part-prompt's heading names the part ("About the goals")."""
_TOPIC_DISPLAY = {**SIGNAL_KINDS, REPAIR: "Alliance repaired", ON_TRACK: "Alliance on track"}
_WHOSE_PROMPT = {"literature": "the literature", "project decision": "a project decision"}
_WHOSE_SHORT = {"authors": "the instrument's authors", "project decision": "a project decision of alliance-fhir"}
_CARD_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, CDS_CARD_ID_BASE)
_RECENT_ROWS = 6
MAX_EVIDENCE = 200
"""Most score references read from the open split issues of one patient (a bound on the hook's extra read)."""
ReportLink = Callable[[str], str | None]
"""Patient reference -> the URL of that patient's report (or None: no link)."""


def alliance_cards(
    signals: Sequence[Signal],
    trajectories: Trajectories,
    patient: str,
    *,
    hook_instance: str = "",
    report_link: ReportLink | None = None,
    names: Names | None = None,
    prompts: PromptSet | None = None,
    on_track: bool = True,
) -> list[dict[str, Any]]:
    """The cards for ``patient`` (``Patient/<id>``): one per current situation, the highest concern first.

    A split alliance makes a card only when ``signals`` hold it, i.e. when the caller read the
    other members' scores (:func:`split_evidence`) and detected it again. ``hook_instance`` makes
    each card's uuid unique to the call.
    """
    link = report_link(patient) if report_link else None
    found = current_situations(signals, trajectories, patient, on_track=on_track)
    mappings = {s.instrument: s.mapping for s in trajectories.series}
    return [
        situation_card(
            s, hook_instance=hook_instance, link=link, names=names or Names(), prompts=prompts, mappings=mappings
        )
        for s in found
    ]


def situation_card(
    situation: Situation,
    *,
    hook_instance: str = "",
    link: str | None = None,
    names: Names | None = None,
    prompts: PromptSet | None = None,
    mappings: Mapping[str, InstrumentMapping] | None = None,
) -> dict[str, Any]:
    """One CDS Hooks card for one situation (``mappings``: every instrument's, for a client-therapist gap)."""
    code = topic_code(situation)
    card: dict[str, Any] = {
        "uuid": str(uuid.uuid5(_CARD_NAMESPACE, f"{hook_instance}|{code}|{situation.key}")),
        "summary": situation.summary,
        "detail": card_detail(situation, names or Names(), prompts, mappings),
        "indicator": "info" if situation.level == "low" else "warning",
        "source": {
            "label": SOURCE_LABEL,
            "topic": {"system": PROJECT_CODESYSTEM, "code": code, "display": _TOPIC_DISPLAY[code]},
        },
    }
    if link:
        # autoLaunchable is optional in CDS Hooks 2.0; stated anyway (false: the clinician chooses), since
        # some clients' models require it (HealthChain 0.16's Link does)
        label = "Open the alliance trend for this client"
        card["links"] = [{"label": label, "url": link, "type": "absolute", "autoLaunchable": False}]
    return card


def topic_code(situation: Situation) -> str:
    """The card's topic: the leading signal kind of a concern, or repair / on track."""
    if situation.kind == "repair":
        return REPAIR
    if situation.kind == "on-track":
        return ON_TRACK
    return situation.leading.kind


# ---- the detail: markdown a clinician reads in a narrow panel -------------------------------------


def card_detail(
    situation: Situation,
    names: Names,
    prompts: PromptSet | None,
    mappings: Mapping[str, InstrumentMapping] | None = None,
) -> str:
    """Where the client is now, the part that fell, what to ask, the recent sessions, and the rules that fired."""
    mapping = situation.mapping
    who = markdown_text(names.client(situation.subject))
    therapist = names.known(situation.focus)
    with_whom = f", with {markdown_text(therapist)}" if therapist else ""
    lines = [
        f"**{who}**, {markdown_text(mapping.name)} ({markdown_text(mapping.title)}){with_whom}: "
        f"{_status_words(situation)}.",
        "",
        f"**Where {who} is now:** {_now_words(situation, mappings or {situation.instrument: mapping}, who)}",
    ]
    part = _part_words(situation)
    if part:
        lines += ["", part]
    lines += _prompt_lines(situation, prompts)
    lines += ["", _recent_table(situation)]
    if situation.signals and situation.kind == "concern":
        lines += ["", "**Why this card** (each rule that fired):", *[_rule_line(s) for s in situation.active_signals]]
    lines += ["", "The scores are the client's own ratings: they open a conversation, they do not replace it."]
    return "\n".join(lines)


def _status_words(situation: Situation) -> str:
    if situation.kind == "on-track":
        return "on track"
    if situation.kind == "repair":
        resolved = situation.resolved_by
        session = f" at session {resolved.session_number}" if resolved else ""
        return f"repaired{session}"
    return f"{LEVEL_WORDS[situation.level].lower()} since session {situation.opened.session_number}"


def _now_words(situation: Situation, mappings: Mapping[str, InstrumentMapping], who: str) -> str:
    mapping, now = situation.mapping, situation.latest
    text = f"{markdown_text(mapping.name)} {number(now.value)} at session {now.session_number} ({_day(now)})"
    best, change = situation.best, situation.change
    if best is not None and change is not None and change < 0:
        text += f", down {number(-change)} from {number(best.value)} at session {best.session_number}"
    elif best is not None and change is not None and change > 0:
        text += f", up {number(change)} from {number(best.value)} at session {best.session_number}"
    cutoff = mapping.low_alliance_cutoff()
    if cutoff is not None:
        low = now.value < Decimal(str(cutoff.threshold)) or (
            cutoff.operator == "<=" and now.value == Decimal(str(cutoff.threshold))
        )
        where = ("below" if cutoff.operator == "<" else "at or below") if low else "above"
        text += f"; {where} the level of concern ({cutoff.threshold:g})"
    text += "."
    extra = _joint_words(situation, who) + _gap_words(situation, mappings)
    return " ".join([text, *extra])


def _joint_words(situation: Situation, who: str) -> list[str]:
    """A split: how the other members rated the same joint session, without naming them."""
    split = next((s for s in situation.active_signals if s.kind == SPLIT), None)
    if split is None:
        return []
    last = max((p for p in split.evidence if p.subject == situation.subject), key=lambda p: p.time)
    others = [p.value for p in split.evidence if p.subject != situation.subject and p.session == last.session]
    if not others:
        return []
    rated = (
        f"the other member rated it {number(others[0])}"
        if len(others) == 1
        else f"the {len(others)} other members rated it up to {number(max(others))}"
    )
    return [f"In the joint session of {_day(last)}, {rated}; {who} rated it {number(last.value)}."]


def _gap_words(situation: Situation, mappings: Mapping[str, InstrumentMapping]) -> list[str]:
    gap = next((s for s in situation.active_signals if s.kind == GAP), None)
    if gap is None:
        return []
    client, therapist = _gap_pair(gap, mappings)
    if client is None or therapist is None:
        return []
    side = "lower" if client < therapist else "higher"
    return [
        f"The client rates the alliance {side} than the therapist does: {number(client)}% and "
        f"{number(therapist)}% of each form's maximum."
    ]


def _gap_pair(gap: Signal, mappings: Mapping[str, InstrumentMapping]) -> tuple[Decimal | None, Decimal | None]:
    """(client %, therapist %) at the latest session the gap covers, each on its own form's percent-of-maximum scale."""
    last = max(gap.evidence, key=lambda p: (p.time, p.observation.key))
    values: dict[str, Decimal] = {}
    for point in gap.evidence:
        mapping = mappings.get(point.instrument)
        if mapping is None or (point.session or point.encounter) != (last.session or last.encounter):
            continue
        side = "therapist" if mapping.respondent == "therapist" else "client"
        values.setdefault(side, _percent(point.value, mapping, "total"))
    return values.get("client"), values.get("therapist")


def _part_words(situation: Situation) -> str:
    part = situation.part
    if part is None or situation.kind != "concern":  # a repair or a client on track: no part to worry about
        return ""
    words = markdown_text(part.words)
    maximum = number(part.maximum)
    if part.change is not None and part.change < 0 and part.before is not None and situation.best is not None:
        return (
            f"**Part of the alliance that fell most:** {words}, from {number(part.before)} to "
            f"{number(part.now)} of {maximum} (down {number(-part.change)} since session "
            f"{situation.best.session_number})."
        )
    return f"**Part of the alliance rated lowest:** {words}, {number(part.now)} of {maximum}."


def _prompt_lines(situation: Situation, prompts: PromptSet | None) -> list[str]:
    if prompts is None:
        return []
    chosen = []
    fact = _prompt_fact(situation)
    first = prompts.situation(fact) if fact else None
    if first is not None:
        chosen.append(("What to ask" if situation.kind == "concern" else "Next step", first))
    part = situation.part
    if part is not None and situation.kind == "concern":
        second = prompts.part(part.part)
        if second is not None:
            chosen.append((f"About {PART_LABELS.get(part.part, part.part)}", second))
    lines: list[str] = []
    for title, prompt in chosen:
        source = prompt.source.rstrip(" .")
        whose = "" if source.lower().startswith("project decision") else f"; {_WHOSE_PROMPT[prompt.whose]}"
        lines += [
            "",
            f"**{title}:** {markdown_text(prompt.text, limit=400)} "
            f"_(Source: {markdown_text(source, limit=400)}{whose}.)_",
        ]
    return lines


def _prompt_fact(situation: Situation) -> str | None:
    if situation.kind in ("repair", "on-track"):
        return situation.kind
    return situation.facts[0] if situation.facts else None


def _recent_table(situation: Situation) -> str:
    mapping = situation.mapping
    points = [p for p in situation.series.points if p.session_number <= situation.latest.session_number]
    points = points[-_RECENT_ROWS:]
    part = situation.part
    head = f"| Session | Date | {markdown_text(mapping.name)} |"
    rule = "|---|---|---|"
    if part is not None:
        head += f" {markdown_text(part.domain)} |"
        rule += "---|"
    rows = [head, rule]
    for point in points:
        row = f"| {point.session_number} | {_day(point)} | {number(point.value)} |"
        if part is not None:
            value = point.scale(part.scale)
            row += f" {number(value) if value is not None else '-'} |"
        rows.append(row)
    return "\n".join(rows)


def _rule_line(signal: Signal) -> str:
    whose = _WHOSE_SHORT.get(signal.source, signal.source)
    return (
        f"- {SIGNAL_KINDS[signal.kind]}, since session {signal.opened.session_number}: "
        f"{markdown_text(signal.rule, limit=600)}. Whose rule: {markdown_text(whose)}."
    )


def _day(point: ScorePoint) -> str:
    return point.time.date().isoformat()


# ---- reading our DetectedIssues (only to know which other members' scores to read) ---------------


def open_issues(issues: Iterable[Any], patient: str, references: References = ONE_SERVER) -> dict[str, dict[str, Any]]:
    """Our open DetectedIssues about ``patient`` (with a valid FHIR id), by signal key; malformed ones are skipped.

    ``patient`` is named as the source names it (``Patient/1``); an issue in a results store names
    it absolute on the source, which ``references`` reads as the same patient.
    """
    found: dict[str, dict[str, Any]] = {}
    for issue in issues:
        if not isinstance(issue, dict) or issue.get("resourceType") != "DetectedIssue" or not valid_id(issue.get("id")):
            continue
        subject = issue.get("patient")
        if (
            not isinstance(subject, dict)
            or references.local(subject.get("reference")) != patient
            or issue.get("status") != "final"
        ):
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


def _issue_kind(issue: dict[str, Any]) -> str | None:
    code = issue.get("code")
    for coding in _dicts(code.get("coding")) if isinstance(code, dict) else []:
        if coding.get("system") == PROJECT_CODESYSTEM and coding.get("code") in SIGNAL_KINDS:
            return str(coding["code"])
    return None
