"""CDS Hooks cards from alliance signals, on hand-built score series (values worked out in comments).

Shipped rules (mappings/*.json): WAI-SR rupture = a drop >= 3 from the previous score or below the
running mean (project decision), early warning = sessions 1-3 falling >= 3; SRS low alliance =
total < 36 (the authors' cutoff), rupture = a drop >= 1, split = >= 5 below the session's highest member.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from alliance_fhir import load_catalog
from alliance_fhir._ids import PROJECT_CODESYSTEM, SIGNAL_IDENTIFIER_SYSTEM, SIGNAL_STATUS_EXTENSION
from alliance_fhir._text import markdown_text as md
from alliance_fhir.signals.cards import SUMMARY_LIMIT, alliance_cards, card_for, open_issues, split_evidence
from alliance_fhir.signals.rules import detect_signals
from alliance_fhir.signals.trajectory import build_trajectories

from ..support.cds_schema import card_problems
from ..trajectory_builders import CLIENT, THERAPIST, score_obs, series_obs

PAIR = Path(__file__).resolve().parents[1] / "fixtures" / "alliance-pair"
LINK = "https://cds.example.org/cds-report?token=abc"


def cards_of(catalog, observations, patient=CLIENT, **kwargs):
    trajectories = build_trajectories(observations, catalog)
    return alliance_cards(detect_signals(trajectories), trajectories, patient, **kwargs)


def topics(cards):
    return [(c["source"]["topic"]["code"], c["indicator"]) for c in cards]


def test_an_open_wai_sr_rupture_is_a_warning_card_with_the_numbers(catalog):
    # 48, 50, 41, 44: 50 -> 41 is a drop of 9 >= 3 (rupture, and an early warning in session 3); 44 < 50: still open
    cards = cards_of(catalog, series_obs("wai-sr", [48, 50, 41, 44]), hook_instance="h1", report_link=lambda p: LINK)
    assert topics(cards) == [("alliance-rupture", "warning"), ("early-alliance-warning", "warning")]
    rupture = cards[0]
    assert rupture["summary"] == (
        "Possible alliance rupture: WAI-SR fell from 50 to 41 on 2026-11-03, not yet back to the earlier level"
    )
    detail = rupture["detail"]
    # data-derived text is markdown-escaped (it renders as written): the name, the rule, the therapist
    assert f"| 2026-11-03 | 3 | {md('WAI-SR')} | 41 | signal opened |" in detail
    assert f"| 2026-11-04 | 4 | {md('WAI-SR')} | 44 |  |" in detail
    assert md("drop from the previous score >= 3") in detail
    assert "project decision" in detail and f"with {md(THERAPIST)}" in detail
    assert rupture["source"]["topic"] == {
        "system": PROJECT_CODESYSTEM,
        "code": "alliance-rupture",
        "display": "Alliance rupture",
    }
    assert rupture["links"] == [
        {"label": "Open the alliance report for this client", "url": LINK, "type": "absolute", "autoLaunchable": False}
    ]


def test_low_alliance_names_the_authors_rule_in_plain_words(catalog):
    # SRS 37, 35, 30.2: 35 and 30.2 are below 36 (authors' cutoff); summary gives the latest score
    cards = cards_of(catalog, series_obs("srs", [37, 35, 30.2]))
    low = next(c for c in cards if c["source"]["topic"]["code"] == "low-alliance")
    assert low["summary"] == "Low alliance: SRS 30.2 on 2026-11-03, below the level of concern (36)"
    assert "C2" not in low["summary"] and "cutoff" not in low["summary"]
    assert "This is the instrument authors' published rule." in low["detail"]
    assert topics(cards) == [
        ("alliance-rupture", "warning"),
        ("low-alliance", "warning"),
        ("early-alliance-warning", "warning"),
    ]


def test_a_repair_at_the_latest_session_is_one_info_card(catalog):
    # 48, 50, 41, 44, 51: the rupture (50 -> 41) is repaired by 51 >= 50 at the last session; the early
    # warning resolved at the same score. Only the repair is worth a card, and only as info.
    cards = cards_of(catalog, series_obs("wai-sr", [48, 50, 41, 44, 51]))
    assert topics(cards) == [("alliance-repair", "info")]
    assert (
        cards[0]["summary"] == "Alliance repaired: WAI-SR back to 51 on 2026-11-05 after the drop to 41 on 2026-11-03"
    )


def test_an_older_repair_makes_no_card(catalog):
    # repaired at session 5, then a steady session 6 (51): history, not news
    assert cards_of(catalog, series_obs("wai-sr", [48, 50, 41, 44, 51, 51])) == []


def test_nothing_to_say_is_an_empty_list(catalog):
    assert cards_of(catalog, series_obs("srs", [37, 38, 38.5])) == []
    assert cards_of(catalog, []) == []


def test_only_the_patient_asked_about(catalog):
    other = series_obs("srs", [30, 29], subject="Patient/other")
    assert cards_of(catalog, other) == []
    assert len(cards_of(catalog, other, patient="Patient/other")) > 0


def test_split_alliance_names_the_other_member(catalog):
    obs = [
        score_obs("srs", 38, day=1, subject="Patient/a", encounter="Encounter/joint-1"),
        score_obs("srs", 32, day=1, subject="Patient/b", encounter="Encounter/joint-1"),
    ]
    # b: 38 - 32 = 6 >= 5 below a (split), and 32 < 36 (low, early warning)
    cards = cards_of(catalog, obs, patient="Patient/b")
    split = next(c for c in cards if c["source"]["topic"]["code"] == "split-alliance")
    assert (
        split["summary"] == "Split alliance in joint sessions: this client rated SRS 32 on 2026-11-01, others up to 38"
    )
    assert "another member" in split["detail"] and "this client" in split["detail"]
    assert cards_of(catalog, obs, patient="Patient/a") == []


def test_client_therapist_gap_with_a_low_severity_rule_is_info():
    pair = load_catalog([PAIR])
    obs = series_obs("pair-client", [16]) + [score_obs("pair-therapist", 12, day=1, focus=None, performer=THERAPIST)]
    # client (16 - 4) / 16 = 75 %, therapist (12 - 3) / 18 = 50 %: gap 25 >= 20; the fixture's rule is severity low
    cards = cards_of(pair, obs)
    assert topics(cards) == [("alliance-gap", "info")]
    assert cards[0]["summary"] == (
        "Client rates the alliance higher than the therapist does: 75% vs 50% of the maximum on 2026-11-01"
    )
    assert "(therapist, 50% of maximum)" in cards[0]["detail"]


def test_never_critical_and_every_card_fits_the_schema(catalog):
    observations = (
        series_obs("wai-sr", [48, 50, 41, 44])
        + series_obs("srs", [30, 29, 25], subject="Patient/c2")
        + [score_obs("srs", 38, day=9, subject="Patient/c2", encounter="Encounter/j9")]
        + [score_obs("srs", 20, day=9, subject="Patient/c3", encounter="Encounter/j9")]
    )
    for patient in (CLIENT, "Patient/c2", "Patient/c3"):
        for card in cards_of(catalog, observations, patient=patient, hook_instance="x", report_link=lambda p: LINK):
            assert card_problems(card) == [], card
            assert card["indicator"] != "critical"
            assert len(card["summary"]) <= SUMMARY_LIMIT


def test_card_uuids_are_unique_per_call_and_stable_within_it(catalog):
    obs = series_obs("wai-sr", [48, 50, 41, 44])
    first = cards_of(catalog, obs, hook_instance="a")
    assert [c["uuid"] for c in first] == [c["uuid"] for c in cards_of(catalog, obs, hook_instance="a")]
    assert not {c["uuid"] for c in first} & {c["uuid"] for c in cards_of(catalog, obs, hook_instance="b")}
    assert all(uuid.UUID(c["uuid"]) for c in first)


def test_the_detail_names_the_detected_issue_when_known(catalog):
    trajectories = build_trajectories(series_obs("wai-sr", [48, 50, 41]), catalog)
    signals = detect_signals(trajectories)
    rupture = next(s for s in signals if s.kind == "alliance-rupture")
    issue = {
        "resourceType": "DetectedIssue",
        "id": "77",
        "status": "final",
        "patient": {"reference": CLIENT},
        "identifier": [{"system": SIGNAL_IDENTIFIER_SYSTEM, "value": rupture.key}],
    }
    cards = alliance_cards(signals, trajectories, CLIENT, issues=[issue])
    assert "Recorded on the FHIR server as DetectedIssue/77." in cards[0]["detail"]
    assert "DetectedIssue/" not in cards[1]["detail"]


def test_a_long_summary_is_cut_to_the_limit(catalog):
    trajectories = build_trajectories(series_obs("wai-sr", [48, 50, 41]), catalog)
    signal = next(s for s in detect_signals(trajectories) if s.kind == "alliance-rupture")
    mapping = trajectories.series[0].mapping.model_copy(update={"name": "W" * 200})
    card = card_for(signal, {"wai-sr": mapping})
    assert len(card["summary"]) == SUMMARY_LIMIT and card["summary"].endswith("…")


@pytest.mark.parametrize(
    "bad", [{"summary": "x" * 141}, {"indicator": "urgent"}, {"source": {}}, {"links": [{"url": "x"}]}]
)
def test_the_schema_check_itself_fails_on_bad_cards(bad):
    card = {"summary": "ok", "indicator": "info", "source": {"label": "s"}} | bad
    assert card_problems(card)
    assert re.match(r"^\.", card_problems(card)[0])


def split_issue(key="k1", status="final", ext="active", patient="Patient/b", evidence=("Observation/o-a9",)):
    return {
        "resourceType": "DetectedIssue",
        "id": "di-9",
        "extension": [{"url": SIGNAL_STATUS_EXTENSION, "valueCode": ext}],
        "identifier": [{"system": SIGNAL_IDENTIFIER_SYSTEM, "value": key}],
        "status": status,
        "code": {"coding": [{"system": PROJECT_CODESYSTEM, "code": "split-alliance"}]},
        "severity": "moderate",
        "patient": {"reference": patient},
        "identifiedPeriod": {"start": "2026-09-14T10:00:00+00:00"},
        "evidence": [{"detail": [{"reference": r} for r in evidence]}],
        "detail": "Split alliance: this member rates the joint session lower than the others "
        "(2026-09-14: 30.2, 7.3 below the highest member). Rule: ... [project decision].",
    }


def test_an_open_split_issue_alone_makes_no_card_it_only_says_which_scores_to_read(catalog):
    # the client's own SRS 33.1, 30.2, 31.0 (no partner scores): one client's scores cannot show a split, and a
    # DetectedIssue on the server is not proof (anyone who can write there can write one): no split card
    trajectories = build_trajectories(series_obs("srs", [33.1, 30.2, 31.0], subject="Patient/b"), catalog)
    signals = detect_signals(trajectories)
    cards = alliance_cards(signals, trajectories, "Patient/b", issues=[split_issue()])
    assert "split-alliance" not in [c["source"]["topic"]["code"] for c in cards]
    assert not any("7.3 below the highest member" in c.get("detail", "") for c in cards)
    # what it does give: the scores it cites, on our server only, for the service to read and detect again
    base = "http://fhir.test/fhir"
    cited = split_evidence([split_issue(evidence=("Observation/o-a9", f"{base}/Observation/o-b9/_history/2"))], base)
    assert cited == {"o-a9", "o-b9"}
    elsewhere = ("http://evil.test/fhir/Observation/x", "Patient/b", "Observation/", "Observation/a/b", 7)
    assert split_evidence([split_issue(evidence=elsewhere)], base) == set()
    # resolved, withdrawn or another patient's issues are not ours to read from
    for issue in (
        split_issue(ext="resolved"),
        split_issue(status="entered-in-error"),
        split_issue(patient="Patient/x"),
    ):
        assert open_issues([issue], "Patient/b") == {}


def test_a_split_detected_again_from_the_cited_scores_is_a_card_with_the_recomputed_numbers(catalog):
    # b's own SRS 33.1, 30.2, 31.0 plus a's 37.5 in b's second (joint) session: 37.5 - 30.2 = 7.3 >= 5, a split
    own = series_obs("srs", [33.1, 30.2, 31.0], subject="Patient/b")
    joint = own[1]["encounter"]["reference"]
    other = score_obs("srs", 37.5, day=2, subject="Patient/a", encounter=joint)
    trajectories = build_trajectories([*own, other], catalog)
    signals = detect_signals(trajectories)
    split_signal = next(s for s in signals if s.kind == "split-alliance" and s.subject == "Patient/b")
    issue = split_issue(key=split_signal.key)
    cards = alliance_cards(signals, trajectories, "Patient/b", issues=[issue])
    split = [c for c in cards if c["source"]["topic"]["code"] == "split-alliance"]
    assert len(split) == 1 and split[0]["indicator"] == "warning"
    assert md("7.3 below the highest member") in split[0]["detail"]
    assert "Recorded on the FHIR server as DetectedIssue/di\\-9." in split[0]["detail"]
    assert card_problems(split[0]) == []
