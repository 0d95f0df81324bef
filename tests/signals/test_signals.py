"""Trajectories and alliance signals on hand-built score series.

Every expected value is worked out by hand in the comments. Shipped SRS rules (mappings/srs.json):
low alliance = total < 36 (C2 cutoff); rupture = drop from the previous score >= 1 or drop below
the running mean of all earlier scores >= 1; early warning = sessions 1-3, low or a drop >= 1;
split = a member >= 5 below the session's highest member. WAI-SR: rupture and early drop 3.
"""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from alliance_fhir import InputError, InstrumentMapping, build_observation, load_catalog, score_response
from alliance_fhir.signals.rules import (
    EARLY_WARNING,
    GAP,
    LOW_ALLIANCE,
    RUPTURE,
    SPLIT,
    Signal,
    detect_signals,
    early_warnings,
    low_alliance,
    ruptures,
)
from alliance_fhir.signals.trajectory import Series, build_trajectories, context_from_encounters, parse_time, unbundle

from ..trajectory_builders import CLIENT, SID, THERAPIST, encounter, score_obs, series_obs

ROOT = Path(__file__).resolve().parents[2]
PAIR = Path(__file__).resolve().parents[1] / "fixtures" / "alliance-pair"


@pytest.fixture(scope="module")
def pair_catalog():
    loaded = load_catalog([PAIR])
    assert loaded.problems == []
    return loaded


def one_series(catalog, observations, context=None) -> Series:
    trajectories = build_trajectories(observations, catalog, context)
    assert trajectories.problems == ()
    assert len(trajectories.series) == 1
    return trajectories.series[0]


def kinds(signals: list[Signal]) -> list[tuple[str, str, list[str], str | None]]:
    """(kind, status, evidence values, value that resolved it) for compact exact assertions."""
    return [
        (s.kind, s.status, [str(p.value) for p in s.evidence], str(s.resolved_by.value) if s.resolved_by else None)
        for s in signals
    ]


def signals_for(catalog, values, instrument="srs", **kwargs):
    return detect_signals(build_trajectories(series_obs(instrument, values, **kwargs), catalog))


def mapping_with(catalog, instrument: str, change) -> InstrumentMapping:
    data = json.loads((ROOT / "mappings" / f"{instrument}.json").read_text())
    change(data)
    return InstrumentMapping.model_validate(data)


# ---- trajectories --------------------------------------------------------------------------


def test_points_from_real_score_observations(catalog, make_response):
    focus = {
        "url": "http://alliance-fhir.org/fhir/StructureDefinition/alliance-focus",
        "valueReference": {"reference": THERAPIST},
    }
    response = make_response(
        "wai-sr", {i: 4 for i in range(1, 13)}, encounter={"reference": "Encounter/e1"}, extension=[focus]
    )
    observation = build_observation(score_response(response, catalog), response)
    series = one_series(catalog, [observation])
    point = series.points[0]
    # 12 items x 4 = 48; each subscale 4 items x 4 = 16
    assert (point.instrument, point.subject, point.focus, point.encounter) == (
        "wai-sr",
        "Patient/p1",
        THERAPIST,
        "Encounter/e1",
    )
    assert point.value == 48 and dict(point.subscales) == {"task": 16, "bond": 16, "goal": 16}
    assert point.time == parse_time("2026-11-01T10:00:00Z") and point.session_number == 1
    assert point.observation.value == observation["identifier"][0]["value"]


def test_points_carry_the_srs_line_values_keyed_by_scale(catalog, make_response):
    """An SRS session keeps its four lines (relationship, goals and topics, approach or method,
    overall), so a card can say which part of the alliance fell."""
    response = make_response("srs", {1: 9.1, 2: 8.4, 3: 6.0, 4: 7.5}, encounter={"reference": "Encounter/e1"})
    point = one_series(catalog, [build_observation(score_response(response, catalog), response)]).points[0]
    # 9.1 + 8.4 + 6.0 + 7.5 = 31.0; each line as marked
    assert point.value == Decimal("31.0")
    assert point.subscales == (
        ("relationship", Decimal("9.1")),
        ("goals", Decimal("8.4")),
        ("approach", Decimal("6.0")),
        ("overall", Decimal("7.5")),
    )
    assert point.scale("approach") == Decimal("6.0") and point.scale("total") == Decimal("31.0")
    parts = {s.id: s.part for s in catalog.get("srs").mapping.subscales}
    assert {parts[scale] for scale, _ in point.subscales} == {"bond", "goals", "tasks", "overall"}


def test_an_srs_observation_written_before_the_lines_were_kept_has_no_line_values(catalog):
    """Observations on a server from before (total only) still read; they just carry no part data."""
    point = one_series(catalog, [score_obs("srs", 31.0, day=1)]).points[0]
    assert point.value == Decimal("31.0") and point.subscales == () and point.scale("approach") is None


def test_hand_built_observations_read_like_real_ones(catalog, make_response):
    response = make_response("srs", {1: 9, 2: 9, 3: 8.5, 4: 9}, encounter={"reference": "Encounter/p1-1"})
    real = one_series(catalog, [build_observation(score_response(response, catalog), response)]).points[0]
    lines = {"relationship": 9, "goals": 9, "approach": 8.5, "overall": 9}  # the response's four lines, kept
    built = one_series(
        catalog, [score_obs("srs", 35.5, day=1, subject="Patient/p1", focus=None, subscales=lines)]
    ).points[0]
    # 9 + 9 + 8.5 + 9 = 35.5
    fields = ("instrument", "subject", "focus", "encounter", "time", "value", "subscales", "status")
    assert [getattr(real, f) for f in fields] == [getattr(built, f) for f in fields]


def test_entered_in_error_is_skipped():
    obs = series_obs("srs", [38, 36]) + [score_obs("srs", 30, day=3, status="entered-in-error")]
    series = one_series(load_catalog(), obs)
    assert [str(p.value) for p in series.points] == ["38", "36"]


def test_amended_observation_replaces_the_earlier_version(catalog):
    first = score_obs("srs", 34, day=2, meta={"versionId": "1", "lastUpdated": "2026-11-02T11:00:00Z"})
    amended = score_obs(
        "srs", 38, day=2, status="amended", meta={"versionId": "2", "lastUpdated": "2026-11-03T08:00:00Z"}
    )
    # amended given first: the version order decides, not the input order
    series = one_series(catalog, [amended, score_obs("srs", 38, day=1), first])
    assert [(str(p.value), p.status) for p in series.points] == [("38", "final"), ("38", "amended")]
    # 38 -> 38: no drop, so no rupture (the withdrawn 34 would have been one)
    assert detect_signals(build_trajectories([amended, score_obs("srs", 38, day=1), first], catalog)) == []


def test_amended_without_meta_wins_by_status_and_later_withdrawal_removes(catalog):
    final, amended = score_obs("srs", 34, day=2), score_obs("srs", 35, day=2, status="amended")
    assert [str(p.value) for p in one_series(catalog, [amended, final]).points] == ["35"]
    withdrawn = score_obs("srs", 35, day=2, status="entered-in-error")
    trajectories = build_trajectories([final, amended, withdrawn, score_obs("srs", 38, day=1)], catalog)
    assert [str(p.value) for p in trajectories.series[0].points] == ["38"]


def test_sessions_are_ordered_by_time_whatever_the_input_order(catalog):
    obs = series_obs("srs", [30, 31, 32, 33])
    assert [str(p.value) for p in one_series(catalog, list(reversed(obs))).points] == ["30", "31", "32", "33"]
    assert [p.session_number for p in one_series(catalog, obs).points] == [1, 2, 3, 4]


def test_ties_in_time_are_broken_by_encounter_then_identifier(catalog):
    a = score_obs("srs", 38, day=1, encounter="Encounter/a", ident="x2")
    b = score_obs("srs", 36.5, day=1, encounter="Encounter/b", ident="x1")
    for order in ([a, b], [b, a]):
        signals = detect_signals(build_trajectories(order, catalog))
        # Encounter/a before Encounter/b: 38 -> 36.5 is a drop of 1.5 >= 1
        assert [(s.kind, str(s.opened.value)) for s in signals] == [(RUPTURE, "36.5"), (EARLY_WARNING, "36.5")]


def test_two_scores_for_one_encounter_keep_the_later_and_say_so(catalog):
    early = score_obs("srs", 30, day=1, hour=9, ident="first")
    late = score_obs("srs", 37, day=1, hour=11, ident="second")
    trajectories = build_trajectories([late, early], catalog)
    assert [str(p.value) for p in trajectories.series[0].points] == ["37"]
    assert trajectories.problems == (
        "http://alliance-fhir.org/fhir/sid/score-observation|first: a later form for Encounter/c1-1 replaces it "
        "(http://alliance-fhir.org/fhir/sid/score-observation|second)",
    )


@pytest.mark.parametrize("with_encounters", [False, True], ids=["without-encounters", "with-encounters"])
def test_a_form_filled_twice_in_one_session_counts_by_authored_whatever_the_identifiers(catalog, with_encounters):
    """SRS 37 at 10:50, then 28 at 11:30 in the same Encounter: the later, low form counts and opens low alliance.

    The identifiers sort the other way round ('a-late' < 'z-early'), as they did when the earlier
    form won whenever Encounters were known (both then share the Encounter's start time).
    """
    early = score_obs("srs", 37, day=1, ident="z-early", effectiveDateTime="2026-11-01T10:50:00Z")
    late = score_obs("srs", 28, day=1, ident="a-late", effectiveDateTime="2026-11-01T11:30:00Z")
    context = context_from_encounters([encounter(CLIENT, 1)]) if with_encounters else None
    for order in ([early, late], [late, early]):
        trajectories = build_trajectories(order, catalog, context)
        assert [str(p.value) for p in trajectories.series[0].points] == ["28"]
        assert trajectories.problems == (f"{SID}|z-early: a later form for Encounter/c1-1 replaces it ({SID}|a-late)",)
        assert LOW_ALLIANCE in {s.kind for s in detect_signals(trajectories)}


def test_two_forms_authored_at_the_same_time_keep_the_lower_score(catalog):
    same = "2026-11-01T10:50:00Z"
    high = score_obs("srs", 38, day=1, ident="a", effectiveDateTime=same)
    low = score_obs("srs", 30, day=1, ident="b", effectiveDateTime=same)
    for order in ([high, low], [low, high]):
        trajectories = build_trajectories(order, catalog, context_from_encounters([encounter(CLIENT, 1)]))
        assert [str(p.value) for p in trajectories.series[0].points] == ["30"]
        assert "ties: the lower score counts" in trajectories.problems[0]


def test_two_therapists_are_two_series_and_never_compared(catalog):
    # the client sees t1 (38 each time) and t2 (35 each time) on alternate days
    obs = [score_obs("srs", 38, day=d) for d in (1, 3, 5)]
    obs += [score_obs("srs", 35, day=d, focus="PractitionerRole/t2") for d in (2, 4, 6)]
    trajectories = build_trajectories(obs, catalog)
    assert [(s.focus, [str(p.value) for p in s.points]) for s in trajectories.series] == [
        ("PractitionerRole/t1", ["38", "38", "38"]),
        ("PractitionerRole/t2", ["35", "35", "35"]),
    ]
    signals = detect_signals(trajectories)
    # no rupture (38 -> 35 happens only across therapists); 35 < 36 is low, with t2 only, in its session 1
    assert [(s.kind, s.focus, s.status, s.opened.session_number) for s in signals] == [
        (LOW_ALLIANCE, "PractitionerRole/t2", "active", 1),
        (EARLY_WARNING, "PractitionerRole/t2", "active", 1),
    ]


def test_episodes_split_series_and_number_sessions_with_missing_ones(catalog):
    encounters = [encounter(CLIENT, d) for d in (1, 2, 3, 4)] + [
        encounter(CLIENT, d, episode="EpisodeOfCare/ep2") for d in (10, 11)
    ]
    obs = [score_obs("srs", v, day=d) for d, v in ((1, 38), (3, 36.5), (4, 37), (10, 30), (11, 31))]
    trajectories = build_trajectories(obs, catalog, context_from_encounters(encounters))
    first, second = trajectories.series
    assert (first.episode, second.episode) == ("EpisodeOfCare/ep1", "EpisodeOfCare/ep2")
    # session 2 of ep1 had no score: numbering counts it, and the next score says one was missed
    assert [(p.session_number, p.missed_before) for p in first.points] == [(1, 0), (3, 1), (4, 0)]
    assert [(m.encounter, m.session_number) for m in first.missing] == [("Encounter/c1-2", 2)]
    assert [p.session_number for p in second.points] == [1, 2]
    # ordering uses the Encounter start (09:00), not the Observation's 10:00
    assert first.points[0].time == parse_time("2026-11-01T09:00:00Z")


def test_unusable_observations_are_reported_not_fatal(catalog):
    bad = [
        score_obs("srs", 30, day=1, extension=[], code={"coding": [{"system": "x", "code": "y"}]}, ident="u1"),
        score_obs("srs", 30, day=2, subject="Patient/x", ident="u2") | {"subject": {}},
        score_obs("srs", 30, day=3, ident="u3") | {"valueQuantity": {"value": "n/a"}},
        {k: v for k, v in score_obs("srs", 30, day=4, ident="u4").items() if k != "effectiveDateTime"},
        {"resourceType": "Patient", "id": "ignored"},
    ]
    trajectories = build_trajectories(bad + series_obs("srs", [38]), catalog)
    sid = "http://alliance-fhir.org/fhir/sid/score-observation"
    assert trajectories.problems == (
        f"{sid}|u1: not a score Observation of a loaded instrument",
        f"{sid}|u2: no subject reference",
        f"{sid}|u3: no numeric valueQuantity",
        f"{sid}|u4: no session time (no effectiveDateTime and no known Encounter start)",
    )
    assert len(trajectories.series) == 1


def test_parse_time_accepts_partial_and_naive_dates():
    assert parse_time("2026-11").isoformat() == "2026-11-01T00:00:00+00:00"
    assert parse_time("2026-11-05T10:00:00").isoformat() == "2026-11-05T10:00:00+00:00"
    with pytest.raises(InputError, match="not a FHIR dateTime"):
        parse_time("yesterday")


# ---- single series: low alliance, rupture and repair, early warning -------------------------


def test_single_session_above_the_cutoff_gives_nothing(catalog):
    assert signals_for(catalog, [37]) == []


def test_single_low_session_is_low_and_an_early_warning(catalog):
    # 35.5 < 36; session 1 is inside the first 3
    assert kinds(signals_for(catalog, [35.5])) == [
        (LOW_ALLIANCE, "active", ["35.5"], None),
        (EARLY_WARNING, "active", ["35.5"], None),
    ]


def test_exactly_36_is_not_low_with_the_shipped_operator(catalog):
    assert signals_for(catalog, [36, 36]) == []


def test_at_or_below_operator_makes_36_low(catalog):
    series = one_series(catalog, series_obs("srs", [36]))
    at_or_below = mapping_with(catalog, "srs", lambda m: m["scales"][0]["cutoffs"][0].update(operator="<="))
    assert kinds(low_alliance(replace(series, mapping=at_or_below))) == [(LOW_ALLIANCE, "active", ["36"], None)]


def test_equal_scores_give_nothing(catalog):
    assert signals_for(catalog, [37, 37, 37, 37]) == []


def test_drop_of_exactly_the_threshold_is_a_rupture(catalog):
    # 37.1 - 36.1 = 1.0 exactly in decimal (a float would give 1.0000000000000014)
    signals = signals_for(catalog, [37.1, 36.1])
    assert kinds(signals) == [
        (RUPTURE, "active", ["37.1", "36.1"], None),
        (EARLY_WARNING, "active", ["37.1", "36.1"], None),
    ]


def test_drop_just_below_the_threshold_is_not(catalog):
    # previous: 37.1 - 36.2 = 0.9 < 1; baseline (37.1) - 36.2 = 0.9 < 1
    assert signals_for(catalog, [37.1, 36.2]) == []


def test_strict_operator_needs_more_than_the_threshold(catalog):
    series = one_series(catalog, series_obs("srs", [37.1, 36.1]))
    strict = mapping_with(catalog, "srs", lambda m: m["signals"]["rupture"].update(operator=">"))
    assert ruptures(replace(series, mapping=strict)) == []


def test_rupture_then_repair_to_the_pre_rupture_level(catalog):
    signals = signals_for(catalog, [38, 36.5, 37, 38])
    # rupture at session 2 (38 -> 36.5, drop 1.5); 37 < 38 keeps it open; 38 >= 38 repairs it
    # early warning at session 2 (falling), recovers with the same 38
    assert kinds(signals) == [
        (RUPTURE, "resolved", ["38", "36.5", "37", "38"], "38"),
        (EARLY_WARNING, "resolved", ["38", "36.5", "37", "38"], "38"),
    ]
    rupture = signals[0]
    assert rupture.detail == (
        "Alliance rupture: SRS total fell (session 2: fell 1.5, from 38 to 36.5; 1.5 below the average of the "
        "earlier session (38); repaired at session 4: 38, back to at least 38). Rule: a fall of 1 or more from the "
        "previous session or a score 1 or more below the average of all earlier sessions of the course of therapy; "
        "repaired when a later score is back to at least the score before the fall. Whose rule: a project decision "
        "of alliance-fhir (the authors publish no such rule)."
    )
    assert (rupture.severity, rupture.source, rupture.opened.session_number) == ("moderate", "project decision", 2)


def test_a_signal_keeps_what_was_found_as_data_and_the_detail_is_built_from_it(catalog):
    rupture = signals_for(catalog, [38, 36.5, 37, 38])[0]
    assert rupture.headline == "SRS total fell"
    assert rupture.notes.startswith("session 2: fell 1.5, from 38 to 36.5")
    assert rupture.finding == f"Alliance rupture: SRS total fell ({rupture.notes})."
    # the DetectedIssue's detail is the finding and the rule; the table and the card show the finding alone
    assert rupture.detail == (
        f"{rupture.finding} Rule: {rupture.rule}. "
        "Whose rule: a project decision of alliance-fhir (the authors publish no such rule)."
    )


def test_slow_slide_is_a_rupture_against_the_running_baseline(catalog):
    signals = signals_for(catalog, [38, 37.5, 37, 36.5])
    # previous drops are 0.5 each; baseline drops: s2 38 - 37.5 = 0.5; s3 (38 + 37.5) / 2 - 37 = 0.75;
    # s4 (38 + 37.5 + 37) / 3 - 36.5 = 37.5 - 36.5 = 1.0 >= 1 -> rupture at session 4 (outside the early window)
    assert kinds(signals) == [(RUPTURE, "active", ["38", "37.5", "37", "36.5"], None)]
    assert "1 below the average of the earlier 3 sessions (37.5)" in signals[0].detail


def test_combine_all_needs_both_drops(catalog):
    series = one_series(catalog, series_obs("srs", [38, 37.5, 37, 36.5]))
    both = mapping_with(catalog, "srs", lambda m: m["signals"]["rupture"].update(combine="all"))
    # session 4: baseline drop 1.0 but previous drop only 0.5
    assert ruptures(replace(series, mapping=both)) == []


def test_baseline_window_limits_the_running_baseline(catalog):
    series = one_series(catalog, series_obs("srs", [30, 38, 38, 37.5]))

    def windowed(size):
        def change(m):
            m["signals"]["rupture"] = {
                "baseline_drop": 0.5,
                "baseline_window": size,
                "source": "project decision",
                "note": "test",
            }

        return replace(series, mapping=mapping_with(catalog, "srs", change))

    # window 2 at s4: (38 + 38) / 2 - 37.5 = 0.5 >= 0.5 -> rupture; pre-rupture level = previous score 38
    assert kinds(ruptures(windowed(2))) == [(RUPTURE, "active", ["38", "38", "37.5"], None)]
    # all earlier at s4: (30 + 38 + 38) / 3 = 35.33 < 37.5 -> no drop
    assert ruptures(windowed(None)) == []


def test_an_open_rupture_is_not_reopened_by_further_drops(catalog):
    signals = signals_for(catalog, [38, 36, 35, 34, 38])
    # rupture at s2 stays open through 35 and 34 (below 38) and is repaired by 38;
    # low alliance: 35 and 34 < 36, resolved by 38; early warning: s2 falls 2, recovers at 38
    assert kinds(signals) == [
        (RUPTURE, "resolved", ["38", "36", "35", "34", "38"], "38"),
        (EARLY_WARNING, "resolved", ["38", "36", "35", "34", "38"], "38"),
        (LOW_ALLIANCE, "resolved", ["35", "34", "38"], "38"),
    ]


def test_a_second_rupture_after_repair_is_a_new_signal(catalog):
    signals = [s for s in signals_for(catalog, [38, 37, 38, 38, 36.8]) if s.kind == RUPTURE]
    # s2 drop 1 (repaired at s3 by 38); s5 drop 1.2 from 38 -> second rupture, still open
    assert [(s.status, s.opened.session_number) for s in signals] == [("resolved", 2), ("active", 5)]
    assert signals[0].key != signals[1].key


def test_the_key_survives_resolution(catalog):
    before = {s.kind: s for s in signals_for(catalog, [38, 36.5])}
    after = {s.kind: s for s in signals_for(catalog, [38, 36.5, 38.5])}
    assert before[RUPTURE].status == "active" and after[RUPTURE].status == "resolved"
    assert before[RUPTURE].key == after[RUPTURE].key


def test_missing_session_compares_with_the_last_scored_one(catalog):
    encounters = [encounter(CLIENT, d) for d in (1, 2, 3)]
    trajectories = build_trajectories(series_obs("srs", [38, None, 36.5]), catalog, context_from_encounters(encounters))
    signals = detect_signals(trajectories)
    # session 3 against session 1: 38 -> 36.5, drop 1.5; still inside the first 3 sessions
    assert [(s.kind, s.opened.session_number) for s in signals] == [(RUPTURE, 3), (EARLY_WARNING, 3)]
    assert "1 session without a score before session 3" in signals[0].detail


def test_early_warning_counts_sessions_not_scores(catalog):
    def warnings(values, days):
        context = context_from_encounters([encounter(CLIENT, d) for d in range(1, days + 1)])
        return [
            s
            for s in detect_signals(build_trajectories(series_obs("srs", values), catalog, context))
            if s.kind == EARLY_WARNING
        ]

    # two sessions without a score first: the drop 38 -> 37 is in session 4, outside the window
    assert warnings([None, None, 38, 37], 4) == []
    # one missing: the drop is in session 3
    assert [s.opened.session_number for s in warnings([None, 38, 37], 3)] == [3]
    # without Encounters only scores can be counted
    assert [s.opened.session_number for s in signals_for(catalog, [38, 37]) if s.kind == EARLY_WARNING] == [2]


def test_early_warning_not_after_the_window(catalog):
    # s4: 38 -> 36.5 is a rupture but session 4 is past the first 3
    assert [s.kind for s in signals_for(catalog, [38, 38, 38, 36.5])] == [RUPTURE]


def test_wai_sr_uses_its_own_threshold_and_has_no_low_alliance(catalog):
    # 46 -> 44 (2) -> 43 (1; baseline 45 - 43 = 2): below the 3-point rule
    assert signals_for(catalog, [46, 44, 43], instrument="wai-sr") == []
    # 46 -> 43 = 3 -> rupture and early warning; 12 (the minimum) is never "low": no C2 cutoff
    assert [s.kind for s in signals_for(catalog, [46, 43], instrument="wai-sr")] == [RUPTURE, EARLY_WARNING]
    assert [s for s in signals_for(catalog, [12], instrument="wai-sr")] == []


def test_outcome_measures_emit_no_signals(catalog):
    # ORS 30 -> 10 is a large deterioration, but ORS is not an alliance measure
    assert signals_for(catalog, [30, 20, 10], instrument="ors") == []


def test_csrs_has_no_low_alliance_because_its_cutoff_is_unconfirmed(catalog):
    assert signals_for(catalog, [20], instrument="csrs") == []


def test_subscale_rule_reads_the_component(catalog):
    obs = [
        score_obs("wai-sr", 48, day=1, subscales={"bond": 16}),
        score_obs("wai-sr", 48, day=2, subscales={"bond": 13}),
    ]
    series = one_series(catalog, obs)

    def on_bond(m):
        m["signals"] = {"rupture": {"scale": "bond", "min_drop": 3, "source": "project decision", "note": "test"}}

    # the total is flat (48, 48); Bond 16 -> 13 drops 3
    assert kinds(ruptures(replace(series, mapping=mapping_with(catalog, "wai-sr", on_bond)))) == [
        (RUPTURE, "active", ["48", "48"], None)
    ]
    assert early_warnings(series) == []


# ---- mapping rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instrument", "change", "message"),
    [
        (
            "ors",
            lambda m: m.update(signals={"rupture": {"min_drop": 5, "source": "authors", "note": "x"}}),
            "alliance measures only",
        ),
        ("srs", lambda m: m["scales"][0]["cutoffs"][0].update(confidence="C1"), "only C2 cutoffs may drive signals"),
        ("srs", lambda m: m["signals"]["low_alliance"].update(cutoff="nope"), "unknown cutoff 'nope'"),
        ("srs", lambda m: m["signals"]["rupture"].update(scale="bond"), "names unknown scale 'bond'"),
        (
            "srs",
            lambda m: m["signals"]["rupture"].update(min_drop=None, baseline_drop=None),
            "needs min_drop or baseline_drop",
        ),
        ("wai-sr", lambda m: m["signals"]["early_warning"].update(min_drop=None), "needs min_drop, or include_low"),
        (
            "srs",
            lambda m: m["signals"]["split"].update(max_difference=None),
            "needs max_difference or below_group_mean",
        ),
        ("srs", lambda m: m["signals"]["rupture"].update(source="the vendor"), "signals.rupture.source"),
    ],
)
def test_mapping_refuses_bad_signal_rules(catalog, instrument, change, message):
    with pytest.raises(ValidationError, match=message):
        mapping_with(catalog, instrument, change)


def test_shipped_rules_follow_the_reference(catalog):
    rules = {i.id: i.mapping.signals for i in catalog}
    assert rules["ors"] is None and rules["cors"] is None
    assert [i for i, r in rules.items() if r and r.low_alliance] == ["srs"]
    assert rules["srs"].low_alliance.source == "authors"
    assert all(
        rule.source == "project decision"
        for r in rules.values()
        if r
        for name, rule in r.rules()
        if name != "low_alliance"
    )
    assert catalog.get("srs").mapping.low_alliance_cutoff().confidence == "C2"


# ---- client-therapist gap ------------------------------------------------------------------


def pair_obs(client_values, therapist_values, therapist_days=None):
    obs = series_obs("pair-client", client_values)
    days = therapist_days or range(1, len(therapist_values) + 1)
    obs += [
        score_obs("pair-therapist", v, day=d, focus=None, performer=THERAPIST)
        for d, v in zip(days, therapist_values, strict=True)
    ]
    return obs


def test_gap_between_client_and_therapist_forms(pair_catalog):
    signals = detect_signals(build_trajectories(pair_obs([16, 17, 18], [12, 16, 17]), pair_catalog))
    # percent of maximum: client (x - 4) / 16 x 100, therapist (x - 3) / 18 x 100
    # s1: 75 vs 50 -> gap 25 >= 20; s2: 81.25 vs 72.22 -> 9.03 < 20 resolves it; s3: 87.5 vs 77.78 -> 9.72
    assert kinds(signals) == [(GAP, "resolved", ["16", "12", "17", "16"], "17")]
    gap = signals[0]
    assert (gap.subject, gap.instrument, gap.focus, gap.severity) == (CLIENT, "pair-client", THERAPIST, "low")
    assert "session 1: client 75%, therapist 50% (apart by 25)" in gap.detail
    assert "client 81.25%, therapist 72.22% (apart by 9.03)" in gap.detail


def test_gap_needs_the_same_session(pair_catalog):
    # therapist forms on other days (other encounters): nothing to pair
    assert detect_signals(build_trajectories(pair_obs([16], [4], therapist_days=[2]), pair_catalog)) == []


def test_no_gap_without_the_partner_form(pair_catalog):
    assert (
        detect_signals(
            build_trajectories(series_obs("pair-therapist", [4], focus=None, performer=THERAPIST), pair_catalog)
        )
        == []
    )


# ---- split alliance ------------------------------------------------------------------------


def joint(instrument, day, values_by_member, **kwargs):
    return [
        score_obs(instrument, v, day=day, subject=f"Patient/{member}", encounter=f"Encounter/joint-{day}", **kwargs)
        for member, v in values_by_member.items()
    ]


def test_couple_split_against_the_highest_member(catalog):
    obs = joint("srs", 1, {"a": 38, "b": 32}) + joint("srs", 2, {"a": 38, "b": 34})
    signals = [s for s in detect_signals(build_trajectories(obs, catalog)) if s.kind == SPLIT]
    # s1: b is 38 - 32 = 6 >= 5 below a; s2: 38 - 34 = 4 < 5 resolves it; a is never below anyone
    assert [(s.subject, s.status) for s in signals] == [("Patient/b", "resolved")]
    assert [(p.subject, str(p.value)) for p in signals[0].evidence] == [
        ("Patient/a", "38"),
        ("Patient/b", "32"),
        ("Patient/b", "34"),
    ]


def test_split_at_exactly_the_threshold(catalog):
    obs = joint("srs", 1, {"a": 37, "b": 32})
    # 37 - 32 = 5 >= 5
    assert [s.subject for s in detect_signals(build_trajectories(obs, catalog)) if s.kind == SPLIT] == ["Patient/b"]


def test_split_through_encounters_that_are_part_of_one_session(catalog):
    encounters = [encounter(f"Patient/{m}", 1, part_of="Encounter/family-1") for m in ("a", "b")]
    obs = [score_obs("srs", 38, day=1, subject="Patient/a"), score_obs("srs", 32, day=1, subject="Patient/b")]
    signals = detect_signals(build_trajectories(obs, catalog, context_from_encounters(encounters)))
    assert [(s.kind, s.subject) for s in signals if s.kind == SPLIT] == [(SPLIT, "Patient/b")]


def test_group_member_against_the_group_mean(catalog):
    obs = joint("gsrs", 1, {"a": 39, "b": 38, "c": 37, "d": 30})
    signals = detect_signals(build_trajectories(obs, catalog))
    # mean (39 + 38 + 37 + 30) / 4 = 36; d is 6 >= 5 below; c is 1 below
    assert [(s.kind, s.subject, s.status) for s in signals] == [(SPLIT, "Patient/d", "active")]
    assert "6 below the average of the 4 members" in signals[0].detail


def test_group_rule_needs_its_minimum_of_members(catalog):
    # two members only; the GSRS rule needs 3
    assert detect_signals(build_trajectories(joint("gsrs", 1, {"a": 39, "d": 20}), catalog)) == []


def test_split_is_not_across_therapists(catalog):
    obs = joint("srs", 1, {"a": 38}) + joint("srs", 1, {"b": 30}, focus="PractitionerRole/t2")
    assert [s for s in detect_signals(build_trajectories(obs, catalog)) if s.kind == SPLIT] == []


def test_values_are_decimal_not_float(catalog):
    point = one_series(catalog, series_obs("srs", [35.1])).points[0]
    assert point.value == Decimal("35.1")


def test_unbundle_finds_observations_and_encounters_in_bundles():
    obs = series_obs("srs", [38, 36])
    enc = encounter(CLIENT, 1)
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": obs[0]}, {"resource": enc}]}
    outer = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": bundle}]}
    assert unbundle([outer, obs[1], {"resourceType": "Patient"}, "junk"]) == ([obs[0], obs[1]], [enc])


def test_a_missed_session_is_noted_once_for_a_pair(pair_catalog):
    context = context_from_encounters([encounter(CLIENT, d) for d in (1, 2, 3)])
    obs = [o for o in pair_obs([16, 0, 16], [12, 0, 12]) if not o["effectiveDateTime"].startswith("2026-11-02")]
    signals = detect_signals(build_trajectories(obs, pair_catalog, context))
    # s1 and s3 both have a gap of 25; session 2 was missed by both forms: one note, not two
    assert [(s.kind, s.status) for s in signals] == [(GAP, "active")]
    assert signals[0].detail.count("1 session without a score before session 3") == 1
