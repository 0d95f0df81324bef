"""One card per situation: hand-built caseloads, every number worked out in the comments.

Shipped rules (mappings/*.json, docs/signals.md): SRS low alliance = total below 36 (the authors'
cutoff, Duncan et al. 2003); SRS rupture = a fall of 1 or more from the previous session or below
the average of the earlier sessions (project decision); SRS early warning = low, or a fall of 1 or
more, in the first 3 sessions (project decision); SRS split = a member 5 or more below the
highest-rating member of a joint session (project decision). WAI-SR (12-60, subscales 4-20, no
cutoff): rupture and early fall 3 or more. The level of concern (project decision): high = below
the level of concern together with a fall, or with the first sessions, or for 3 sessions in a row;
moderate = any one concern; low = information only.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from decimal import Decimal

import pytest

from alliance_fhir._ids import (
    PROJECT_CODESYSTEM,
    SIGNAL_IDENTIFIER_SYSTEM,
    SIGNAL_STATUS_EXTENSION,
    TASK_IDENTIFIER_SYSTEM,
)
from alliance_fhir._text import markdown_text as md
from alliance_fhir.instruments.models import ReliableChange
from alliance_fhir.signals.cards import SUMMARY_LIMIT, alliance_cards, open_issues, split_evidence
from alliance_fhir.signals.names import Names
from alliance_fhir.signals.prompts import load_prompts
from alliance_fhir.signals.resources import follow_up_task, signal_resources, task_follow_ups
from alliance_fhir.signals.rules import RUPTURE, detect_signals
from alliance_fhir.signals.situations import current_situations, situation_history
from alliance_fhir.signals.trajectory import Trajectories, build_trajectories

from ..support.cds_schema import card_problems
from ..trajectory_builders import CLIENT, THERAPIST, score_obs, series_obs

LINK = "https://cds.example.org/cds-report?token=abc"
WHOSE = "the instrument's authors"
PROMPTS = load_prompts()
NAMES = Names({CLIENT: "Robin Rupture", THERAPIST: "Dana Therapist"})


def srs_lines(*sessions: tuple[float, float, float, float], **kwargs):
    """SRS Observations with the four lines (relationship, goals and topics, approach or method, overall)."""
    out = []
    for day, lines in enumerate(sessions, start=1):
        parts = dict(zip(("relationship", "goals", "approach", "overall"), lines, strict=True))
        out.append(score_obs("srs", round(sum(lines), 1), day=day, subscales=parts, **kwargs))
    return out


def cards_of(catalog, observations, patient=CLIENT, **kwargs):
    trajectories = build_trajectories(observations, catalog)
    kwargs.setdefault("names", NAMES)
    kwargs.setdefault("prompts", PROMPTS)
    return alliance_cards(detect_signals(trajectories), trajectories, patient, **kwargs)


def summaries(cards):
    return [(c["source"]["topic"]["code"], c["indicator"], c["summary"]) for c in cards]


# ---- the client of the user trial: SRS 38, 37, 34, 32 ---------------------------------------------

SLIDING = [
    (9.5, 9.5, 9.5, 9.5),  # 38
    (9.5, 9.5, 8.5, 9.5),  # 37: a fall of 1 (rupture, early warning)
    (9.0, 9.0, 7.0, 9.0),  # 34: below 36 (low alliance)
    (9.0, 8.5, 6.0, 8.5),  # 32
]


def test_three_rules_one_situation_one_card_that_says_where_the_client_is_now(catalog):
    cards = cards_of(catalog, srs_lines(*SLIDING), report_link=lambda p: LINK)
    # the best of the sessions before session 4 is 38 (session 1): 32 - 38 = -6, over 3 sessions;
    # 32 is below 36 and the fall began in the first 3 sessions: below + fallen + early = high
    assert summaries(cards) == [
        (
            "alliance-rupture",
            "warning",
            "SRS 32 at session 4, down 6 from 38 in 3 sessions; below 36, the level of concern; "
            "in the first sessions. High concern.",
        )
    ]
    assert len(cards[0]["summary"]) <= SUMMARY_LIMIT
    detail = cards[0]["detail"]
    # the part that fell most since session 1: approach or method 9.5 -> 6 (down 3.5); goals and overall
    # fell 1, relationship 0.5
    assert (
        f"**Part of the alliance that fell most:** {md('approach or method (agreement on tasks)')}, from 9.5 to 6 of 10 (down 3.5 since session 1)."
        in detail
    )
    # what to ask: the prompt for an unrepaired fall, and the one for the approach, each with its source
    fallen, tasks = PROMPTS.situation("fallen"), PROMPTS.part("tasks")
    assert fallen is not None and tasks is not None
    assert f"**What to ask:** {md(fallen.text, limit=400)}" in detail
    assert f"**About the way of working:** {md(tasks.text, limit=400)}" in detail
    assert md(fallen.source, limit=400) in detail
    # every rule that fired, each with whose rule it is
    rules = [line for line in detail.splitlines() if line.startswith("- ")]
    assert [line.split(",")[0] for line in rules] == [
        "- Alliance rupture",
        "- Low alliance",
        "- Early alliance warning",
    ]
    assert f"since session 3: {md('SRS total below 36, the level of concern')}. Whose rule: {md(WHOSE)}." in detail
    assert cards[0]["links"][0]["url"] == LINK


def test_the_card_speaks_in_names_and_sessions_never_in_references(catalog):
    detail = cards_of(catalog, srs_lines(*SLIDING))[0]["detail"]
    assert detail.startswith(
        "**Robin Rupture**, SRS (Session Rating Scale v3), with Dana Therapist: high concern since session 2."
    )
    assert "| 4 | 2026-11-04 | 32 | 6 |" in detail  # the recent sessions: session, date, total, the part that fell
    for jargon in ("Patient/", "Practitioner", "DetectedIssue", "C2", ">=", "episode", "baseline"):
        assert jargon not in detail, jargon
    # a name is data: markdown in it stays text
    hostile = Names({CLIENT: "[click](http://evil.test) <img src=x>"})
    escaped = cards_of(catalog, srs_lines(*SLIDING), names=hostile)[0]["detail"]
    assert "\\[click\\]" in escaped and not re.search(r"(?<!\\)<img", escaped)
    # without names: plain words, still no reference
    plain = cards_of(catalog, srs_lines(*SLIDING), names=Names())[0]["detail"]
    assert plain.startswith("**this client**, SRS") and "PractitionerRole/" not in plain


def test_one_task_per_situation_with_the_cards_words(catalog):
    trajectories = build_trajectories(srs_lines(*SLIDING), catalog)
    signals = detect_signals(trajectories)
    history = situation_history(signals, trajectories)
    resources = signal_resources(signals, situations=history, tasks=True, prompts=PROMPTS)
    tasks = [r for r in resources if r["resourceType"] == "Task"]
    issues = [r for r in resources if r["resourceType"] == "DetectedIssue"]
    assert len(issues) == 3 and len(tasks) == 1  # three rules fired: three records, one Task
    task = tasks[0]
    assert task["identifier"] == [{"system": TASK_IDENTIFIER_SYSTEM, "value": history[0].key}]
    assert task["priority"] == "urgent"  # high concern
    rupture = next(s for s in signals if s.kind == RUPTURE)
    assert task["focus"]["identifier"]["value"] == rupture.key
    assert task["description"].startswith("Follow up the alliance: SRS 32 at session 4, down 6 from 38 in 3 sessions;")
    assert "Part that fell most: approach or method (agreement on tasks), down 3.5." in task["description"]
    fallen = PROMPTS.situation("fallen")
    assert fallen is not None and f"What to ask: {fallen.text}" in task["description"]
    # one scale: every DetectedIssue of the situation carries its level
    assert {i["severity"] for i in issues} == {"high"}


def test_a_wai_sr_fall_names_the_subscale_that_fell_most(catalog):
    # totals 48, 50, 41, 44: 50 -> 41 is a fall of 9 (rupture; early warning in session 3); 44 < 50: still open.
    # No cutoff on the WAI-SR: nothing is "below", so a fall early in therapy is a moderate concern.
    obs = [
        score_obs("wai-sr", total, day=day, subscales={"task": t, "bond": b, "goal": g})
        for day, (total, t, b, g) in enumerate(
            [(48, 16, 16, 16), (50, 17, 17, 16), (41, 12, 16, 13), (44, 14, 16, 14)], 1
        )
    ]
    cards = cards_of(catalog, obs)
    assert summaries(cards) == [
        (
            "alliance-rupture",
            "warning",
            "WAI-SR 44 at session 4, down 6 from 50 in 2 sessions; in the first sessions. Moderate concern.",
        )
    ]
    # since session 2: Task 17 -> 14 (-3, 18.75 % of its 16-point range), Goal 16 -> 14 (-2), Bond 17 -> 16 (-1)
    assert (
        "**Part of the alliance that fell most:** agreement on tasks, from 17 to 14 of 20 (down 3 since session 2)."
        in cards[0]["detail"]
    )


def test_a_repair_at_the_latest_session_is_one_info_card_and_no_task(catalog):
    # 38 -> 34 falls 4 (rupture, early warning, low); 37 is not yet back to 38; 38.5 is: repaired at session 4
    obs = series_obs("srs", [38, 34, 37, 38.5])
    assert summaries(cards_of(catalog, obs)) == [
        (
            "alliance-repair",
            "info",
            "SRS back to 38.5 at session 4 after falling to 34 at session 2. Alliance repaired.",
        )
    ]
    trajectories = build_trajectories(obs, catalog)
    history = situation_history(detect_signals(trajectories), trajectories)
    assert [(s.status, follow_up_task(s)) for s in history] == [("resolved", None)]


def test_a_client_without_a_signal_is_one_quiet_click_from_the_trend(catalog):
    obs = series_obs("srs", [38, 39, 38.5, 39])  # no fall of 1, never below 36
    cards = cards_of(catalog, obs, report_link=lambda p: LINK)
    assert summaries(cards) == [("alliance-on-track", "info", "SRS 39 at session 4, on track.")]
    assert cards[0]["links"][0]["url"] == LINK
    assert cards_of(catalog, obs, on_track=False) == []  # a site may turn the quiet card off


def test_below_the_level_of_concern_three_sessions_in_a_row_is_high_on_its_own(catalog):
    # a slow slide with no fall of 1: each step is 0.2, and no score is 1 below the average before it
    # (s7: 35.8 vs 219 / 6 = 36.5, 0.7; s8: 35.6 vs 254.8 / 7 = 36.4, 0.8; s9: 35.4 vs 290.4 / 8 = 36.3, 0.9)
    values: list[float | None] = [37, 36.8, 36.6, 36.4, 36.2, 36.0, 35.8, 35.6, 35.4]
    # at session 8: below 36 for 2 sessions (7, 8): moderate; best of sessions 3-7 is 36.6 (session 3)
    assert summaries(cards_of(catalog, series_obs("srs", values[:8]))) == [
        (
            "low-alliance",
            "warning",
            "SRS 35.6 at session 8, down 1 from 36.6 in 5 sessions; below 36, the level of concern. Moderate concern.",
        )
    ]
    # at session 9: 3 sessions in a row (7, 8, 9): high; best of sessions 4-8 is 36.4 (session 4)
    assert summaries(cards_of(catalog, series_obs("srs", values))) == [
        (
            "low-alliance",
            "warning",
            "SRS 35.4 at session 9, down 1 from 36.4 in 5 sessions; below 36, the level of concern. High concern.",
        )
    ]


def test_a_change_smaller_than_a_drop_is_not_stated(catalog):
    # 30, 31, 30.5: down 0.5 from 31 is less than the 1-point rupture threshold: the summary leaves it out
    (card,) = cards_of(catalog, series_obs("srs", [30, 31, 30.5]))
    assert (
        card["summary"] == "SRS 30.5 at session 3; below 36, the level of concern; in the first sessions. High concern."
    )


def test_a_split_in_a_joint_session_is_one_card_that_never_names_the_other_member(catalog):
    # couple session 1: a rates 38, b rates 32; 38 - 32 = 6, 5 or more: b's split; b is also below 36 in session 1
    joint = "Encounter/joint-1"
    obs = [
        score_obs("srs", 38, day=1, subject="Patient/a", encounter=joint),
        score_obs("srs", 32, day=1, subject="Patient/b", encounter=joint),
    ]
    names = Names({"Patient/a": "Alex Partner", "Patient/b": "Blair Partner"})
    cards = cards_of(catalog, obs, patient="Patient/b", names=names)
    assert summaries(cards) == [
        (
            "low-alliance",
            "warning",
            "SRS 32 at session 1; below 36, the level of concern; lower than others in joint sessions; in the first "
            "sessions. High concern.",
        )
    ]
    detail = cards[0]["detail"]
    assert "In the joint session of 2026-11-01, the other member rated it 38; Blair Partner rated it 32." in detail
    assert "Alex" not in detail and "Patient/a" not in detail
    assert summaries(cards_of(catalog, obs, patient="Patient/a", names=names)) == [
        ("alliance-on-track", "info", "SRS 38 at session 1, on track.")
    ]


def test_each_instrument_is_its_own_situation_the_highest_concern_first(catalog):
    obs = series_obs("wai-sr", [50, 51, 52]) + series_obs("srs", [38, 37, 34, 32])
    assert [(c["source"]["topic"]["code"], c["indicator"]) for c in cards_of(catalog, obs)] == [
        ("alliance-rupture", "warning"),
        ("alliance-on-track", "info"),
    ]


def test_only_the_patient_asked_about(catalog):
    obs = series_obs("srs", [38, 34], subject="Patient/other")
    assert cards_of(catalog, obs) == []


def test_a_published_reliable_change_raises_the_drop_threshold(catalog):
    # the same SRS 38 -> 35 -> 33 under a mapping that (hypothetically) publishes a reliable change of 5:
    # 3 and 2 are noise, 38 -> 33 over two sessions is not a session-to-session fall either, so no rupture;
    # with no published figure (the shipped SRS), 38 -> 35 is a fall of 3: a rupture
    trajectories = build_trajectories(series_obs("srs", [38, 35, 33]), catalog)
    series = trajectories.series[0]
    noisy = series.mapping.model_copy(
        update={"reliable_change": ReliableChange(value=5, scale="total", source="test", confidence="C2")}
    )
    published = Trajectories((replace(series, mapping=noisy),))
    assert RUPTURE in {s.kind for s in detect_signals(trajectories)}
    found = detect_signals(published)
    assert RUPTURE not in {s.kind for s in found}
    rules = {s.rule for s in found if s.kind == "early-alliance-warning"}
    assert all("5 or more below the previous session" in rule for rule in rules)


def test_never_critical_and_every_card_fits_the_schema(catalog):
    observations = (
        srs_lines(*SLIDING)
        + series_obs("wai-sr", [48, 50, 41, 44], subject="Patient/c2")
        + series_obs("srs", [38, 34, 37, 38.5], subject="Patient/c3")
        + series_obs("srs", [38, 39], subject="Patient/c4")
    )
    for patient in (CLIENT, "Patient/c2", "Patient/c3", "Patient/c4"):
        cards = cards_of(catalog, observations, patient=patient, hook_instance="x", report_link=lambda p: LINK)
        assert len(cards) == 1
        for card in cards:
            assert card_problems(card) == [], card
            assert card["indicator"] in ("info", "warning")
            assert len(card["summary"]) <= SUMMARY_LIMIT


def test_card_uuids_are_unique_per_call_and_stable_within_it(catalog):
    obs = series_obs("wai-sr", [48, 50, 41, 44])
    first = cards_of(catalog, obs, hook_instance="a")
    assert [c["uuid"] for c in first] == [c["uuid"] for c in cards_of(catalog, obs, hook_instance="a")]
    assert not {c["uuid"] for c in first} & {c["uuid"] for c in cards_of(catalog, obs, hook_instance="b")}
    assert all(uuid.UUID(c["uuid"]) for c in first)


def test_a_situation_keeps_its_key_as_sessions_arrive(catalog):
    def key(values):
        trajectories = build_trajectories(series_obs("srs", values), catalog)
        (situation,) = current_situations(detect_signals(trajectories), trajectories)
        return situation.key

    # the same situation (opened at session 2) at sessions 2, 3 and 4: the same Task, never a second
    assert key([38, 37]) == key([38, 37, 34]) == key([38, 37, 34, 32])


def test_tasks_follow_their_situation(catalog):
    open_obs = series_obs("srs", [38, 38, 36.5])  # 38 -> 36.5 opens a rupture (session 3)
    repaired = series_obs("srs", [38, 38, 36.5, 38])  # ... a score back at 38 repairs it (session 4)
    trajectories = build_trajectories(open_obs, catalog)
    (situation,) = situation_history(detect_signals(trajectories), trajectories)
    created = follow_up_task(situation)
    assert created is not None and created["priority"] == "routine"  # a fall alone: moderate
    task = {**created, "id": "t1", "meta": {"versionId": "3"}}
    later = build_trajectories(repaired, catalog)
    signals = detect_signals(later)
    history = situation_history(signals, later)
    assert [(s.key, s.status) for s in history] == [(situation.key, "resolved")]
    # resolved: one note, the Task stays open for the clinician
    cancelled, noted = task_follow_ups({situation.key: task}, history, [], signals)
    assert cancelled == [] and [t["status"] for t in noted] == ["requested"]
    assert "resolved by the score of session 4 (2026-11-04)" in noted[0]["note"][-1]["text"]
    assert task_follow_ups({situation.key: noted[0]}, history, [], signals) == ([], [])  # noted once only
    # withdrawn: the DetectedIssue it follows was withdrawn -> cancelled with the reason
    issue = {"identifier": [{"system": SIGNAL_IDENTIFIER_SYSTEM, "value": task["focus"]["identifier"]["value"]}]}
    cancelled, _ = task_follow_ups({situation.key: task}, [], [issue])
    assert cancelled[0]["status"] == "cancelled" and "withdrawn" in cancelled[0]["statusReason"]["text"]
    assert task_follow_ups({situation.key: {**task, "status": "completed"}}, history, [issue]) == ([], [])


# ---- our DetectedIssues only say where to look ----------------------------------------------------


def split_issue(key="k1", status="final", ext="active", patient="Patient/b", evidence=("Observation/o-a9",)):
    return {
        "resourceType": "DetectedIssue",
        "id": "di-9",
        "extension": [{"url": SIGNAL_STATUS_EXTENSION, "valueCode": ext}],
        "identifier": [{"system": SIGNAL_IDENTIFIER_SYSTEM, "value": key}],
        "status": status,
        "code": {"coding": [{"system": PROJECT_CODESYSTEM, "code": "split-alliance"}]},
        "patient": {"reference": patient},
        "evidence": [{"detail": [{"reference": r} for r in evidence]}],
        "detail": "Split alliance: 7.3 below the highest-rating member.",
    }


def test_an_open_split_issue_only_says_which_scores_to_read(catalog):
    # b's own scores alone cannot show a split, and an issue on the server is not proof: no split in the card
    trajectories = build_trajectories(series_obs("srs", [33.1, 30.2, 31.0], subject="Patient/b"), catalog)
    cards = alliance_cards(detect_signals(trajectories), trajectories, "Patient/b")
    assert all("joint session" not in c["detail"] and "7.3" not in c["detail"] for c in cards)
    base = "http://fhir.test/fhir"
    cited = split_evidence([split_issue(evidence=("Observation/o-a9", f"{base}/Observation/o-b9/_history/2"))], base)
    assert cited == {"o-a9", "o-b9"}
    elsewhere = ("http://evil.test/fhir/Observation/x", "Patient/b", "Observation/", "Observation/a/b", 7)
    assert split_evidence([split_issue(evidence=elsewhere)], base) == set()
    for issue in (
        split_issue(ext="resolved"),
        split_issue(status="entered-in-error"),
        split_issue(patient="Patient/x"),
    ):
        assert open_issues([issue], "Patient/b") == {}


@pytest.mark.parametrize(
    "bad", [{"summary": "x" * 141}, {"indicator": "urgent"}, {"source": {}}, {"links": [{"url": "x"}]}]
)
def test_the_schema_check_itself_fails_on_bad_cards(bad):
    card = {"summary": "ok", "indicator": "info", "source": {"label": "s"}} | bad
    assert card_problems(card)
    assert re.match(r"^\.", card_problems(card)[0])


def test_numbers_are_written_as_clinicians_write_them():
    from alliance_fhir.signals.situations import number

    assert [number(Decimal(v)) for v in ("32", "32.0", "31.55", "6.0", "0.25")] == ["32", "32", "31.6", "6", "0.3"]
