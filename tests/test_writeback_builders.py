"""The write-back routes' builders: the note, the Communication and flowsheet rows a clinician sees in the EHR.

Numbers are hand-computed from the SRS (/work/shared/instruments.md): four lines of 0-10, summed,
level of concern below 36. Session 1: 9.5, 9.5, 9.0, 9.5 = 37.5. Session 2: 9.1, 8.4, 6.0, 7.5 =
31.0, below 36; the approach line fell most (9.0 -> 6.0, down 3).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from alliance_fhir.errors import ConfigError
from alliance_fhir.instruments.flowsheet_maps import FlowsheetMap, check_flowsheet_map, load_flowsheet_map
from alliance_fhir.scoring.engine import score_response
from alliance_fhir.scoring.observations import build_observation
from alliance_fhir.signals.rules import detect_signals
from alliance_fhir.signals.situations import apply_levels, current_situations, situation_history
from alliance_fhir.signals.trajectory import build_trajectories
from alliance_fhir.signals.writeback import (
    WRITEBACK_IDENTIFIER_SYSTEM,
    SessionNote,
    build_communication,
    build_flowsheet_rows,
    build_note,
    content_digest,
    note_text,
    session_note,
    writeback_identifier,
)

SESSION_1 = {1: 9.5, 2: 9.5, 3: 9.0, 4: 9.5}
SESSION_2 = {1: 9.1, 2: 8.4, 3: 6.0, 4: 7.5}


def srs_notes(
    catalog, make_response, sessions: list[dict[int, float]], *, with_signals: bool = True
) -> list[SessionNote]:
    """One note per session of one client, as the writer builds them from the results store's Observations."""
    observations = []
    for number, answers in enumerate(sessions, start=1):
        response = make_response("srs", answers, rid=f"qr-{number}", authored=f"2026-03-{number * 7:02d}T10:00:00Z")
        observations.append(build_observation(score_response(response, catalog), response))
    trajectories = build_trajectories(observations, catalog)
    signals = detect_signals(trajectories)
    situations = situation_history(signals, trajectories)
    open_now = current_situations(apply_levels(signals, situations), trajectories, "Patient/p1", on_track=False)
    notes = []
    for point in trajectories.series[0].points:
        situation = next((s for s in open_now if s.latest == point), None) if with_signals else None
        notes.append(session_note(str(point.observation.value), point, trajectories.series[0].mapping, situation))
    return notes


def test_the_note_says_the_total_the_session_and_the_part_that_fell(catalog, make_response):
    note = srs_notes(catalog, make_response, [SESSION_1, SESSION_2])[1]
    lines = note_text(note).splitlines()
    assert lines[0] == "Session Rating Scale v3 (SRS), session 2, 14 March 2026"
    assert lines[1] == "Total 31 of 40: below 36, the level of concern."
    assert lines[2] == "The part of the alliance that fell: approach or method (agreement on tasks), 6 (down 3)."
    assert lines[3].startswith("Open alliance signal (high concern): SRS 31 at session 2, down 6.5 from 37.5")
    assert note.situation is not None and lines[3].endswith(note.situation.summary)


def test_a_session_above_the_level_with_nothing_open_says_so(catalog, make_response):
    note = srs_notes(catalog, make_response, [SESSION_1])[0]
    assert note_text(note).splitlines()[:3] == [
        "Session Rating Scale v3 (SRS), session 1, 7 March 2026",
        "Total 37.5 of 40: not below 36, the level of concern.",
        "No open alliance signal.",
    ]


def test_the_note_is_a_current_document_reference_with_a_plain_text_attachment(catalog, make_response):
    note = srs_notes(catalog, make_response, [SESSION_1, SESSION_2])[1]
    resource = build_note(note)
    assert resource["resourceType"] == "DocumentReference" and resource["status"] == "current"
    attachment = resource["content"][0]["attachment"]
    assert attachment["contentType"] == "text/plain; charset=utf-8"
    assert base64.b64decode(attachment["data"]).decode("utf-8") == note_text(note)
    assert resource["identifier"] == [
        {"system": WRITEBACK_IDENTIFIER_SYSTEM, "value": writeback_identifier(note.observation_identifier, "note")}
    ]
    assert resource["subject"] == {"reference": "Patient/p1"}


def test_the_identifier_is_the_same_on_every_run_and_differs_per_route(catalog, make_response):
    first = srs_notes(catalog, make_response, [SESSION_1, SESSION_2])[1]
    again = srs_notes(catalog, make_response, [SESSION_1, SESSION_2])[1]
    assert build_note(first)["identifier"] == build_note(again)["identifier"]
    assert content_digest(build_note(first)) == content_digest(build_note(again))
    assert build_communication(first)["identifier"][0]["value"] != build_note(first)["identifier"][0]["value"]


def test_a_changed_score_changes_the_digest_and_a_withdrawn_form_is_entered_in_error(catalog, make_response):
    before = srs_notes(catalog, make_response, [SESSION_1, SESSION_2])[1]
    changed = srs_notes(catalog, make_response, [SESSION_1, {1: 9.1, 2: 8.4, 3: 7.0, 4: 7.5}])[1]  # 32.0
    assert "Total 32 of 40" in note_text(changed)
    assert build_note(changed)["identifier"] == build_note(before)["identifier"]
    assert content_digest(build_note(changed)) != content_digest(build_note(before))
    withdrawn = build_note(SessionNote(**{**_fields(before), "retracted": True}))
    assert withdrawn["status"] == "entered-in-error"
    assert "entered in error" in base64.b64decode(withdrawn["content"][0]["attachment"]["data"]).decode()


def test_signals_left_out_of_the_note_when_they_do_not_go_to_the_ehr(catalog, make_response):
    note = srs_notes(catalog, make_response, [SESSION_1, SESSION_2], with_signals=False)[1]
    assert "Open alliance signal" not in note_text(note) and "No open alliance signal." in note_text(note)


def test_the_communication_carries_the_same_text(catalog, make_response):
    note = srs_notes(catalog, make_response, [SESSION_1, SESSION_2])[1]
    message = build_communication(note)
    assert message["resourceType"] == "Communication" and message["status"] == "completed"
    assert message["payload"] == [{"contentString": note_text(note)}]


def test_text_holds_no_ids_or_codes(catalog, make_response):
    note = srs_notes(catalog, make_response, [SESSION_1, SESSION_2])[1]
    text = note_text(note)
    assert "qr-2" not in text and "Patient/" not in text and "srs-total" not in text and "http" not in text


# ---------------------------------------------------------------- flowsheet rows and the site's map

ROWS = [
    ("srs-total", "7001", None),
    ("srs-relationship", "7002", None),
    ("srs-goals", "7003", None),
    ("srs-approach", "7004", None),
    ("srs-overall", "7005", None),
]


def site_map(rows: list[tuple[str, str, Any]] = ROWS, **extra: Any) -> dict[str, Any]:
    return {
        "site": "Clinic A build",
        "rows": [{"score": s, "system": "urn:oid:1.2.840.114350.1.13.0.1.7.2.707679", "code": c} for s, c, _ in rows],
        **extra,
    }


def test_flowsheet_rows_carry_the_sites_codes_and_the_hand_computed_values(catalog, make_response):
    note = srs_notes(catalog, make_response, [SESSION_1, SESSION_2])[1]
    flowsheet = FlowsheetMap.model_validate(site_map())
    rows = build_flowsheet_rows(note, flowsheet)
    values = {r["code"]["coding"][0]["code"]: r["valueQuantity"]["value"] for r in rows}
    assert values == {"7001": 31.0, "7002": 9.1, "7003": 8.4, "7004": 6.0, "7005": 7.5}
    assert all(r["category"][0]["coding"][0]["code"] == "vital-signs" for r in rows)
    assert len({r["identifier"][0]["value"] for r in rows}) == 5


def test_a_whole_map_passes_the_check(catalog):
    assert check_flowsheet_map(FlowsheetMap.model_validate(site_map()), [i.mapping for i in catalog], "m") == []


def test_a_partial_map_is_refused_with_one_line(catalog, tmp_path: Path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(site_map(ROWS[:3])))
    with pytest.raises(ConfigError) as caught:
        load_flowsheet_map(path, [i.mapping for i in catalog])
    message = str(caught.value)
    assert "\n" not in message
    assert (
        message
        == f"flowsheet map {path}: SRS is mapped in part: no row for srs-approach, srs-overall (map every score of an instrument, or none)"
    )


def test_an_unknown_code_and_a_row_given_twice_are_refused(catalog):
    rows = [*ROWS, ("srs-total2", "7001", None)]
    problems = check_flowsheet_map(FlowsheetMap.model_validate(site_map(rows)), [i.mapping for i in catalog], "m")
    assert problems == ["m: row '7001' receives two scores", "m: score 'srs-total2' is none of our score codes"]


def test_the_map_schema_refuses_an_unknown_key(catalog, tmp_path: Path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(site_map(colour="red")))
    with pytest.raises(ConfigError, match="colour"):
        load_flowsheet_map(path, [i.mapping for i in catalog])


def _fields(note: SessionNote) -> dict[str, Any]:
    return {name: getattr(note, name) for name in SessionNote.__dataclass_fields__}
