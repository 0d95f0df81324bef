"""Export of Questionnaires and the CodeSystem, and text packs (licensed or translated wording)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alliance_fhir import TextPackError, apply_text_packs, content_resources, load_text_pack, validate_resource
from alliance_fhir.content.questionnaires import TRANSLATION, write_content
from alliance_fhir.instruments.catalog import walk_items

PACKS = Path(__file__).resolve().parents[1] / "fixtures" / "text-packs"


def pack(name: str):  # noqa: ANN201
    return load_text_pack(PACKS / name)


def test_every_exported_resource_validates(catalog):
    resources = content_resources(catalog)
    assert sorted(r["resourceType"] for r in resources).count("Questionnaire") == 7
    assert [r["id"] for r in resources if r["resourceType"] == "CodeSystem"] == ["alliance-fhir"]
    for resource in resources:
        validate_resource(resource)


def test_questionnaire_metadata(catalog):
    q = catalog.get("wai-sr").questionnaire
    for key in ("url", "version", "name", "title", "status", "publisher", "date", "copyright", "code", "subjectType"):
        assert q[key], key
    assert "Society for Psychotherapy Research" in q["copyright"]
    questions = [i for i in q["item"] if not i.get("readOnly")]
    assert [i["linkId"] for i in questions] == [str(n) for n in range(1, 13)]  # published order
    option = questions[0]["answerOption"][0]
    urls = {e["url"]: e["valueDecimal"] for e in option["extension"]}
    assert urls == {
        "http://hl7.org/fhir/StructureDefinition/ordinalValue": 1,
        "http://hl7.org/fhir/StructureDefinition/itemWeight": 1,
    }
    assert option["valueCoding"]["display"] == "Seldom"


def test_vas_items_are_decimal_sliders(catalog):
    item = catalog.get("srs").questionnaire["item"][0]
    ext = {e["url"].rsplit("/", 1)[1]: e for e in item["extension"]}
    assert item["type"] == "decimal"
    assert ext["minValue"]["valueDecimal"] == 0 and ext["maxValue"]["valueDecimal"] == 10
    assert ext["maxDecimalPlaces"]["valueInteger"] == 1
    assert ext["questionnaire-itemControl"]["valueCodeableConcept"]["coding"][0]["code"] == "slider"


def test_score_items_are_read_only_calculated(catalog):
    items = {i["linkId"]: i for i in walk_items(catalog.get("wai-sr").questionnaire["item"])}
    assert [i["linkId"] for i in items["total"]["item"]] == [
        "task",
        "bond",
        "goal",
    ]  # subscales nested under the total (SDC component)
    for link in ("total", "task", "bond", "goal"):
        assert items[link]["readOnly"] is True
        assert items[link]["extension"][0]["url"].endswith("sdc-questionnaire-calculatedExpression")


def test_shipped_texts_name_domains_only(catalog):
    """Licensed wording is never shipped: every item text is our own '<domain> (item n)'."""
    for inst in catalog:
        for item in inst.questionnaire["item"]:
            if not item.get("readOnly"):
                assert item["text"].endswith(f"(item {item['linkId']})"), (inst.id, item["text"])


def test_primary_pack_replaces_texts(catalog):
    q = apply_text_packs(catalog.get("srs"), [pack("srs-en.json")])
    assert q["item"][0]["text"] == "[licensed wording of SRS line 1]"
    assert q["title"].startswith("SRS (licensed") and q["language"] == "en"
    assert q["item"][4]["text"] == "SRS total score"  # score items keep ours
    assert catalog.get("srs").questionnaire["item"][0]["text"] == "Relationship (item 1)"  # the original is untouched


def test_second_pack_adds_translation_extensions(catalog):
    q = apply_text_packs(catalog.get("srs"), [pack("srs-en.json"), pack("srs-de.json")])
    translation = q["item"][1]["_text"]["extension"][0]
    assert translation["url"] == TRANSLATION
    assert translation["extension"] == [
        {"url": "lang", "valueCode": "de"},
        {"url": "content", "valueString": "[deutscher Wortlaut der SRS-Linie 2]"},
    ]
    validate_resource(q)


def test_answer_labels_can_be_translated(catalog):
    q = apply_text_packs(catalog.get("wai-sr"), [pack("wai-sr-fr.json")])
    labels = [o["valueCoding"]["display"] for o in q["item"][0]["answerOption"]]
    assert labels == ["Rarement", "Sometimes", "Fairly often", "Very often", "Toujours"]


def test_pack_missing_a_link_id_is_an_error(catalog, tmp_path):
    data = json.loads((PACKS / "srs-en.json").read_text())
    del data["texts"]["3"]
    (tmp_path / "p.json").write_text(json.dumps(data))
    with pytest.raises(TextPackError, match="misses linkIds 3"):
        apply_text_packs(catalog.get("srs"), [load_text_pack(tmp_path / "p.json")])


def test_pack_inventing_a_link_id_is_an_error(catalog, tmp_path):
    data = json.loads((PACKS / "srs-en.json").read_text())
    data["texts"]["5"] = "an extra line"
    (tmp_path / "p.json").write_text(json.dumps(data))
    with pytest.raises(TextPackError, match="names linkIds that do not exist: 5"):
        apply_text_packs(catalog.get("srs"), [load_text_pack(tmp_path / "p.json")])


def test_two_packs_in_one_language_are_an_error(catalog):
    with pytest.raises(TextPackError, match="two text packs for language 'en'"):
        apply_text_packs(catalog.get("srs"), [pack("srs-en.json"), pack("srs-en.json")])


def test_pack_for_an_unknown_instrument_is_an_error(catalog, tmp_path):
    data = json.loads((PACKS / "srs-en.json").read_text())
    data["instrument"] = "http://alliance-fhir.org/fhir/Questionnaire/srs|0.9"
    (tmp_path / "p.json").write_text(json.dumps(data))
    with pytest.raises(TextPackError, match="not a loaded instrument"):
        content_resources(catalog, [load_text_pack(tmp_path / "p.json")])


def test_malformed_pack_is_explained(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"language": "en"}))
    with pytest.raises(TextPackError, match="not a text pack: instrument: Field required"):
        load_text_pack(tmp_path / "p.json")


def test_write_content_files_and_bundle(catalog, tmp_path):
    written = write_content(content_resources(catalog), tmp_path, bundle=True)
    names = sorted(p.name for p in written)
    assert "Questionnaire-wai-sr.json" in names and "CodeSystem-alliance-fhir.json" in names and "bundle.json" in names
    bundle = json.loads((tmp_path / "bundle.json").read_text())
    assert bundle["type"] == "collection" and len(bundle["entry"]) == 8
    assert len({e["fullUrl"] for e in bundle["entry"]}) == 8
    validate_resource(bundle)


def test_an_unfilled_text_pack_template_is_refused(tmp_path):
    import json as _json

    from typer.testing import CliRunner

    from alliance_fhir.cli.main import app

    runner = CliRunner()
    template = runner.invoke(app, ["questionnaires", "template", "srs"]).stdout
    pack = tmp_path / "srs-pack.json"
    pack.write_text(template)
    result = runner.invoke(app, ["questionnaires", "export", str(tmp_path / "out"), "--text-pack", str(pack)])
    assert result.exit_code == 1 and "an unfilled template" in result.stderr and not (tmp_path / "out").exists()
    filled_source = _json.loads(template) | {"source": "Our own translation, licensed by the authors (2026)."}
    pack.write_text(_json.dumps(filled_source))  # the source is said, but the texts are still our domain labels
    result = runner.invoke(app, ["questionnaires", "export", str(tmp_path / "out"), "--text-pack", str(pack)])
    assert result.exit_code == 1 and "still the shipped domain labels" in result.stderr
