"""Form maps as data: the examples load only when their folder is named, the schema is in step, and a map that is ambiguous,
partial or cannot give in-range answers is refused with one line naming the file, the item and the reason."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from alliance_fhir.cli.main import app
from alliance_fhir.instruments.catalog import load_catalog
from alliance_fhir.instruments.schema import form_map_json_schema

ROOT = Path(__file__).resolve().parents[2]
FORM_MAPS = ROOT / "form-maps"  # shipped: the JSON Schema only
FORM_MAP_EXAMPLES = FORM_MAPS / "examples"  # the two example maps (invented ids), never loaded by default
runner = CliRunner()


def example(name: str) -> dict[str, Any]:
    return json.loads((FORM_MAP_EXAMPLES / f"{name}.json").read_text())


def site_folder(tmp_path: Path, *maps: dict[str, Any]) -> Path:
    """A site's instruments folder holding only form maps (in form-maps/, as documented)."""
    folder = tmp_path / "site"
    (folder / "form-maps").mkdir(parents=True)
    for n, doc in enumerate(maps):
        (folder / "form-maps" / f"map{n}.json").write_text(json.dumps(doc))
    return folder


def own_epic_map(change: Callable[[dict[str, Any]], None] = lambda _m: None) -> dict[str, Any]:
    """What a site writes after copying the Epic-like example: its own ids, then ``change``."""
    doc = example("epic-like-srs")
    doc.update(form_map="site-srs", example=False, vendor_questionnaire={"references": ["Questionnaire/e4Kq.site"]})
    change(doc)
    return doc


def check(folder: Path, *options: str) -> tuple[int, list[str]]:
    result = runner.invoke(app, [*options, "instruments", "check", str(folder)])
    return result.exit_code, [line for line in result.stderr.splitlines() if line.strip()]


def test_no_form_map_is_shipped_active():
    """A clinic never runs with invented ids: the shipped folder holds the schema and the examples' subfolder,
    whose maps the loader never reads (it reads ``form-maps/*.json`` only)."""
    assert sorted(p.name for p in FORM_MAPS.iterdir()) == ["examples", "form-map.schema.json"]
    assert sorted(p.name for p in FORM_MAP_EXAMPLES.iterdir()) == ["epic-like-srs.json", "openemr-like-wai-sr.json"]
    assert list(load_catalog().forms) == []


def test_the_examples_load_from_their_named_folder_and_are_marked_as_examples():
    catalog = load_catalog([FORM_MAP_EXAMPLES])  # a flat folder of maps, named as a site names its own
    assert catalog.problems == []
    by_id = {m.id: m for m in catalog.forms}
    assert sorted(by_id) == ["epic-like-srs", "openemr-like-wai-sr"]
    assert by_id["epic-like-srs"].instrument.id == "srs" and by_id["epic-like-srs"].form_map.example
    assert by_id["openemr-like-wai-sr"].instrument.id == "wai-sr"
    assert all("EXAMPLE" in m.form_map.source for m in catalog.forms)


def test_the_shipped_schema_is_generated_from_the_model():
    on_disk = json.loads((FORM_MAPS / "form-map.schema.json").read_text())
    assert on_disk == form_map_json_schema(), (
        "run: alliance-fhir instruments form-map-schema > form-maps/form-map.schema.json"
    )


def test_a_site_map_in_its_instruments_folder_is_checked_ok(tmp_path):
    code, lines = check(site_folder(tmp_path, own_epic_map()))
    assert code == 0, lines
    result = runner.invoke(app, ["instruments", "check", str(tmp_path / "site")])
    assert "ok  form map site-srs -> http://alliance-fhir.org/fhir/Questionnaire/srs|1.0.0" in result.stdout
    assert "1 form map(s) ok, 0 problem(s)" in result.stdout


def _twice(doc: dict[str, Any]) -> None:
    doc["items"][1]["vendor_link_id"] = doc["items"][0]["vendor_link_id"]


def _unmapped(doc: dict[str, Any]) -> None:
    doc["items"] = doc["items"][:3]


def _bad_label(doc: dict[str, Any]) -> None:
    doc["items"][4]["answer"]["labels"] = {**doc["items"][4]["answer"]["labels"], "Never": "wai-sr-never"}


def _millimetres_unscaled(doc: dict[str, Any]) -> None:
    doc["items"][2]["answer"].update(vendor_min=0, vendor_max=100)  # a 0-100 mm line, but no multiply 0.1


@pytest.mark.parametrize(
    ("name", "base", "change", "expected"),
    [
        (
            "a vendor linkId mapped twice",
            "epic",
            _twice,
            "map0.json: item '9990001' -> our '2': vendor linkId '9990001' is mapped twice",
        ),
        (
            "one of our required items unmapped",
            "epic",
            _unmapped,
            "map0.json: our item '4' of http://alliance-fhir.org/fhir/Questionnaire/srs|1.0.0 is not mapped (a partial map)",
        ),
        (
            "an answer label mapping to no answer code",
            "openemr",
            _bad_label,
            "map0.json: item 'wai_q05' -> our '5': label 'Never' maps to 'wai-sr-never', which is no answer code of our item",
        ),
        (
            "a conversion that cannot produce an in-range value",
            "epic",
            _millimetres_unscaled,
            "map0.json: item '9990003' -> our '3': the conversion turns the vendor range 0-100 into 0-100, "
            "outside our item's range 0-10",
        ),
    ],
)
def test_an_ambiguous_or_partial_map_is_refused_with_one_line(tmp_path, name, base, change, expected):
    if base == "epic":
        doc = own_epic_map(change)
    else:
        doc = example("openemr-like-wai-sr")
        doc.update(form_map="site-wai", example=False, vendor_questionnaire={"canonical": "http://emr.example/Q/wai"})
        change(doc)
    code, lines = check(site_folder(tmp_path, doc))
    assert code == 1, name
    problems = [line for line in lines if line.startswith("problem:") or "map0.json" in line]
    assert len(problems) == 1, lines
    assert problems[0].endswith(expected), problems[0]


def test_two_maps_claiming_the_same_vendor_questionnaire_are_refused(tmp_path):
    first, second = own_epic_map(), own_epic_map(lambda m: m.update(form_map="site-srs-copy"))
    code, lines = check(site_folder(tmp_path, first, second))
    assert code == 1
    [problem] = [line for line in lines if "map1.json" in line]
    assert "claims the same vendor Questionnaire (Questionnaire/e4Kq.site) as form map 'site-srs'" in problem
    assert "map0.json" in problem  # the other file is named too


def test_a_map_claiming_the_examples_vendor_questionnaire_is_refused_when_both_load(tmp_path):
    doc = own_epic_map(lambda m: m.update(vendor_questionnaire=example("epic-like-srs")["vendor_questionnaire"]))
    code, lines = check(site_folder(tmp_path, doc), "--instruments", str(FORM_MAP_EXAMPLES))
    assert code == 1 and any("as form map 'epic-like-srs'" in line for line in lines)


def test_a_map_naming_our_own_questionnaire_or_an_unknown_instrument_is_refused(tmp_path):
    ours = own_epic_map(
        lambda m: m.update(vendor_questionnaire={"canonical": "http://alliance-fhir.org/fhir/Questionnaire/srs"})
    )
    unknown = own_epic_map(
        lambda m: m.update(form_map="x", instrument="http://alliance-fhir.org/fhir/Questionnaire/srs|9")
    )
    unknown["vendor_questionnaire"] = {"references": ["Questionnaire/other"]}
    code, lines = check(site_folder(tmp_path, ours, unknown))
    assert code == 1
    assert any(
        "map0.json: its vendor canonical" in line and "is one of our own Questionnaires" in line for line in lines
    )
    assert any(
        "map1.json: names instrument http://alliance-fhir.org/fhir/Questionnaire/srs|9, which is not loaded" in line
        for line in lines
    )


def test_schema_rules_are_explained_without_the_values(tmp_path):
    doc = own_epic_map(lambda m: m.update(vendor_questionnaire={}))
    doc["items"][0]["answer"]["kind"] = "slider"
    code, lines = check(site_folder(tmp_path, doc))
    assert code == 1
    [problem] = [line for line in lines if "map0.json" in line]
    assert "invalid form map" in problem and "vendor_questionnaire" in problem and "items.0.answer" in problem


def test_labels_that_fold_to_the_same_text_are_ambiguous(tmp_path):
    doc = example("openemr-like-wai-sr")
    doc.update(form_map="site-wai", example=False, vendor_questionnaire={"canonical": "http://emr.example/Q/wai"})
    doc["items"][0]["answer"]["labels"]["ALWAYS "] = "wai-sr-always"
    code, lines = check(site_folder(tmp_path, doc))
    assert code == 1
    [problem] = [line for line in lines if "map0.json" in line]
    assert "labels ['always'] are given twice" in problem
