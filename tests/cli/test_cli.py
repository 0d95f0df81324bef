"""The CLI, through typer's CliRunner: happy paths, error exits, and --help for every command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alliance_fhir.cli.main import app

from ..shipped import shipped_ids

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FORM_MAP_EXAMPLES = ROOT / "form-maps" / "examples"  # never loaded by default
USER = Path(__file__).resolve().parents[1] / "fixtures" / "user-instrument"
PACKS = Path(__file__).resolve().parents[1] / "fixtures" / "text-packs"


def run(*args: str, input: str | None = None):  # noqa: A002, ANN201
    return runner.invoke(app, list(args), input=input)


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["instruments"],
        ["instruments", "list"],
        ["instruments", "show"],
        ["instruments", "check"],
        ["instruments", "schema"],
        ["prompts"],
        ["prompts", "check"],
        ["prompts", "show"],
        ["prompts", "schema"],
        ["questionnaires"],
        ["questionnaires", "export"],
        ["questionnaires", "template"],
        ["score"],
    ],
)
def test_help(command):
    result = run(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_python_dash_m_runs_the_cli():
    proc = subprocess.run(
        [sys.executable, "-m", "alliance_fhir", "--version"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0 and proc.stdout.startswith("alliance-fhir ")


def test_instruments_list_json():
    result = run("instruments", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in json.loads(result.stdout)}
    assert set(rows) == set(shipped_ids())
    assert rows["wai-sr"]["scales"] == ["total", "task", "bond", "goal"] and rows["wai-sr"]["range"] == "12-60"
    assert rows["srs"]["cutoffs"] == ["< 36"]


def test_instruments_list_table():
    result = run("instruments", "list")
    assert result.exit_code == 0, result.output
    assert "WAI-SR" in result.stdout and "haq-ii" in result.stdout


def test_instruments_list_with_user_folder():
    result = run("--instruments", str(USER), "instruments", "list", "--json")
    assert result.exit_code == 0, result.output
    assert "test-alliance" in {r["id"] for r in json.loads(result.stdout)}
    result = run("instruments", "list", "--json", "--instruments", str(USER))
    assert "test-alliance" in {r["id"] for r in json.loads(result.stdout)}


def test_instruments_show_says_labels_are_unconfirmed():
    result = run("instruments", "show", "haq-ii")
    assert result.exit_code == 0, result.output
    assert "labels-unconfirmed" in result.stdout
    assert "4, 8, 11, 16, 19" in result.stdout and "project decision" in result.stdout


def test_instruments_show_srs_names_the_cutoff_rule():
    result = run("instruments", "show", "srs")
    assert "score < 36" in result.stdout and "[C2]" in result.stdout and "boundary" in result.stdout


def test_instruments_show_json_is_the_mapping():
    result = run("instruments", "show", "wai-sr", "--json")
    assert json.loads(result.stdout)["questionnaire"].endswith("/wai-sr|1.0.0")


def test_instruments_show_unknown():
    result = run("instruments", "show", "calpas-p")
    assert result.exit_code == 2
    assert "unknown instrument 'calpas-p'" in result.stderr


def test_instruments_check_shipped():
    result = run("instruments", "check")
    assert result.exit_code == 0, result.output
    assert "7 instrument(s) and 0 form map(s) ok, 0 problem(s)" in result.stdout  # no example is ever active
    assert "form map" not in result.stdout.replace("0 form map(s)", "") and "warning" not in result.stderr


def test_instruments_check_lists_the_example_maps_when_their_folder_is_named():
    result = run("--instruments", str(FORM_MAP_EXAMPLES), "instruments", "check")
    assert result.exit_code == 0, result.output  # a warning, not a problem: the examples are well-formed
    assert "7 instrument(s) and 2 form map(s) ok, 0 problem(s)" in result.stdout
    for name, instrument in (("epic-like-srs", "srs"), ("openemr-like-wai-sr", "wai-sr")):
        assert (
            f"ok  form map {name} -> http://alliance-fhir.org/fhir/Questionnaire/{instrument}|1.0.0 "
            "(example: invented ids)" in result.stdout
        )
        assert (
            f"warning: {FORM_MAP_EXAMPLES / name}.json: example map: its ids are invented; "
            "use a copy with your EHR's ids" in result.stderr
        )


def test_instruments_check_user_folder():
    result = run("instruments", "check", str(USER))
    assert result.exit_code == 0, result.output
    assert "ok  test-alliance" in result.stdout and "1 instrument(s) and 0 form map(s) ok" in result.stdout


def test_instruments_check_explains_problems(tmp_path):
    folder = tmp_path / "mine"
    (folder / "mappings").mkdir(parents=True)
    (folder / "questionnaires").mkdir()
    q = json.loads((USER / "questionnaires" / "test-alliance.json").read_text())
    (folder / "questionnaires" / "q.json").write_text(json.dumps(q))
    m = json.loads((USER / "mappings" / "test-alliance.json").read_text())
    m["scales"][0]["items"][0] = "a9"
    (folder / "mappings" / "m.json").write_text(json.dumps(m))
    result = run("instruments", "check", str(folder))
    assert result.exit_code == 1
    assert "scored item 'a9' does not exist in the Questionnaire" in result.stderr


def test_instruments_check_empty_folder(tmp_path):
    result = run("instruments", "check", str(tmp_path))
    assert result.exit_code == 1 and "no Questionnaire + mapping pair or form map found" in result.stderr


def test_instruments_schema():
    result = run("instruments", "schema")
    assert json.loads(result.stdout)["title"] == "alliance-fhir instrument mapping"


def test_questionnaires_export(tmp_path):
    result = run("questionnaires", "export", str(tmp_path), "--bundle")
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted(
        [f"Questionnaire-{i}.json" for i in shipped_ids()] + ["CodeSystem-alliance-fhir.json", "bundle.json"]
    )


def test_questionnaires_export_with_text_packs(tmp_path):
    result = run(
        "questionnaires",
        "export",
        str(tmp_path),
        "--text-pack",
        str(PACKS / "srs-en.json"),
        "--text-pack",
        str(PACKS / "srs-de.json"),
    )
    assert result.exit_code == 0, result.output
    srs = json.loads((tmp_path / "Questionnaire-srs.json").read_text())
    assert srs["item"][0]["text"] == "[licensed wording of SRS line 1]"
    assert srs["item"][0]["_text"]["extension"][0]["extension"][0]["valueCode"] == "de"


def test_questionnaires_export_bad_pack(tmp_path):
    bad = tmp_path / "bad.json"
    data = json.loads((PACKS / "srs-en.json").read_text())
    data["texts"]["9"] = "x"
    bad.write_text(json.dumps(data))
    result = run("questionnaires", "export", str(tmp_path / "out"), "--text-pack", str(bad))
    assert result.exit_code == 1 and "names linkIds that do not exist: 9" in result.stderr


def test_questionnaires_template():
    result = run("questionnaires", "template", "wai-sr", "--language", "de")
    pack = json.loads(result.stdout)
    assert pack["language"] == "de" and len(pack["texts"]) == 16 and pack["instrument"].endswith("|1.0.0")


def test_score_bundle_is_the_default_when_piped():
    result = run("score", str(EXAMPLES / "wai-sr" / "complete.json"))
    assert result.exit_code == 0, result.output
    bundle = json.loads(result.stdout)
    assert bundle["type"] == "collection" and bundle["entry"][0]["resource"]["valueQuantity"]["value"] == 46


def test_score_ndjson_folder_and_errors():
    result = run("score", str(EXAMPLES), "--format", "ndjson")
    assert result.exit_code == 1  # the incomplete VAS examples cannot be scored
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 7 * 2 + 2  # complete + amended for all, incomplete for WAI-SR and HAq-II
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    incomplete = [e for e in errors if "incomplete" in e and "status 'in-progress' is not scorable" in e]
    assert len(incomplete) == 5
    assert errors == incomplete


def test_score_table():
    result = run("score", str(EXAMPLES / "srs" / "complete.json"), "--format", "table")
    assert result.exit_code == 0, result.output
    assert "34.2" in result.stdout and "alliance-concern" in result.stdout


def test_score_stdin_ndjson_with_a_malformed_line():
    good = (EXAMPLES / "srs" / "complete.json").read_text().replace("\n", " ")
    result = run("score", "-", "--format", "ndjson", input=good + "\n{oops\n" + good + "\n")
    assert result.exit_code == 1
    assert len(result.stdout.splitlines()) == 2
    assert "error: <stdin>:2: malformed JSON" in result.stderr


def test_score_missing_file():
    result = run("score", "nope.json")
    assert result.exit_code == 1 and "nope.json: no such file or directory" in result.stderr


def test_score_bundle_input_and_wrong_resource(tmp_path):
    response = json.loads((EXAMPLES / "ors" / "complete.json").read_text())
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": response}, {"resource": {"resourceType": "Patient", "id": "p"}}],
    }
    path = tmp_path / "in.json"
    path.write_text(json.dumps(bundle))
    result = run("score", str(path))
    assert result.exit_code == 1
    assert json.loads(result.stdout)["entry"][0]["resource"]["interpretation"][0]["coding"][0]["code"] == "L"
    assert "Patient/p: not a QuestionnaireResponse" in result.stderr and "#entry[1]" in result.stderr


def test_score_warnings_go_to_stderr():
    result = run("score", str(EXAMPLES / "wai-sr" / "incomplete.json"))
    assert result.exit_code == 0
    assert "warning: QuestionnaireResponse/example-wai-sr-incomplete: task not reported" in result.stderr


def test_score_never_prints_a_traceback(tmp_path):
    path = tmp_path / "weird.json"
    path.write_text(json.dumps({"resourceType": "QuestionnaireResponse", "status": "completed", "questionnaire": 5}))
    result = run("score", str(path))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "no questionnaire canonical" in result.stderr
