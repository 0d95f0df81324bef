"""Instruments are data: discovery, user-added folders, and the cross-checks that explain problems."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from alliance_fhir import InstrumentError, ScoringError, load_catalog, score_response
from alliance_fhir.instruments.catalog import data_root
from alliance_fhir.instruments.schema import mapping_json_schema

ROOT = Path(__file__).resolve().parents[2]
USER = Path(__file__).resolve().parents[1] / "fixtures" / "user-instrument"
SHIPPED = {"wai-sr", "srs", "csrs", "gsrs", "haq-ii", "ors", "cors"}
TEST_SYSTEM = "http://example.org/CodeSystem/test-anchors"


def test_every_shipped_instrument_loads_without_problems(catalog):
    assert {i.id for i in catalog} == SHIPPED
    assert catalog.problems == []


def test_data_root_is_the_checkout_in_an_editable_install():
    assert (data_root() / "mappings" / "wai-sr.json").is_file()


MAPPING_FILES = sorted(p for p in (ROOT / "mappings").glob("*.json") if not p.name.endswith(".schema.json"))


@pytest.mark.parametrize("path", MAPPING_FILES, ids=lambda p: p.name)
def test_each_mapping_names_its_questionnaire_url_and_version(catalog, path):
    mapping = json.loads(path.read_text())
    questionnaire = json.loads((ROOT / "questionnaires" / path.name).read_text())
    assert mapping["questionnaire"] == f"{questionnaire['url']}|{questionnaire['version']}"
    assert questionnaire["copyright"] and questionnaire["publisher"] and questionnaire["date"]


def test_shipped_questionnaires_share_one_namespace(catalog):
    assert {i.url.rsplit("/", 1)[0] for i in catalog} == {"http://alliance-fhir.org/fhir/Questionnaire"}


def test_json_schema_file_is_current():
    shipped = json.loads((ROOT / "mappings" / "mapping.schema.json").read_text())
    assert shipped == mapping_json_schema(), "run: alliance-fhir instruments schema > mappings/mapping.schema.json"


def test_codesystem_defines_every_project_code(catalog):
    codesystem = next(cs for cs in catalog.codesystems if cs["id"] == "alliance-fhir")
    defined = {c["code"] for c in codesystem["concept"]}
    used = {c.code for i in catalog for s in i.mapping.scales for c in s.codes if c.system == codesystem["url"]}
    used |= {
        code
        for i in catalog
        for spec in i.items.values()
        for (system, code) in spec.options
        if system == codesystem["url"]
    }
    used |= {i.id for i in catalog} | {f"{i.id}-scoring" for i in catalog}
    assert used <= defined
    assert len(defined) == len(codesystem["concept"]), "codes are unique"


def test_user_folder_adds_an_instrument_without_code(make_response):
    custom = load_catalog([USER])
    assert custom.problems == []
    assert custom.get("test-alliance").version == "2.0"
    assert {i.id for i in custom} == SHIPPED | {"test-alliance"}


def test_env_var_adds_folders(monkeypatch):
    monkeypatch.setenv("ALLIANCE_FHIR_INSTRUMENTS", str(USER))
    assert "test-alliance" in {i.id for i in load_catalog()}


def nested_response(a1=5, a2=6, a3=4, b1=2, b2=7, **overrides):  # noqa: ANN001, ANN003, ANN201
    def ans(v):  # noqa: ANN001, ANN202
        return [{"valueCoding": {"system": TEST_SYSTEM, "code": f"a{v}"}}]

    values = {"a1": a1, "a2": a2, "a3": a3, "b1": b1, "b2": b2}
    group_a = [{"linkId": k, "answer": ans(values[k])} for k in ("a1", "a2", "a3") if values[k] is not None]
    group_b = [{"linkId": k, "answer": ans(values[k])} for k in ("b1", "b2") if values[k] is not None]
    response = {
        "resourceType": "QuestionnaireResponse",
        "id": "nested-1",
        "status": "completed",
        "questionnaire": "http://example.org/Questionnaire/test-alliance|2.0",
        "item": [{"linkId": "part-a", "item": group_a}, {"linkId": "part-b", "item": group_b}],
    }
    response.update(overrides)
    return response


def test_nested_groups_reverse_item_and_mean_subscale():
    custom = load_catalog([USER])
    result = score_response(nested_response(), custom)
    # a1 5 + a2 6 + a3 4 + b1 reversed (1 + 7 - 2 = 6) + b2 7 = 28
    # part-b mean: (6 + 7) / 2 = 6.50
    assert [(s.scale.id, s.value) for s in result.scores] == [("total", 28), ("part-b", Decimal("6.50"))]


def test_band_flags_come_from_the_mapping():
    custom = load_catalog([USER])
    result = score_response(nested_response(a1=1, a2=1, a3=1, b1=7, b2=1), custom)
    # 1 + 1 + 1 + (8 - 7) + 1 = 5: inside the band 5-14
    assert result.total.value == 5 and [f.id for f in result.total.flags] == ["low"]


def test_answers_nested_under_answers_are_found():
    custom = load_catalog([USER])
    response = nested_response()
    # FHIR allows child items under an answer; move part B under item a3's answer
    part_b = response["item"].pop(1)
    response["item"][0]["item"][2]["answer"][0]["item"] = [part_b]
    assert score_response(response, custom).total.value == 28


def test_group_answered_twice_is_a_duplicate():
    custom = load_catalog([USER])
    response = nested_response()
    response["item"].append({"linkId": "part-a", "item": []})
    with pytest.raises(ScoringError, match="item 'part-a': duplicate item"):
        score_response(response, custom)


def copy_user(tmp_path: Path) -> Path:
    target = tmp_path / "mine"
    shutil.copytree(USER, target)
    return target


def edit(path: Path, change) -> None:  # noqa: ANN001
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def problems_after(tmp_path: Path, file: str, change) -> list[str]:  # noqa: ANN001
    folder = copy_user(tmp_path)
    edit(folder / file, change)
    return load_catalog([folder]).problems


def test_scored_link_id_must_exist(tmp_path):
    problems = problems_after(
        tmp_path, "mappings/test-alliance.json", lambda m: m["scales"][1].update(items=["b1", "b3"])
    )
    assert any("scored item 'b3' does not exist in the Questionnaire" in p for p in problems)


def test_scored_item_needs_numeric_values(tmp_path):
    def strip(q):  # noqa: ANN001, ANN202
        q["item"][0]["item"][0]["answerOption"][2]["extension"] = []

    problems = problems_after(tmp_path, "questionnaires/test-alliance.json", strip)
    assert any("item 'a1': answer 'a3' has no numeric value" in p for p in problems)


def test_declared_range_must_fit(tmp_path):
    problems = problems_after(tmp_path, "mappings/test-alliance.json", lambda m: m["scales"][0]["range"].update(max=40))
    assert any("declared range 5-40 does not fit 5 items of 1-7 (sum: 5-35)" in p for p in problems)


def test_answer_values_must_fit_the_item_scale(tmp_path):
    def widen(q):  # noqa: ANN001, ANN202
        q["item"][1]["item"][0]["answerOption"][6]["extension"][0]["valueDecimal"] = 8

    problems = problems_after(tmp_path, "questionnaires/test-alliance.json", widen)
    assert any("value 8 is outside the item scale 1-7" in p for p in problems)


def test_url_version_must_match(tmp_path):
    problems = problems_after(
        tmp_path, "mappings/test-alliance.json", lambda m: m.update(questionnaire=m["questionnaire"] + ".1")
    )
    assert any(
        "names Questionnaire http://example.org/Questionnaire/test-alliance|2.0.1, which is not loaded" in p
        for p in problems
    )
    assert any("versions found: http://example.org/Questionnaire/test-alliance|2.0" in p for p in problems)


def test_score_codes_must_be_unique(tmp_path):
    srs_code = {"system": "http://alliance-fhir.org/fhir/CodeSystem/alliance-fhir", "code": "srs-total"}
    problems = problems_after(
        tmp_path, "mappings/test-alliance.json", lambda m: m["scales"][0].update(codes=[srs_code])
    )
    assert any(
        "code http://alliance-fhir.org/fhir/CodeSystem/alliance-fhir|srs-total is also used by" in p for p in problems
    )


def test_mapping_schema_errors_are_explained(tmp_path):
    problems = problems_after(
        tmp_path, "mappings/test-alliance.json", lambda m: m["scales"][0].update(aggregation="median")
    )
    assert any("invalid mapping: scales.0.aggregation" in p for p in problems)


def test_questionnaire_without_copyright_is_refused(tmp_path):
    problems = problems_after(tmp_path, "questionnaires/test-alliance.json", lambda q: q.pop("copyright"))
    assert any("Questionnaire lacks copyright" in p for p in problems)


def test_a_broken_user_pair_leaves_the_shipped_instruments_working(tmp_path, catalog, make_response):
    folder = copy_user(tmp_path)
    (folder / "mappings" / "test-alliance.json").write_text("{not json")
    broken = load_catalog([folder])
    assert any("not readable JSON" in p for p in broken.problems)
    assert score_response(make_response("srs", {1: 9, 2: 9, 3: 9, 4: 9}), broken).total.value == 36


def test_missing_folder_is_a_problem(tmp_path):
    assert any("does not exist" in p for p in load_catalog([tmp_path / "nope"]).problems)


def test_flat_folder_layout_also_works(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for file in USER.glob("*/*.json"):
        shutil.copy(file, flat / file.name.replace(".json", f".{file.parent.name}.json"))
    assert "test-alliance" in {i.id for i in load_catalog([flat])}


def test_get_by_id_url_and_canonical(catalog):
    wai = catalog.get("wai-sr")
    assert catalog.get(wai.url) is wai and catalog.get(wai.canonical) is wai
    with pytest.raises(InstrumentError, match="unknown instrument 'wai-36'"):
        catalog.get("wai-36")


def test_the_headline_scale_is_explicit_and_listed_first(tmp_path):
    """A mapping listing subscales before 'total' used to score the Task subscale as the Observation's value."""
    import shutil

    from typer.testing import CliRunner

    from alliance_fhir.cli.main import app

    folder = tmp_path / "reordered"
    (folder / "questionnaires").mkdir(parents=True)
    (folder / "mappings").mkdir()
    questionnaire = json.loads((ROOT / "questionnaires" / "wai-sr.json").read_text())
    questionnaire["url"] = "http://example.org/Questionnaire/wai-sr-copy"
    (folder / "questionnaires" / "wai-sr-copy.json").write_text(json.dumps(questionnaire))
    mapping = json.loads((ROOT / "mappings" / "wai-sr.json").read_text())
    mapping["instrument"] = "wai-sr-copy"
    mapping["questionnaire"] = "http://example.org/Questionnaire/wai-sr-copy|" + mapping["questionnaire"].split("|")[1]
    mapping["scales"] = mapping["scales"][1:] + mapping["scales"][:1]  # task, bond, goal, total
    (folder / "mappings" / "wai-sr-copy.json").write_text(json.dumps(mapping))
    result = CliRunner().invoke(app, ["instruments", "check", str(folder)])
    assert result.exit_code == 1
    assert "ambiguous headline: 'total' is the headline but 'task' is listed first" in result.stderr
    mapping["headline"] = "task"  # explicit, and listed first: allowed (the task subscale is then the headline)
    (folder / "mappings" / "wai-sr-copy.json").write_text(json.dumps(mapping))
    assert "headline" not in CliRunner().invoke(app, ["instruments", "check", str(folder)]).stderr
    mapping["headline"] = "overall"
    (folder / "mappings" / "wai-sr-copy.json").write_text(json.dumps(mapping))
    assert (
        "the headline scale 'overall' is not among the scales"
        in CliRunner().invoke(app, ["instruments", "check", str(folder)]).stderr
    )
    shutil.rmtree(folder)
