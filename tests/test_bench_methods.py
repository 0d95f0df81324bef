"""The benchmarks' comparison method: two variants run in turn, set by set, and only pairs compare.

A ratio of two variants run once each, minutes apart, measured the machine's load as much as
the code (interleaved sets of the same sync spread 0.59-1.43): these helpers are what
``benchmarks/bench_sync.py`` uses so that each set is a like-for-like pair.
"""

from __future__ import annotations

import pytest

from benchmarks._report import alternating_order, ratio_summary


def test_the_variants_alternate_which_goes_first():
    assert alternating_order(4) == [("a", "b"), ("b", "a"), ("a", "b"), ("b", "a")]
    assert alternating_order(1) == [("a", "b")]


def test_each_set_runs_both_variants_once():
    for order in alternating_order(5):
        assert sorted(order) == ["a", "b"]


def test_ratios_are_per_set_and_the_median_of_the_sets():
    summary = ratio_summary([(100.0, 100.0), (60.0, 100.0), (150.0, 100.0), (90.0, 100.0)])
    assert summary == {"per_set": [1.0, 0.6, 1.5, 0.9], "median": 0.95, "min": 0.6, "max": 1.5}
    assert ratio_summary([(2.0, 1.0), (1.0, 1.0), (3.0, 1.0)])["median"] == 2.0


def test_no_sets_is_an_error_not_a_ratio():
    with pytest.raises(ValueError, match="no sets"):
        ratio_summary([])
