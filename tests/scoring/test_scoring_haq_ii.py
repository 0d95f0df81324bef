"""HAq-II (Luborsky et al. 1996), patient version, scored by hand from the published key.

Key: 19 items, 1 Strongly disagree ... 6 Strongly agree (labels unconfirmed; values confirmed).
Items 4, 8, 11, 16 and 19 are negatively worded and reverse-scored as 7 - x.
Total = sum after reversal, 19-114 (sum vs mean is a project decision).
Missing data: project rule, prorate when >= 16 of 19 are answered (mean x 19, 1 decimal).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from alliance_fhir import ScoringError, score_response

from ..conftest import all_items

REVERSED = (4, 8, 11, 16, 19)


def test_reverse_keyed_items_are_the_published_five(catalog):
    assert catalog.get("haq-ii").mapping.total.reverse_items == ["4", "8", "11", "16", "19"]


def test_all_strongly_agree(catalog, make_response):
    result = score_response(make_response("haq-ii", all_items(19, 6)), catalog)
    # 14 positive items x 6 = 84; 5 reversed items x (7 - 6) = 5; total 89
    assert result.total.value == 89


def test_all_strongly_disagree(catalog, make_response):
    result = score_response(make_response("haq-ii", all_items(19, 1)), catalog)
    # 14 x 1 = 14; 5 x (7 - 1) = 30; total 44
    assert result.total.value == 44


def test_strongest_possible_alliance_is_114(catalog, make_response):
    answers = {i: (1 if i in REVERSED else 6) for i in range(1, 20)}
    # 14 x 6 = 84; 5 x (7 - 1) = 30; total 114
    assert score_response(make_response("haq-ii", answers), catalog).total.value == 114


def test_weakest_possible_alliance_is_19(catalog, make_response):
    answers = {i: (6 if i in REVERSED else 1) for i in range(1, 20)}
    # 14 x 1 = 14; 5 x (7 - 6) = 5; total 19
    assert score_response(make_response("haq-ii", answers), catalog).total.value == 19


def test_mixed_answers(catalog, make_response):
    values = [5, 6, 5, 2, 5, 4, 6, 1, 5, 5, 3, 4, 5, 6, 5, 2, 4, 5, 1]
    result = score_response(make_response("haq-ii", dict(enumerate(values, 1))), catalog)
    # positive items 1,2,3,5,6,7,9,10,12,13,14,15,17,18: 5+6+5+5+4+6+5+5+4+5+6+5+4+5 = 70
    # reversed: item 4: 7-2=5, item 8: 7-1=6, item 11: 7-3=4, item 16: 7-2=5, item 19: 7-1=6 -> 26
    # total 70 + 26 = 96
    assert result.total.value == 96


def test_three_missing_items_are_prorated(catalog, make_response):
    values = dict(enumerate([5, 6, 5, 2, 5, 4, 6, 1, 5, 5, 3, 4, 5, 6, 5, 2, 4, 5, 1], 1))
    for gone in (2, 14, 19):
        del values[gone]
    result = score_response(make_response("haq-ii", values), catalog)
    # 96 - item 2 (6) - item 14 (6) - item 19 reversed (7-1 = 6) = 78 over 16 items
    # 78 / 16 x 19 = 92.625 -> 92.6
    assert result.total.value == Decimal("92.6")
    assert result.total.prorated and result.total.answered == 16


def test_four_missing_items_are_too_many(catalog, make_response):
    values = {i: 4 for i in range(1, 16)}  # 15 of 19
    with pytest.raises(ScoringError, match="at least 16 of 19"):
        score_response(make_response("haq-ii", values), catalog)


def test_labels_are_flagged_unconfirmed(catalog):
    assert catalog.get("haq-ii").mapping.verification == "labels-unconfirmed"


def test_value_seven_is_out_of_range(catalog, make_response):
    response = make_response("haq-ii", all_items(19, 4), as_integer=True)
    response["item"][3]["answer"] = [{"valueInteger": 7}]
    with pytest.raises(ScoringError) as info:
        score_response(response, catalog)
    assert info.value.link_id == "4" and "out of range" in info.value.reason
