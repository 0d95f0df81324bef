"""WAI-SR (Hatcher & Gillaspy 2006), client form, scored by hand from the published key.

Key: 12 items, 1 Seldom ... 5 Always; no reversed items.
Task = items 1, 2, 10, 12; Bond = 3, 5, 7, 9; Goal = 4, 6, 8, 11; sums: subscales 4-20, total 12-60.
Missing data: no rule from the authors; project rule: prorate the total when >= 10 of 12 are
answered (mean x 12, 1 decimal); a 4-item subscale needs all 4 items.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from alliance_fhir import ScoringError, score_response

from ..conftest import all_items


def scores(result):  # noqa: ANN001, ANN201 - tiny local helper
    return {s.scale.id: s.value for s in result.scores}


def test_all_seldom_is_the_minimum(catalog, make_response):
    result = score_response(make_response("wai-sr", all_items(12, 1)), catalog)
    # 12 items x 1 = 12; each subscale 4 x 1 = 4
    assert scores(result) == {"total": 12, "task": 4, "bond": 4, "goal": 4}


def test_all_always_is_the_maximum(catalog, make_response):
    result = score_response(make_response("wai-sr", all_items(12, 5)), catalog)
    # 12 x 5 = 60; 4 x 5 = 20
    assert scores(result) == {"total": 60, "task": 20, "bond": 20, "goal": 20}


def test_subscales_follow_the_published_key(catalog, make_response):
    answers = {1: 4, 2: 3, 3: 5, 4: 4, 5: 5, 6: 3, 7: 4, 8: 4, 9: 5, 10: 2, 11: 4, 12: 3}
    result = score_response(make_response("wai-sr", answers), catalog)
    # Task  items 1, 2, 10, 12: 4 + 3 + 2 + 3 = 12
    # Bond  items 3, 5, 7, 9:   5 + 5 + 4 + 5 = 19
    # Goal  items 4, 6, 8, 11:  4 + 3 + 4 + 4 = 15
    # Total: 12 + 19 + 15 = 46
    assert scores(result) == {"total": 46, "task": 12, "bond": 19, "goal": 15}
    assert result.rules_applied == () and result.warnings == ()


def test_one_item_moves_only_its_own_subscale(catalog, make_response):
    base = all_items(12, 3)  # total 36, subscales 12
    result = score_response(make_response("wai-sr", {**base, 8: 5}), catalog)
    # item 8 is a Goal item: Goal 3 + 3 + 5 + 3 = 14; total 36 + 2 = 38
    assert scores(result) == {"total": 38, "task": 12, "bond": 12, "goal": 14}


def test_no_item_is_reverse_scored(catalog):
    assert all(scale.reverse_items == [] for scale in catalog.get("wai-sr").mapping.scales)


def test_integer_answers_are_raw_values(catalog, make_response):
    answers = {1: 4, 2: 3, 3: 5, 4: 4, 5: 5, 6: 3, 7: 4, 8: 4, 9: 5, 10: 2, 11: 4, 12: 3}
    result = score_response(make_response("wai-sr", answers, as_integer=True), catalog)
    assert result.total.value == 46


def test_two_missing_items_prorate_the_total_and_drop_their_subscales(catalog, make_response):
    answers = {1: 4, 2: 3, 3: 5, 4: 4, 5: 5, 6: 3, 8: 4, 9: 5, 10: 2, 11: 4}  # items 7 and 12 unanswered
    result = score_response(make_response("wai-sr", answers), catalog)
    # answered sum 4+3+5+4+5+3+4+5+2+4 = 39 over 10 items; 39 / 10 x 12 = 46.8
    assert result.total.value == Decimal("46.8")
    assert result.total.prorated and result.total.answered == 10
    assert "prorated" in result.rules_applied[0] and "project decision" in result.rules_applied[0]
    # Task lacks item 12 and Bond lacks item 7: not reported; Goal (4, 6, 8, 11) complete: 4+3+4+4 = 15
    assert scores(result) == {"total": Decimal("46.8"), "goal": 15}
    assert result.omitted == ("task", "bond")
    assert any("task not reported" in w for w in result.warnings)


def test_prorated_total_rounds_half_up_to_one_decimal(catalog, make_response):
    answers = {i: 4 for i in range(1, 12)}  # item 12 unanswered
    answers[1] = 5
    result = score_response(make_response("wai-sr", answers), catalog)
    # answered sum 5 + 10 x 4 = 45 over 11; 45 / 11 x 12 = 49.0909... -> 49.1
    assert result.total.value == Decimal("49.1")


def test_three_missing_items_are_too_many(catalog, make_response):
    answers = {i: 3 for i in range(1, 10)}  # 9 of 12
    with pytest.raises(ScoringError) as info:
        score_response(make_response("wai-sr", answers), catalog)
    assert "too many missing answers" in str(info.value)
    assert "10, 11, 12" in str(info.value) and "QuestionnaireResponse/qr-1" in str(info.value)
