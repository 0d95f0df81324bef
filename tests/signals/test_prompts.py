"""Discussion prompts are data a clinic can edit or translate, checked as strictly as a mapping.

The shipped English set has a prompt for every situation fact and every part of the alliance, each
short enough for a 560 px card, each saying whose it is and what it rests on. A clinic's own file
loads by path; a file that breaks a rule is refused with one line naming the file, the prompt and
the reason.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from alliance_fhir.errors import ConfigError
from alliance_fhir.signals.prompts import default_prompts_path, load_prompts, prompts_json_schema

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "prompts" / "en.json"
# Written out here, not taken from the module: the list a card may ask for is the specification.
FACTS = ("fallen", "below", "early", "split", "gap", "repair", "on-track")
PARTS = ("goals", "tasks", "bond", "overall")
# A small German set in our own words, as a clinic would write it (one text per fact and part).
GERMAN = {
    "fallen": "Sprechen Sie den Rückgang offen und neugierig an: Was ist Ihnen aufgefallen, was war zuletzt zwischen Ihnen?",
    "below": "Fragen Sie, was die Sitzungen hilfreicher machen würde, und besprechen Sie Ziele und Vorgehen neu.",
    "early": "Klären Sie früh, ob Sie sich über die Ziele einig sind, und fragen Sie, wie die ersten Sitzungen waren.",
    "split": "Laden Sie diese Person ein, ihre Sicht zu sagen, ohne sie bloßzustellen: Fragen Sie alle der Reihe nach.",
    "gap": "Sie sehen die Sitzungen anders als Ihr Gegenüber. Fragen Sie direkt, wie es für die Person läuft.",
    "repair": "Die Beziehung hat sich erholt. Sprechen Sie es an und fragen Sie, was geholfen hat.",
    "on-track": "Nichts zu tun. Fragen Sie weiter jede Sitzung nach der Einschätzung.",
    "goals": "Prüfen Sie gemeinsam, ob Sie an dem arbeiten, was die Person möchte, und legen Sie die Themen neu fest.",
    "tasks": "Erklären Sie, warum Sie so vorgehen, fragen Sie, was besser passen würde, und bieten Sie einen Wechsel an.",
    "bond": "Fragen Sie, wie es der Person mit Ihnen geht. Benennen Sie Ihren eigenen Anteil, ohne sich zu verteidigen.",
    "overall": "Fragen Sie, was die nächste Sitzung besser machen würde, und vereinbaren Sie, es zu versuchen.",
}


def shipped() -> dict[str, Any]:
    return json.loads(SHIPPED.read_text(encoding="utf-8"))


def write(tmp_path: Path, doc: dict[str, Any], name: str = "de.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def german() -> dict[str, Any]:
    """The shipped set with German texts, language and title: what a clinic's translator hands in."""
    doc = shipped()
    doc.pop("$schema")
    doc.update(language="de", title="Gesprächsimpulse (Deutsch)", source="Praxis Beispiel, 2026: Übersetzung")
    for prompt in doc["situations"] + doc["parts"]:
        prompt["text"] = GERMAN[prompt["id"]]
    return doc


def prompt_in(doc: dict[str, Any], ident: str) -> dict[str, Any]:
    return next(p for p in doc["situations"] + doc["parts"] if p["id"] == ident)


def refused(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_prompts(path)
    message = str(caught.value)
    assert "\n" not in message, "one line"
    return message


# ---------------------------------------------------------------- the shipped set


def test_the_shipped_set_has_a_prompt_for_every_fact_and_every_part():
    prompts = load_prompts()
    assert prompts.language == "en"
    assert [prompts.situation(fact).id for fact in FACTS] == list(FACTS)  # type: ignore[union-attr]
    assert [prompts.part(part).id for part in PARTS] == list(PARTS)  # type: ignore[union-attr]
    assert len(prompts.prompts) == 11


def test_an_unknown_fact_or_part_has_no_prompt():
    prompts = load_prompts()
    assert prompts.situation("critical") is None
    assert prompts.part("relationship") is None  # an SRS line's name; the part is "bond"


def test_every_shipped_prompt_says_whose_it_is_and_what_it_rests_on():
    for prompt in shipped()["situations"] + shipped()["parts"]:
        assert prompt["whose"] in ("literature", "project decision"), prompt["id"]
        assert prompt["source"].strip(), prompt["id"]
        if prompt["whose"] == "literature":  # a citation: authors and a year, and how well confirmed
            assert re.search(r"\b(19|20)\d\d\b", prompt["source"]), prompt["id"]
            assert prompt["confidence"] in ("C2", "C1", "U"), prompt["id"]
        else:
            assert "confidence" not in prompt and prompt["source"].startswith("Project decision"), prompt["id"]


def test_no_shipped_prompt_is_longer_than_200_characters_and_each_is_one_plain_sentence_or_two():
    for prompt in shipped()["situations"] + shipped()["parts"]:
        text = prompt["text"]
        assert len(text) <= 200, (prompt["id"], len(text))
        assert text[-1] in ".?" and "\n" not in text, prompt["id"]


def test_the_repair_prompt_and_the_drop_prompt_rest_on_the_rupture_repair_literature():
    prompts = load_prompts()
    for fact in ("fallen", "repair"):
        prompt = prompts.situation(fact)
        assert prompt is not None and prompt.whose == "literature"
        assert "Eubanks, Muran & Safran (2018)" in prompt.source


def test_the_split_prompt_names_no_other_member():
    """The card is in one client's chart; the other members of the joint session are not named there."""
    split = load_prompts().situation("split")
    assert split is not None
    assert not re.search(r"partner|husband|wife|mother|father|\{", split.text, flags=re.I)


def test_the_packaged_set_is_the_checkouts_file_in_an_editable_install():
    assert default_prompts_path() == SHIPPED


def test_the_schema_file_is_the_models_schema():
    on_disk = json.loads((ROOT / "prompts" / "prompts.schema.json").read_text(encoding="utf-8"))
    assert on_disk == prompts_json_schema(), "run: alliance-fhir prompts schema > prompts/prompts.schema.json"


# ---------------------------------------------------------------- a clinic's own file


def test_a_translated_file_loads_by_path(tmp_path):
    prompts = load_prompts(write(tmp_path, german()))
    assert prompts.language == "de"
    assert prompts.situation("repair").text == GERMAN["repair"]  # type: ignore[union-attr]
    assert prompts.part("bond").text == GERMAN["bond"]  # type: ignore[union-attr]
    assert prompts.situation("fallen").source == prompt_in(shipped(), "fallen")["source"]  # type: ignore[union-attr]


def test_a_text_of_exactly_200_characters_loads(tmp_path):
    doc = german()
    prompt_in(doc, "fallen")["text"] = "x" * 199 + "?"
    assert len(load_prompts(write(tmp_path, doc)).situation("fallen").text) == 200  # type: ignore[union-attr]


def test_control_characters_and_line_breaks_in_a_text_become_plain_spaces(tmp_path):
    doc = german()
    prompt_in(doc, "gap")["text"] = "Ask\nthe client\x1b[31m directly\u202e now."
    assert load_prompts(write(tmp_path, doc)).situation("gap").text == "Ask the client [31m directly now."  # type: ignore[union-attr]


# ---------------------------------------------------------------- a bad file: one line naming file, prompt, reason


def test_a_file_missing_a_fact_is_refused_naming_it(tmp_path):
    doc = german()
    doc["situations"] = [p for p in doc["situations"] if p["id"] != "split"]
    path = write(tmp_path, doc)
    assert refused(path) == f"{path}: prompt 'split': missing (every situation needs a prompt)"


def test_a_file_missing_a_part_is_refused_naming_it(tmp_path):
    doc = german()
    doc["parts"] = [p for p in doc["parts"] if p["id"] != "tasks"]
    path = write(tmp_path, doc)
    assert refused(path) == f"{path}: prompt 'tasks': missing (every part needs a prompt)"


def test_an_unknown_key_is_refused_naming_the_prompt(tmp_path):
    doc = german()
    prompt_in(doc, "fallen")["tone"] = "warm"
    path = write(tmp_path, doc)
    assert refused(path) == f"{path}: prompt 'fallen': unknown key 'tone'"


def test_an_unknown_key_at_the_top_is_refused(tmp_path):
    path = write(tmp_path, {**german(), "author": "someone"})
    assert refused(path) == f"{path}: unknown key 'author'"


def test_an_over_long_text_is_refused_naming_the_prompt(tmp_path):
    doc = german()
    prompt_in(doc, "fallen")["text"] = "x" * 200 + "?"  # 201 characters
    path = write(tmp_path, doc)
    assert refused(path) == f"{path}: prompt 'fallen': text is longer than 200 characters"


def test_a_wrong_whose_is_refused_naming_the_prompt(tmp_path):
    doc = german()
    prompt_in(doc, "gap")["whose"] = "authors"
    path = write(tmp_path, doc)
    assert refused(path) == f"{path}: prompt 'gap': whose must be 'literature' or 'project decision'"


def test_a_literature_prompt_without_a_confidence_tag_is_refused(tmp_path):
    doc = german()
    del prompt_in(doc, "repair")["confidence"]
    path = write(tmp_path, doc)
    assert refused(path) == f"{path}: prompt 'repair': a literature prompt needs confidence (C2, C1 or U)"


def test_an_unknown_fact_is_refused_naming_the_known_ones(tmp_path):
    doc = german()
    prompt_in(doc, "early")["id"] = "drop-out"
    path = write(tmp_path, doc)
    assert refused(path) == (
        f"{path}: prompt 'drop-out': not a situation (known: fallen, below, early, split, gap, repair, on-track)"
    )


def test_a_fact_given_twice_is_refused(tmp_path):
    doc = german()
    doc["situations"].append(dict(prompt_in(doc, "below")))
    path = write(tmp_path, doc)
    assert refused(path) == f"{path}: prompt 'below': given twice"


def test_an_empty_text_and_a_missing_source_are_both_said(tmp_path):
    doc = german()
    prompt_in(doc, "bond")["text"] = " \n "
    del prompt_in(doc, "bond")["source"]
    path = write(tmp_path, doc)
    assert refused(path) == f"{path}: prompt 'bond': text is empty; prompt 'bond': source is missing"


def test_a_file_that_is_not_json_or_not_there_is_one_line(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"language": "de",', encoding="utf-8")
    assert refused(broken).startswith(f"{broken}: not readable JSON (")
    absent = tmp_path / "absent.json"
    assert refused(absent).startswith(f"{absent}: cannot read the prompt file (")
    listed = write(tmp_path, [], "list.json")  # type: ignore[arg-type]
    assert refused(listed).startswith(f"{listed}: expected a JSON object")


def test_the_docs_table_shows_every_shipped_prompt_as_shipped():
    """docs/prompts.md is what a clinic reads before translating: it must not drift from the file."""
    page = (ROOT / "docs" / "prompts.md").read_text(encoding="utf-8")
    for prompt in load_prompts().prompts:
        assert f"| `{prompt.id}` |" in page and f"| {prompt.text} |" in page, prompt.id
        assert prompt.source in page, prompt.id


def test_a_file_of_another_format_version_is_refused(tmp_path):
    path = write(tmp_path, {**german(), "schema_version": 2})
    assert refused(path) == f"{path}: schema_version must be 1"
