"""``alliance-fhir prompts``: check a clinic's prompt file, show a set, print the schema."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from alliance_fhir.cli.main import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "prompts" / "en.json"


def over_long(tmp_path: Path) -> Path:
    """The shipped set with the 'fallen' text one character over the limit (201)."""
    doc = json.loads(SHIPPED.read_text(encoding="utf-8"))
    doc["situations"][0]["text"] = "y" * 201
    assert doc["situations"][0]["id"] == "fallen"
    path = tmp_path / "de.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_check_of_a_good_file_says_ok_with_the_count_and_language():
    result = runner.invoke(app, ["prompts", "check", str(SHIPPED)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "ok: 11 prompts (en)\n"  # 7 situation facts + 4 parts


def test_check_of_a_bad_file_is_exit_2_and_one_error_line(tmp_path):
    path = over_long(tmp_path)
    result = runner.invoke(app, ["prompts", "check", str(path)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"error: {path}: prompt 'fallen': text is longer than 200 characters\n"


def test_check_of_a_missing_file_is_exit_2(tmp_path):
    result = runner.invoke(app, ["prompts", "check", str(tmp_path / "nl.json")])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {tmp_path / 'nl.json'}: cannot read the prompt file (")


def test_show_lists_every_prompt_with_whose_it_is_and_its_source():
    result = runner.invoke(app, ["prompts", "show"])
    assert result.exit_code == 0, result.output
    shipped = json.loads(SHIPPED.read_text(encoding="utf-8"))
    for prompt in shipped["situations"] + shipped["parts"]:
        assert f"  {prompt['id']}: {prompt['text']}\n" in result.stdout
        assert f"{prompt['whose']}" in result.stdout and prompt["source"] in result.stdout
    assert result.stdout.startswith("Discussion prompts (English) (en);")


def test_show_of_a_bad_file_is_exit_2(tmp_path):
    result = runner.invoke(app, ["prompts", "show", str(over_long(tmp_path))])
    assert result.exit_code == 2 and "text is longer than 200 characters" in result.stderr


def test_schema_prints_the_prompt_files_schema():
    result = runner.invoke(app, ["prompts", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "alliance-fhir discussion prompts"
    assert schema == json.loads((ROOT / "prompts" / "prompts.schema.json").read_text(encoding="utf-8"))


def test_signals_refuses_a_bad_prompt_file_before_any_work(tmp_path):
    """The scores file does not even exist: the prompt file is checked first, and nothing is read or written."""
    result = runner.invoke(app, ["signals", str(tmp_path / "scores.ndjson"), "--prompts", str(over_long(tmp_path))])
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path / 'de.json'}: prompt 'fallen': text is longer than 200 characters\n"


def test_show_json_is_a_prompt_file_to_start_a_translation_from(tmp_path):
    result = runner.invoke(app, ["prompts", "show", "--json"])
    assert result.exit_code == 0, result.output
    copy = tmp_path / "de.json"
    copy.write_text(result.stdout, encoding="utf-8")
    shipped = json.loads(SHIPPED.read_text(encoding="utf-8"))
    del shipped["$schema"]  # points beside the shipped file; a copy elsewhere would not find it
    assert json.loads(result.stdout) == shipped
    assert runner.invoke(app, ["prompts", "check", str(copy)]).stdout == "ok: 11 prompts (en)\n"
