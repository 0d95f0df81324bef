"""The SRS family keeps each line: the Observation's components, named by their published domains.

instruments.md 4a/4b/4d: four 10 cm lines, each 0-10 to the mm; total = sum, 0-40. The domains, in
the published order: relationship; goals and topics; approach or method; overall (GSRS: relationship
with the leader and group, goals and topics, approach, overall). clinical-evidence.md: the lines map
onto Bordin's bond, goals and tasks, plus an overall rating (Duncan et al. 2003). Every number below
is worked out by hand from the lines given; no item wording appears anywhere (it is licensed).
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest

from alliance_fhir import build_observation, score_response
from alliance_fhir.content.client import client_questionnaire
from alliance_fhir.scoring.observations import observation_json

from ..conftest import CS

UCUM = "http://unitsofmeasure.org"
SCORE_IDS = "http://alliance-fhir.org/fhir/sid/score-observation"

# (instrument, the four lines, their sum worked out by hand, the component displays in line order)
FORMS = [
    (
        "srs",
        (9.1, 8.4, 6.0, 7.5),
        "31.0",  # 9.1 + 8.4 + 6.0 + 7.5
        ["SRS relationship", "SRS goals and topics", "SRS approach or method", "SRS overall"],
    ),
    (
        "csrs",
        (10.0, 4.5, 7.7, 3.2),
        "25.4",  # 10.0 + 4.5 + 7.7 + 3.2
        ["CSRS relationship", "CSRS goals and topics", "CSRS approach or method", "CSRS overall"],
    ),
    (
        "gsrs",
        (6.6, 9.9, 0.0, 5.5),
        "22.0",  # 6.6 + 9.9 + 0.0 + 5.5
        ["GSRS relationship with the leader and group", "GSRS goals and topics", "GSRS approach", "GSRS overall"],
    ),
]
LINES = ["relationship", "goals", "approach", "overall"]


def lines_of(values: tuple[float, ...]) -> dict[int, float]:
    return dict(enumerate(values, 1))


@pytest.mark.parametrize(("instrument", "lines", "total", "displays"), FORMS, ids=[f[0] for f in FORMS])
def test_the_observation_carries_the_total_and_each_line(catalog, make_response, instrument, lines, total, displays):
    response = make_response(instrument, lines_of(lines))
    obs = build_observation(score_response(response, catalog), response)
    assert Decimal(repr(obs["valueQuantity"]["value"])) == Decimal(total)
    codes = [c["code"]["coding"] for c in obs["component"]]
    assert codes == [
        [{"system": CS, "code": f"{instrument}-{line}", "display": display}]
        for line, display in zip(LINES, displays, strict=True)
    ]
    assert [c["code"]["text"] for c in obs["component"]] == displays
    assert [Decimal(repr(c["valueQuantity"]["value"])) for c in obs["component"]] == [Decimal(repr(v)) for v in lines]
    for component in obs["component"]:
        assert component["valueQuantity"]["system"] == UCUM and component["valueQuantity"]["code"] == "{score}"
        (possible,) = component["referenceRange"]  # a line has no cutoff of its own
        assert (possible["low"]["value"], possible["high"]["value"]) == (0, 10)
        assert "interpretation" not in component


def test_a_low_srs_total_is_flagged_and_its_lines_are_not(catalog, make_response):
    response = make_response("srs", lines_of((9.1, 8.4, 6.0, 7.5)))
    obs = build_observation(score_response(response, catalog), response)
    assert obs["interpretation"][0]["coding"][0]["code"] == "L"  # 31.0 < 36 (Duncan et al. 2003, C2)
    assert all("interpretation" not in c for c in obs["component"])


def test_the_fast_json_path_writes_the_same_components(catalog, make_response):
    response = make_response("srs", lines_of((9.1, 8.4, 6.0, 7.5)))
    result = score_response(response, catalog)
    assert json.loads(observation_json(result, response)) == build_observation(result, response)


def test_the_identifier_is_the_one_written_before_the_lines_were_kept(catalog, make_response):
    """Same response, same instrument url, same algorithm version 1.0.0: same identifier (no duplicates
    on a server; the Observation is rewritten in place). uuid5 of the response key and the url|version."""
    response = make_response("srs", lines_of((9.1, 8.4, 6.0, 7.5)), rid="qr-lines")
    obs = build_observation(score_response(response, catalog), response)
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, SCORE_IDS)
    name = "QuestionnaireResponse/qr-lines|http://alliance-fhir.org/fhir/Questionnaire/srs|1.0.0"
    assert obs["identifier"] == [{"system": SCORE_IDS, "value": str(uuid.uuid5(namespace, name))}]
    assert catalog.get("srs").mapping.algorithm_version == "1.0.0"


@pytest.mark.parametrize("instrument", ["srs", "csrs", "gsrs"])
def test_each_line_names_the_part_of_the_alliance_it_measures(catalog, instrument):
    mapping = catalog.get(instrument).mapping
    assert mapping.total.part is None
    assert [(s.id, s.items, s.part) for s in mapping.subscales] == [
        ("relationship", ["1"], "bond"),
        ("goals", ["2"], "goals"),
        ("approach", ["3"], "tasks"),
        ("overall", ["4"], "overall"),
    ]


def test_the_wai_sr_subscales_name_their_part_and_keep_their_components(catalog, make_response):
    mapping = catalog.get("wai-sr").mapping
    assert [(s.id, s.part) for s in mapping.scales] == [
        ("total", None),
        ("task", "tasks"),
        ("bond", "bond"),
        ("goal", "goals"),
    ]
    # every item "very often" (4): each subscale 4 x 4 = 16, total 12 x 4 = 48
    response = make_response("wai-sr", {i: 4 for i in range(1, 13)})
    obs = build_observation(score_response(response, catalog), response)
    assert [(c["code"]["coding"][0]["code"], c["valueQuantity"]["value"]) for c in obs["component"]] == [
        ("wai-sr-task", 16),
        ("wai-sr-bond", 16),
        ("wai-sr-goal", 16),
    ]


@pytest.mark.parametrize("instrument", ["haq-ii", "ors", "cors"])
def test_no_part_where_no_confirmed_subscale(catalog, instrument):
    """HAq-II has no official subscale key (instruments.md 5); ORS and CORS measure outcome, not the alliance."""
    assert [s.part for s in catalog.get(instrument).mapping.scales] == [None]


@pytest.mark.parametrize("instrument", ["srs", "csrs", "gsrs"])
def test_the_lines_add_no_item_to_either_questionnaire(catalog, instrument):
    """A line is an answer, not a score item: the full form keeps its lines and total item, and the
    client's form shows the lines only, never a score."""
    inst = catalog.get(instrument)
    assert all(s.questionnaire_item is None for s in inst.mapping.subscales)
    assert [i["linkId"] for i in inst.questionnaire["item"]] == ["1", "2", "3", "4", "total"]
    assert [i["linkId"] for i in client_questionnaire(inst)["item"]] == ["1", "2", "3", "4"]


def test_the_codesystem_defines_each_line_by_its_domain(catalog):
    codesystem = next(cs for cs in catalog.codesystems if cs["url"] == CS)
    concepts = {c["code"]: c for c in codesystem["concept"]}
    for instrument, _, _, displays in FORMS:
        for line, display in zip(LINES, displays, strict=True):
            concept = concepts[f"{instrument}-{line}"]
            assert concept["display"] == display
            assert {"code": "kind", "valueCode": "score"} in concept["property"]
