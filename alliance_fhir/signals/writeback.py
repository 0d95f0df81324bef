"""What goes back into the EHR, per write-back route: a session note, a message, a flowsheet row.

The results store keeps every score, signal and task. The EHR gets only what it accepts (see
``docs/write-back.md``), built here from one session's score and the client's open situation:

- ``note``: one DocumentReference per scored response, with a plain-text attachment a clinician
  reads in the chart (:func:`build_note`);
- ``communication``: a Communication with the same text (MEDITECH's only writable route;
  :func:`build_communication`);
- ``flowsheet``: one Observation per score in the shape the EHR accepts, its code from the site's
  flowsheet map (:func:`build_flowsheet_rows`).

Every resource carries one identifier, deterministic per response and route
(:func:`writeback_identifier`), so the ledger can key it, and a later run finds the same one.
The text is for clinicians: the instrument's name, the total, the session's number and date, the
part of the alliance that fell, the open situation's summary. No ids, no codes, no item wording.
Pure functions: no server, no clock.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Literal

from .._ids import IDENTIFIER_SYSTEM
from ..instruments.flowsheet_maps import FlowsheetMap
from ..instruments.models import Cutoff, InstrumentMapping
from .situations import LEVEL_WORDS, Situation, number
from .trajectory import ScorePoint

__all__ = [
    "WRITEBACK_IDENTIFIER_SYSTEM",
    "NOTE_TYPE",
    "MessageRoute",
    "SessionNote",
    "build_communication",
    "build_flowsheet_rows",
    "build_note",
    "content_digest",
    "note_text",
    "number_of",
    "retraction_text",
    "session_note",
    "writeback_identifier",
]

WRITEBACK_IDENTIFIER_SYSTEM: Final = f"{IDENTIFIER_SYSTEM}/writeback"
"""The system of the identifier every resource written back into the EHR carries."""
NOTE_TYPE: Final = {"system": "http://loinc.org", "code": "11506-3", "display": "Progress note"}
"""The note's type where the site names none (``[writeback] note_type``): LOINC's progress note."""
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, WRITEBACK_IDENTIFIER_SYSTEM)
MessageRoute = Literal["note", "communication", "flowsheet", "observation"]


@dataclass(frozen=True, slots=True)
class SessionNote:
    """One session's score and the client's open situation, as a clinician reads them.

    ``situation``: the open situation of the series the score belongs to (None: none open, or the
    signals are not written back). ``retracted``: the response was entered in error.
    """

    observation_identifier: str  # our score Observation's identifier value (deterministic per response)
    subject: str
    encounter: str | None
    mapping: InstrumentMapping
    point: ScorePoint
    situation: Situation | None = None
    retracted: bool = False

    @property
    def date(self) -> datetime:
        return self.point.authored or self.point.time


def session_note(
    observation_identifier: str, point: ScorePoint, mapping: InstrumentMapping, situation: Situation | None
) -> SessionNote:
    """The note of one counted score (``point``), with its series' open situation, if any."""
    return SessionNote(observation_identifier, point.subject, point.encounter, mapping, point, situation)


def writeback_identifier(observation_identifier: str, route: str) -> str:
    """The identifier of what ``route`` writes for one response: the same on every run and every machine."""
    return str(uuid.uuid5(_NAMESPACE, f"{route}|{observation_identifier}"))


# ---------------------------------------------------------------- the text


def note_text(note: SessionNote) -> str:
    """The note in plain clinical language, one statement a line (see the module docstring)."""
    mapping, point = note.mapping, note.point
    lines = [_heading(mapping, point, note.date)]
    lines.append(_total_line(mapping, point))
    part = note.situation.part if note.situation is not None else None
    if part is not None and part.change is not None and part.change < 0:
        lines.append(
            f"The part of the alliance that fell: {part.words}, {number(part.now)} (down {number(-part.change)})."
        )
    elif part is not None:
        lines.append(f"The lowest-rated part of the alliance: {part.words}, {number(part.now)}.")
    if note.situation is not None and note.situation.kind == "concern":
        lines.append(f"Open alliance signal ({LEVEL_WORDS[note.situation.level].lower()}): {note.situation.summary}")
    elif note.situation is not None:
        lines.append(note.situation.summary)
    else:
        lines.append("No open alliance signal.")
    lines.append("Scored by alliance-fhir from the client's form; the full results are kept in the results store.")
    return "\n".join(lines) + "\n"


def retraction_text(note: SessionNote) -> str:
    """What replaces the note when the client's form was entered in error."""
    return (
        f"{_heading(note.mapping, note.point, note.date)}\n"
        "This form was entered in error: its scores are withdrawn and must not be used.\n"
    )


def _heading(mapping: InstrumentMapping, point: ScorePoint, when: datetime) -> str:
    session = f", session {point.session_number}" if point.session_number > 0 else ""
    return f"{mapping.title} ({mapping.name}){session}, {when.day} {when:%B %Y}"


def _total_line(mapping: InstrumentMapping, point: ScorePoint) -> str:
    headline = mapping.scales[0]
    text = f"Total {number(point.value)} of {number_of(headline.range.max)}"
    cutoff = mapping.low_alliance_cutoff()
    if cutoff is not None:
        text += f": {_against(cutoff, point)}"
    return text + "."


def _against(cutoff: Cutoff, point: ScorePoint) -> str:
    below = point.value < _dec(cutoff.threshold) if cutoff.operator == "<" else point.value <= _dec(cutoff.threshold)
    where = "below" if cutoff.operator == "<" else "at or below"
    if below:
        return f"{where} {cutoff.threshold:g}, the level of concern"
    return f"not {where} {cutoff.threshold:g}, the level of concern"


def number_of(value: float) -> str:
    """A range bound as clinicians write it ("40", "12.5")."""
    return number(_dec(value))


def _dec(value: float) -> Decimal:
    return Decimal(str(value))


def content_digest(resource: Mapping[str, Any]) -> str:
    """What decides whether a written resource must be replaced: a digest of what it says.

    Only the fields we set count (never ``id`` or ``meta``), so the same session written twice
    has the same digest, and a changed score or signal a different one.
    """
    shown = {k: v for k, v in resource.items() if k not in ("id", "meta", "text", "relatesTo", "status")}
    return hashlib.sha256(json.dumps(shown, sort_keys=True, default=str).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- the resources


def _identifier(value: str) -> list[dict[str, str]]:
    return [{"system": WRITEBACK_IDENTIFIER_SYSTEM, "value": value}]


def _attachment(text: str) -> dict[str, Any]:
    data = text.encode("utf-8")
    return {
        "contentType": "text/plain; charset=utf-8",
        "language": "en",
        "data": base64.b64encode(data).decode("ascii"),
        "size": len(data),
        "title": "Alliance scores",
    }


def build_note(note: SessionNote, *, note_type: Mapping[str, str] = NOTE_TYPE) -> dict[str, Any]:
    """The session's DocumentReference: current, or entered-in-error when the response was."""
    text = retraction_text(note) if note.retracted else note_text(note)
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "identifier": _identifier(writeback_identifier(note.observation_identifier, "note")),
        "status": "entered-in-error" if note.retracted else "current",
        "docStatus": "final",
        "type": {"coding": [dict(note_type)], "text": "Alliance scores"},
        "category": [
            {
                "coding": [
                    {
                        "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                        "code": "clinical-note",
                        "display": "Clinical Note",
                    }
                ]
            }
        ],
        "subject": {"reference": note.subject},
        "date": note.date.isoformat(),
        "description": f"{note.mapping.name} scores",
        "content": [{"attachment": _attachment(text)}],
    }
    if note.encounter:
        resource["context"] = {"encounter": [{"reference": note.encounter}]}
    return resource


def build_communication(note: SessionNote) -> dict[str, Any]:
    """The session's Communication (the same text as the note), to the care team in the EHR."""
    text = retraction_text(note) if note.retracted else note_text(note)
    resource: dict[str, Any] = {
        "resourceType": "Communication",
        "identifier": _identifier(writeback_identifier(note.observation_identifier, "communication")),
        "status": "entered-in-error" if note.retracted else "completed",
        "subject": {"reference": note.subject},
        "sent": note.date.isoformat(),
        "topic": {"text": f"{note.mapping.name} scores"},
        "payload": [{"contentString": text}],
    }
    if note.encounter:
        resource["encounter"] = {"reference": note.encounter}
    return resource


def build_flowsheet_rows(note: SessionNote, rows: FlowsheetMap) -> list[dict[str, Any]]:
    """One Observation per score the site's map names, in the site's category and row codes.

    Scores the map does not name are not written (the map is whole per instrument, or refused).
    """
    values = {"total": note.point.value, **dict(note.point.subscales)}
    category = rows.category_concept()
    found: list[dict[str, Any]] = []
    for scale in note.mapping.scales:
        row = rows.row_for(scale.codes[0].code)
        value = values.get(scale.id)
        if row is None or value is None:
            continue
        observation: dict[str, Any] = {
            "resourceType": "Observation",
            "identifier": _identifier(writeback_identifier(note.observation_identifier, f"flowsheet:{scale.id}")),
            "status": "entered-in-error" if note.retracted else "final",
            "category": [category],
            "code": {"coding": [row.coding()], "text": scale.title},
            "subject": {"reference": note.subject},
            "effectiveDateTime": note.date.isoformat(),
            "valueQuantity": {"value": float(value), "unit": row.unit or "{score}"},
        }
        if note.encounter:
            observation["encounter"] = {"reference": note.encounter}
        found.append(observation)
    return found
