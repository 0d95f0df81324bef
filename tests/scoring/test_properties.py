"""Property tests: ranges hold and reversal is symmetric, for any answers (hypothesis)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from alliance_fhir import load_catalog, score_response

from ..shipped import vas_ids

CATALOG = load_catalog()
BASE = "http://alliance-fhir.org/fhir/Questionnaire"


def likert_response(instrument: str, values: list[int]) -> dict:
    return {
        "resourceType": "QuestionnaireResponse",
        "id": "prop",
        "status": "completed",
        "questionnaire": f"{BASE}/{instrument}|1.0.0",
        "item": [{"linkId": str(n), "answer": [{"valueInteger": v}]} for n, v in enumerate(values, 1)],
    }


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=12, max_size=12))
def test_wai_sr_total_is_in_range_and_equals_its_subscales(values):
    result = score_response(likert_response("wai-sr", values), CATALOG)
    scores = {s.scale.id: s.value for s in result.scores}
    assert 12 <= scores["total"] <= 60
    assert all(4 <= scores[k] <= 20 for k in ("task", "bond", "goal"))
    assert scores["total"] == scores["task"] + scores["bond"] + scores["goal"] == sum(values)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=19, max_size=19))
def test_haq_ii_reversal_is_symmetric(values):
    """Mirroring every answer (x -> 7 - x) mirrors the total: total(a) + total(mirror a) = 19 x 7."""
    total = score_response(likert_response("haq-ii", values), CATALOG).total.value
    mirrored = score_response(likert_response("haq-ii", [7 - v for v in values]), CATALOG).total.value
    assert 19 <= total <= 114
    assert total + mirrored == 133


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=19, max_size=19))
def test_haq_ii_raising_a_reversed_item_lowers_the_total(values):
    if values[3] == 6:
        return
    raised = list(values)
    raised[3] += 1  # item 4 is negatively worded
    lower = score_response(likert_response("haq-ii", raised), CATALOG).total.value
    assert lower == score_response(likert_response("haq-ii", values), CATALOG).total.value - 1


tenths = st.integers(0, 100).map(lambda n: Decimal(n) / 10)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(vas_ids()), st.lists(tenths, min_size=4, max_size=4))
def test_vas_total_is_the_exact_sum(instrument, values):
    response = {
        "resourceType": "QuestionnaireResponse",
        "id": "prop",
        "status": "completed",
        "questionnaire": f"{BASE}/{instrument}|1.0.0",
        "item": [{"linkId": str(n), "answer": [{"valueDecimal": float(v)}]} for n, v in enumerate(values, 1)],
    }
    total = score_response(response, CATALOG).total.value
    assert total == sum(values)
    assert 0 <= total <= 40


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=12, max_size=12), st.sets(st.integers(1, 12), max_size=2))
def test_wai_sr_prorated_total_stays_in_range(values, dropped):
    response = likert_response("wai-sr", values)
    response["item"] = [i for i in response["item"] if int(i["linkId"]) not in dropped]
    total = score_response(response, CATALOG).total.value
    assert 12 <= total <= 60
