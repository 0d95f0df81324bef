"""The FHIR NPM package (``alliance-fhir package build``): layout, manifest, index, determinism, content.

Also the SDC extraction metadata of the shipped Questionnaires (``content.extraction_problems``),
since the package is how vendors receive it.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import re
import tarfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.observationdefinition import ObservationDefinition
from fhir.resources.R4B.valueset import ValueSet
from typer.testing import CliRunner

import alliance_fhir
from alliance_fhir import AllianceFhirError, build_observation, content_resources, score_response, validate_resource
from alliance_fhir._ids import IDENTIFIER_SYSTEM, PROJECT_CODESYSTEM, UCUM
from alliance_fhir.cli.main import app
from alliance_fhir.content.definitions import definition_resources
from alliance_fhir.content.extraction import OBSERVATION_EXTRACT, extraction_problems, if_none_exist_expression
from alliance_fhir.content.package import PACKAGE_NAME, build_package, package_files, package_resources, write_package
from alliance_fhir.content.questionnaires import resource_json
from alliance_fhir.instruments.catalog import Catalog, walk_items

from ..conftest import all_items
from ..shipped import shipped_ids

runner = CliRunner()
PACKS = Path(__file__).resolve().parents[1] / "fixtures" / "text-packs"
VERSION = "1.2.3"


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


def contents(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def tgz(catalog: Catalog) -> bytes:
    return build_package(package_files(package_resources(catalog), VERSION))


@pytest.fixture(scope="module")
def files(tgz: bytes) -> dict[str, bytes]:
    return contents(tgz)


def resources_in(files: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    return {
        name: json.loads(data)
        for name, data in files.items()
        if name not in ("package/package.json", "package/.index.json") and not name.startswith("package/other/")
    }


# ---------------------------------------------------------------- layout and manifest


def test_layout_is_one_package_folder_with_manifest_index_and_resources(files):
    # resources at the top; the ViewDefinitions (not R4 resources) in package/other/
    assert all(name.startswith("package/") and name.count("/") == 1 for name in files if "/other/" not in name)
    assert sorted(n for n in files if n.startswith("package/other/")) == [
        "package/other/ViewDefinition-alliance-scores.json",
        "package/other/ViewDefinition-alliance-signals.json",
    ]
    assert {"package/package.json", "package/.index.json"} <= set(files)
    by_type: dict[str, list[str]] = {}
    for name, resource in resources_in(files).items():
        assert name == f"package/{resource['resourceType']}-{resource['id']}.json"
        by_type.setdefault(resource["resourceType"], []).append(resource["id"])
    assert sorted(by_type["Questionnaire"]) == ["cors", "csrs", "gsrs", "haq-ii", "ors", "srs", "wai-sr"]
    assert by_type["CodeSystem"] == ["alliance-fhir"]
    assert sorted(by_type["ValueSet"]) == ["haq-ii-answers", "wai-sr-answers"]  # the VAS forms have no coded answers
    # one per score we write: every total, the WAI-SR subscales, and the four lines of each SRS-family form
    lines = [
        f"{form}-{line}"
        for form in ("csrs", "gsrs", "srs")
        for line in ("approach", "goals", "overall", "relationship")
    ]
    assert sorted(by_type["ObservationDefinition"]) == sorted(
        [
            "cors-total",
            "csrs-total",
            "gsrs-total",
            "haq-ii-total",
            "ors-total",
            "srs-total",
            "wai-sr-bond",
            "wai-sr-goal",
            "wai-sr-task",
            "wai-sr-total",
            *lines,
        ]
    )
    assert set(by_type) == {"Questionnaire", "CodeSystem", "ValueSet", "ObservationDefinition"}


def test_manifest(files):
    manifest = json.loads(files["package/package.json"])
    assert manifest["name"] == PACKAGE_NAME == "alliance-fhir.content"
    assert re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", manifest["name"])  # FHIR package names: lowercase, dotted
    assert manifest["version"] == VERSION
    assert manifest["fhirVersions"] == ["4.0.1"]
    assert manifest["dependencies"] == {"hl7.fhir.r4.core": "4.0.1"}
    assert manifest["canonical"] == "http://alliance-fhir.org/fhir"
    assert manifest["type"] == "Conformance" and manifest["license"] == "Apache-2.0"
    assert manifest["title"] and manifest["description"] and manifest["author"]


def test_index_lists_every_resource_file_with_its_keys(files):
    index = json.loads(files["package/.index.json"])
    assert index["index-version"] == 2
    resources = resources_in(files)
    assert sorted(f"package/{e['filename']}" for e in index["files"]) == sorted(resources)
    for entry in index["files"]:
        resource = resources[f"package/{entry['filename']}"]
        expected = {"filename": entry["filename"], "resourceType": resource["resourceType"], "id": resource["id"]}
        expected |= {k: resource[k] for k in ("url", "version", "content") if k in resource}
        assert entry == expected
    # R4 ObservationDefinition has no url or version: indexed by id alone.
    od = next(e for e in index["files"] if e["resourceType"] == "ObservationDefinition")
    assert set(od) == {"filename", "resourceType", "id"}


def test_the_archive_is_deterministic(catalog, tgz):
    again = build_package(package_files(package_resources(load_fresh(catalog)), VERSION))
    assert again == tgz  # same content and version -> the same bytes
    header = gzip.GzipFile(fileobj=io.BytesIO(tgz))
    header.read(1)
    assert header.mtime == 0  # no build time in the gzip header
    infos = members(tgz)
    assert list(infos) == sorted(infos)  # sorted entries
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode, m.type) for m in infos.values()} == {
        (499162500, 0, 0, "", "", 0o644, tarfile.REGTYPE)
    }


def load_fresh(catalog: Catalog) -> Catalog:
    """A second, independently loaded catalog (same files): no shared state between the two builds."""
    fresh = alliance_fhir.load_catalog()
    assert fresh is not catalog and fresh.problems == []
    return fresh


def test_another_version_changes_only_the_manifest(catalog, files):
    other = package_files(package_resources(catalog), "1.2.4")
    assert {n for n in other if other[n] != files[n]} == {"package/package.json"}


@pytest.mark.parametrize(
    ("name", "version"), [("Alliance.Content", "1.0.0"), ("alliance", "1.0.0"), (PACKAGE_NAME, "1.0")]
)
def test_bad_name_or_version_is_refused(catalog, name, version):
    with pytest.raises(AllianceFhirError, match="package"):
        package_files(package_resources(catalog), version, name=name)


# ---------------------------------------------------------------- one code path with `questionnaires export`


def test_questionnaires_and_codesystem_are_byte_identical_to_the_export(files, tmp_path):
    result = runner.invoke(app, ["questionnaires", "export", str(tmp_path)])
    assert result.exit_code == 0, result.output
    exported = {p.name: p.read_bytes() for p in tmp_path.glob("*.json")}
    packaged = {
        n.removeprefix("package/"): d
        for n, d in files.items()
        if n.split("/")[1].startswith(("Questionnaire-", "CodeSystem-"))
    }
    assert packaged == exported


def test_text_packs_reach_the_package_as_they_reach_the_export(catalog):
    pack = alliance_fhir.load_text_pack(PACKS / "srs-en.json")
    packaged = package_files(package_resources(catalog, [pack]), VERSION)
    srs = json.loads(packaged["package/Questionnaire-srs.json"])
    assert srs["item"][0]["text"] == "[licensed wording of SRS line 1]"
    assert (
        packaged["package/Questionnaire-srs.json"]
        == resource_json(next(r for r in content_resources(catalog, [pack]) if r["id"] == "srs")).encode()
    )


# ---------------------------------------------------------------- ValueSets


@pytest.mark.parametrize("instrument", ["wai-sr", "haq-ii"])
def test_answer_valueset_lists_the_anchors_in_value_order(catalog, files, instrument):
    valueset = json.loads(files[f"package/ValueSet-{instrument}-answers.json"])
    ValueSet.model_validate(valueset)
    inst = catalog.get(instrument)
    assert valueset["url"] == f"http://alliance-fhir.org/fhir/ValueSet/{instrument}-answers"
    assert valueset["version"] == inst.version and valueset["status"] == "active"
    (include,) = valueset["compose"]["include"]
    assert include["system"] == PROJECT_CODESYSTEM and include["version"] == "1.0.0"  # version-specific (SDC)
    options = inst.items["1"].options
    by_weight = sorted(options, key=lambda key: options[key])
    assert [c["code"] for c in include["concept"]] == [code for _, code in by_weight]
    assert all(spec.options == options for spec in inst.items.values())  # one scale for every item
    codesystem = next(cs for cs in catalog.codesystems if cs["url"] == PROJECT_CODESYSTEM)
    concepts = {c["code"]: c for c in codesystem["concept"]}
    for concept in include["concept"]:
        defined = concepts[concept["code"]]
        assert concept["display"] == defined["display"]
        weight = next(p["valueDecimal"] for p in defined["property"] if p["code"] == "itemWeight")
        assert Decimal(str(weight)) == options[(PROJECT_CODESYSTEM, concept["code"])]


def test_haq_ii_valueset_repeats_the_unconfirmed_label_warning(files):
    valueset = json.loads(files["package/ValueSet-haq-ii-answers.json"])
    assert "labels-unconfirmed" in valueset["description"]


# ---------------------------------------------------------------- ObservationDefinitions vs our Observations


def observation_for(catalog: Catalog, make_response, instrument: str) -> dict[str, Any]:
    n = len(catalog.get(instrument).items)
    raw = 3 if catalog.get(instrument).mapping.item_scale.kind == "likert" else 7.5
    response = make_response(instrument, all_items(n, raw))
    return build_observation(score_response(response, catalog), response)


@pytest.mark.parametrize("instrument", shipped_ids())
def test_observation_definition_matches_the_observations_we_write(catalog, files, make_response, instrument):
    observation = observation_for(catalog, make_response, instrument)
    mapping = catalog.get(instrument).mapping
    parts = [observation] + observation.get("component", [])
    assert len(parts) == len(mapping.scales)
    for scale, part in zip(mapping.scales, parts, strict=True):
        definition = json.loads(files[f"package/ObservationDefinition-{instrument}-{scale.id}.json"])
        ObservationDefinition.model_validate(definition)
        assert definition["code"] == part["code"]
        assert definition["category"] == observation["category"]
        assert definition["permittedDataType"] == ["Quantity"] and definition["multipleResultsAllowed"] is False
        unit = definition["quantitativeDetails"]["unit"]["coding"][0]
        quantity = part["valueQuantity"]
        assert (unit["system"], unit["code"]) == (quantity["system"], quantity["code"]) == (UCUM, "{score}")
        assert definition["method"]["coding"][0] | {"display": None} == observation["method"]["coding"][0] | {
            "display": None
        }
        absolute = definition["qualifiedInterval"][0]
        assert absolute["category"] == "absolute"
        assert absolute["range"] == {"low": part["referenceRange"][0]["low"], "high": part["referenceRange"][0]["high"]}
        assert definition["identifier"] == [
            {
                "system": "http://alliance-fhir.org/fhir/sid/observation-definition",
                "value": f"{mapping.questionnaire}#{scale.id}",
            }
        ]


@pytest.mark.parametrize(
    ("definition", "precision"),
    [
        ("wai-sr-total", 1),  # whole sums, but a prorated total has 1 decimal
        ("wai-sr-task", 0),  # all items required: whole numbers only
        ("haq-ii-total", 1),  # prorated like WAI-SR
        ("srs-total", 1),  # VAS lines read to 1 mm
        ("srs-approach", 1),  # one line alone, read to 1 mm
    ],
)
def test_decimal_precision_covers_every_value_we_write(files, definition, precision):
    doc = json.loads(files[f"package/ObservationDefinition-{definition}.json"])
    assert doc["quantitativeDetails"]["decimalPrecision"] == precision


@pytest.mark.parametrize(("instrument", "low", "high"), [("srs", 36, 40), ("ors", 25, 40)])
def test_c2_cutoff_is_a_reference_interval_on_the_unflagged_side(files, instrument, low, high):
    doc = json.loads(files[f"package/ObservationDefinition-{instrument}-total.json"])
    reference = [i for i in doc["qualifiedInterval"] if i["category"] == "reference"]
    assert len(reference) == 1
    assert (reference[0]["range"]["low"]["value"], reference[0]["range"]["high"]["value"]) == (low, high)
    assert "[C2]" in reference[0]["condition"] and f"< {low}" in reference[0]["condition"]
    assert not [i for i in doc["qualifiedInterval"] if i["category"] == "critical"]


@pytest.mark.parametrize(
    "definition",
    ["wai-sr-total", "wai-sr-bond", "haq-ii-total", "csrs-total", "gsrs-total", "cors-total", "srs-relationship"],
)
def test_no_cutoff_no_reference_interval(files, definition):
    doc = json.loads(files[f"package/ObservationDefinition-{definition}.json"])
    assert [i["category"] for i in doc["qualifiedInterval"]] == ["absolute"]


def test_only_c2_cutoffs_become_intervals(catalog):
    srs = catalog.get("srs")
    weak = srs.mapping.model_copy(deep=True)
    cut = weak.scales[0].cutoffs[0].model_copy(update={"confidence": "C1"})
    weak = weak.model_copy(update={"scales": [weak.scales[0].model_copy(update={"cutoffs": [cut]})]})
    fake = Catalog(
        instruments={
            srs.canonical: type(srs)(srs.questionnaire, weak, srs.items, srs.link_ids, srs.score_link_ids, srs.source)
        }
    )
    (definition,) = [r for r in definition_resources(fake) if r["resourceType"] == "ObservationDefinition"]
    assert [i["category"] for i in definition["qualifiedInterval"]] == ["absolute"]


# ---------------------------------------------------------------- SDC extraction metadata in the Questionnaires


def test_shipped_questionnaires_carry_consistent_extraction_metadata(catalog):
    for inst in catalog:
        assert extraction_problems(inst) == [], inst.id


def test_wai_sr_subscales_are_components_of_the_total(catalog):
    total = next(i for i in catalog.get("wai-sr").questionnaire["item"] if i["linkId"] == "total")
    assert [c["linkId"] for c in total["item"]] == ["task", "bond", "goal"]
    for child in total["item"]:
        relation = [e for e in child["extension"] if e["url"] == OBSERVATION_EXTRACT]
        assert relation == [{"url": OBSERVATION_EXTRACT, "valueCode": "component"}]
    assert [e for e in total["extension"] if e["url"] == OBSERVATION_EXTRACT] == [
        {"url": OBSERVATION_EXTRACT, "valueBoolean": True}
    ]


def test_srs_total_item_carries_project_and_snomed_codes(catalog):
    total = next(i for i in catalog.get("srs").questionnaire["item"] if i["linkId"] == "total")
    assert [(c["system"], c["code"]) for c in total["code"]] == [
        (PROJECT_CODESYSTEM, "srs-total"),
        ("http://snomed.info/sct", "720482000"),
    ]


def test_if_none_exist_names_the_response_and_the_total_code(catalog):
    expression = if_none_exist_expression(catalog.get("wai-sr").mapping.total)
    assert expression == (
        "'derived-from=QuestionnaireResponse/' + %resource.id + "
        "'&code=http://alliance-fhir.org/fhir/CodeSystem/alliance-fhir|wai-sr-total'"
    )
    # Our own identifier cannot be written as FHIRPath (a uuid5 of the response, url and algorithm version).
    assert IDENTIFIER_SYSTEM not in expression


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda total: total["item"].pop(0), "'task' (task) is not nested under 'total'"),
        (lambda total: total["item"][1]["extension"].pop(), "item 'bond': observationExtract must be component"),
        (lambda total: total.pop("code"), "item 'total': item.code must be the codes of scale 'total'"),
        (lambda total: total["item"][2].update(text="Goal"), "item 'goal': text must be the score's display"),
        (lambda total: total["extension"].pop(), "item 'total': observationExtractEntry must be ifNoneExist"),
        (lambda total: total["extension"].pop(1), "item 'total': questionnaire-unit must be UCUM {score}"),
        (
            lambda total: total["extension"].pop(3),
            "observation-extract-category must be survey and therapeutic-alliance",
        ),
    ],
)
def test_extraction_problems_are_explained(catalog, change, problem):
    inst = catalog.get("wai-sr")
    questionnaire = copy.deepcopy(inst.questionnaire)
    change(next(i for i in questionnaire["item"] if i["linkId"] == "total"))
    broken = type(inst)(questionnaire, inst.mapping, inst.items, inst.link_ids, inst.score_link_ids, inst.source)
    found = extraction_problems(broken)
    assert any(problem in p for p in found), found


def test_nested_score_items_still_score_and_validate(catalog, make_response):
    """A filler's response nests the subscales under the total's answer (R4: children of a question)."""
    response = make_response("wai-sr", all_items(12, 4))
    response["item"].append(
        {
            "linkId": "total",
            "answer": [
                {
                    "valueDecimal": 48,
                    "item": [{"linkId": link, "answer": [{"valueDecimal": 16}]} for link in ("task", "bond", "goal")],
                }
            ],
        }
    )
    validate_resource(response)
    result = score_response(response, catalog)
    assert {s.scale.id: s.value for s in result.scores} == {"total": 48, "task": 16, "bond": 16, "goal": 16}
    assert not [w for w in result.warnings if "differs" in w]  # the stored scores were found and compared
    stale = copy.deepcopy(response)
    stale["item"][-1]["answer"][0]["item"][1]["answer"] = [{"valueDecimal": 15}]
    assert any("the stored bond differs" in w for w in score_response(stale, catalog).warnings)


def test_every_score_item_is_reachable_by_walking(catalog):
    links = {i["linkId"] for i in walk_items(catalog.get("wai-sr").questionnaire["item"])}
    assert {"total", "task", "bond", "goal"} <= links


# ---------------------------------------------------------------- CLI


def test_cli_builds_into_a_folder_with_the_project_version(tmp_path):
    result = runner.invoke(app, ["package", "build", str(tmp_path / "dist")])
    assert result.exit_code == 0, result.output
    path = tmp_path / "dist" / f"{PACKAGE_NAME}-{alliance_fhir.__version__}.tgz"
    assert f"wrote {path}" in result.output.replace("\n", "")
    manifest = json.loads(contents(path.read_bytes())["package/package.json"])
    assert manifest["version"] == alliance_fhir.__version__


def test_cli_writes_the_named_tgz_and_is_reproducible(tmp_path):
    first, second = tmp_path / "a.tgz", tmp_path / "b.tgz"
    for path in (first, second):
        result = runner.invoke(app, ["package", "build", str(path)])
        assert result.exit_code == 0, result.output
    assert first.read_bytes() == second.read_bytes()


def test_cli_refuses_a_text_pack_that_does_not_fit(tmp_path):
    data = json.loads((PACKS / "srs-en.json").read_text())
    del data["texts"]["3"]
    (tmp_path / "p.json").write_text(json.dumps(data))
    result = runner.invoke(app, ["package", "build", str(tmp_path / "x.tgz"), "--text-pack", str(tmp_path / "p.json")])
    assert result.exit_code == 1 and "misses linkIds 3" in result.output
    assert not (tmp_path / "x.tgz").exists()


def test_cli_help():
    for command in (["package"], ["package", "build"]):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_write_package_reports_an_unwritable_target(catalog, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(AllianceFhirError, match="cannot write the package"):
        write_package(catalog, blocker / "sub" / "x.tgz", VERSION)
