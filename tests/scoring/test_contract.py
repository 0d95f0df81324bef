"""The scorer's contract: whatever JSON it is given, only the library's own errors come out.

A clinic's batch holds whatever its systems produced. One odd response must cost one error line,
never the batch. Hypothesis takes the real example responses, puts an arbitrary JSON value into
one or two of their fields (any field, at any depth, or a new field), and checks:

- ``score_response`` returns a result or raises :class:`AllianceFhirError`, nothing else;
- its message is one safe line: no control characters, bounded length;
- a scored response gives an Observation that serialises as strict JSON (no NaN, no Decimal);
- in a batch, the valid response after the odd one is still scored.

``ALLIANCE_FHIR_FUZZ_EXAMPLES`` raises the number of cases (default 400 per test) for a long run.
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alliance_fhir import (
    AllianceFhirError,
    ScoringError,
    build_observation,
    load_catalog,
    score_records,
    score_response,
)
from alliance_fhir.scoring.engine import MAX_ITEM_DEPTH, MAX_JSON_DEPTH

CATALOG = load_catalog()
EXAMPLES = sorted(Path(__file__).resolve().parents[2].joinpath("examples").rglob("*.json"))
RESPONSES = [json.loads(p.read_text(encoding="utf-8")) for p in EXAMPLES]
CASES = int(os.environ.get("ALLIANCE_FHIR_FUZZ_EXAMPLES", "400"))
FUZZ = settings(
    max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
# FHIR names the scorer reads, so that added fields hit the code paths that matter
NAMES = [
    "resourceType",
    "id",
    "meta",
    "versionId",
    "status",
    "questionnaire",
    "subject",
    "encounter",
    "author",
    "authored",
    "identifier",
    "system",
    "value",
    "extension",
    "url",
    "valueReference",
    "reference",
    "display",
    "item",
    "linkId",
    "answer",
    "valueCoding",
    "code",
    "valueInteger",
    "valueDecimal",
    "valueString",
    "valueBoolean",
]
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
MAX_MESSAGE = 2000

text = st.one_of(
    st.sampled_from(
        [
            "",
            "completed",
            "amended",
            "[/]",
            "[bold]x",
            "a\nerror: forged",
            "\x1b[31mred",
            "x" * 20_000,
            "1",
            "12",
            "http://alliance-fhir.org/fhir/CodeSystem/alliance-fhir",
            "wai-sr-always",
            "Patient/p1",
            "http://alliance-fhir.org/fhir/Questionnaire/srs|1.0.0",
            "2026-11-03T10:50:00Z",
        ]
    ),
    st.text(max_size=30),
)
numbers = st.one_of(
    st.integers(),
    st.sampled_from([5000, 4301, 400, 20]).map(lambda digits: 10**digits),  # huge ints, built when drawn
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from([Decimal("1e5000"), Decimal("8.5"), Decimal("-0")]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=8)), inner, max_size=4),
    ),
    max_leaves=12,
)


def paths(value: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position in a JSON value (object members and array elements), outermost first."""
    found = [here]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*here, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*here, index))
    return found


@st.composite
def odd_responses(draw: st.DrawFn) -> dict[str, Any]:
    """A real example response with one or two fields replaced or added (any value, any depth)."""
    response = copy.deepcopy(draw(st.sampled_from(RESPONSES)))
    for _ in range(draw(st.integers(1, 2))):
        where = draw(st.sampled_from(paths(response)[1:]))
        parent = response
        for step in where[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and draw(st.booleans()):
            parent[draw(st.sampled_from(NAMES))] = draw(json_values)  # add (or replace) a field beside it
        else:
            parent[where[-1]] = draw(json_values)
    return response


def assert_contract(response: Any) -> None:
    try:
        result = score_response(response, CATALOG)
    except AllianceFhirError as exc:
        message = str(exc)
        assert not UNSAFE.search(message), message[:300]
        assert len(message) <= MAX_MESSAGE, len(message)
        return
    observation = build_observation(result, response)
    json.dumps(observation, allow_nan=False)  # strict JSON: no NaN/Infinity, no Decimal, no huge-int failure
    for warning in result.warnings:
        assert not UNSAFE.search(warning) and len(warning) <= MAX_MESSAGE


@FUZZ
@given(odd_responses())
def test_any_json_in_any_field_gives_a_result_or_a_library_error(response):
    assert_contract(response)


@FUZZ
@given(json_values)
def test_any_json_value_as_the_whole_input_gives_a_library_error(value):
    with pytest.raises(ScoringError):
        score_response(value, CATALOG)


@settings(max_examples=max(50, CASES // 4), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(odd_responses())
def test_the_rest_of_a_batch_is_scored_after_an_odd_response(response):
    good = RESPONSES[0]
    outcomes = list(score_records([("odd.json", response), ("good.json", good)], CATALOG))
    assert [o.label for o in outcomes] == ["odd.json", "good.json"]
    assert outcomes[1].ok and outcomes[1].observation is not None


# ---- the cases the issue names, one by one (each crashed or misbehaved before) ----------


def srs() -> dict[str, Any]:
    return copy.deepcopy(next(r for r in RESPONSES if r["id"] == "example-srs-complete"))


def wai() -> dict[str, Any]:
    return copy.deepcopy(next(r for r in RESPONSES if r["id"] == "example-wai-sr-complete"))


def refused(response: Any) -> str:
    with pytest.raises(ScoringError) as info:
        score_response(response, CATALOG)
    return str(info.value)


@pytest.mark.parametrize(
    "field, value",
    [
        ("status", ["completed"]),
        ("status", {"code": "completed"}),
        ("meta", []),
        ("extension", {"url": "x"}),
        ("extension", "x"),
    ],
)
def test_malformed_top_level_elements_are_one_error(field, value):
    response = srs()
    response[field] = value
    assert refused(response).startswith("QuestionnaireResponse/example-srs-complete: ")


@pytest.mark.parametrize("system", [["http://alliance-fhir.org/fhir/CodeSystem/alliance-fhir"], {"a": 1}])
def test_a_coding_system_that_is_not_a_string_is_one_error(system):
    response = wai()
    response["item"][0]["answer"][0]["valueCoding"]["system"] = system
    assert "valueCoding.system is a JSON" in refused(response)


def test_a_subject_given_as_a_string_is_an_error_not_dropped():
    response = srs()
    response["subject"] = "Patient/example-client"
    assert "subject is a JSON string (22 characters), not a FHIR Reference" in refused(response)


def test_nesting_far_beyond_the_limit_is_a_clear_error_not_a_recursion_error():
    deep: dict[str, Any] = {"reference": "Patient/p"}
    for _ in range(sys.getrecursionlimit() * 5):
        deep = {"reference": "Patient/p", "extension": [{"url": "x", "valueReference": deep}]}
    response = srs()
    response["subject"] = deep
    assert f"subject is nested deeper than {MAX_JSON_DEPTH} levels" in refused(response)
    anonymous = srs()  # no id: the whole response is hashed, so its whole depth is checked
    del anonymous["id"]
    anonymous["extension"].append({"url": "x", "valueString": "", "extension": [deep]})
    assert f"the response is nested deeper than {MAX_JSON_DEPTH} levels" in refused(anonymous)


def test_items_nested_beyond_the_limit_are_a_clear_error():
    response = wai()
    chain: list[dict[str, Any]] = [{"linkId": "1", "answer": response["item"][0]["answer"]}]
    for _ in range(MAX_ITEM_DEPTH * 30):
        chain = [{"linkId": "g", "item": chain}]
    response["item"] = chain + response["item"][1:]
    assert "item" in refused(response)  # an unknown linkId or the depth limit, never RecursionError


def test_legal_nesting_inside_unread_elements_is_scored():
    response = srs()
    nested: dict[str, Any] = {"url": "x", "valueString": "leaf"}
    for _ in range(MAX_JSON_DEPTH - 10):
        nested = {"url": "x", "extension": [nested]}
    response["item"][0]["extension"] = [nested]
    assert str(score_response(response, CATALOG).total.value) == "34.2"


@pytest.mark.parametrize("value", [10**5000, -(10**5000)], ids=["plus-10e5000", "minus-10e5000"])
def test_huge_integers_are_out_of_range_not_a_crash(value):
    response = wai()
    response["item"][0]["answer"] = [{"valueInteger": value}]
    message = refused(response)
    assert "valueInteger is out of range" in message and len(message) < 300


def test_decimal_numbers_from_json_loads_parse_float_decimal_are_scored():
    path = next(p for p in EXAMPLES if p.parts[-2:] == ("srs", "complete.json"))
    response = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    result = score_response(response, CATALOG)
    assert result.total.value == Decimal("34.2")  # 8.5 + 9.1 + 7.6 + 9.0, exactly
    json.dumps(build_observation(result, response), allow_nan=False)


def test_error_text_never_repeats_an_answer():
    response = srs()
    response["item"][0]["answer"] = [{"valueDecimal": "I do not trust my therapist"}]
    message = refused(response)
    assert "trust" not in message
    assert message.endswith("item '1': wrong type: valueDecimal is a JSON string (27 characters), not a number")


def test_control_characters_and_long_values_are_escaped_and_cut_in_messages():
    response = srs()
    response["id"] = "x" * 10_000_000
    response["item"][0]["linkId"] = "1\nerror: forged line \x1b[31m"
    message = refused(response)
    assert "\n" not in message and "\x1b" not in message
    assert "... (10000000 characters)" in message and len(message) < 500
    assert "item '1\\x0aerror: forged line \\x1b[31m'" in message
