"""Output and logs without a terminal: plain lines, one-line --json, --log-format json, safe text.

Every command runs here as cron would run it (stdout and stderr are not terminals): no box
drawing anywhere, ``--json`` is one JSON document on one line, and with ``--log-format json``
every stderr line is a JSON object with a timestamp.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alliance_fhir.cli.main import app

from ..fake_fhir import BASE, FakeFhir
from ..support.cli_server import use_fake_server

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "examples" / "srs" / "complete.json")
PROMPTS = ROOT / "prompts" / "en.json"
BOX = re.compile("[\u2500-\u257f]")  # box drawing


@pytest.fixture
def server(monkeypatch, tmp_path) -> FakeFhir:  # noqa: ANN001
    fake = FakeFhir()
    use_fake_server(monkeypatch, tmp_path, fake)
    return fake


def commands(tmp: Path) -> list[list[str]]:
    """Every command, as an operator would run it (server commands against the fake server)."""
    scores = tmp / "scores.ndjson"
    return [
        ["instruments", "list"],
        ["instruments", "show", "srs"],
        ["instruments", "check"],
        ["instruments", "schema"],
        ["prompts", "show"],
        ["prompts", "check", str(PROMPTS)],
        ["questionnaires", "export", str(tmp / "q")],
        ["questionnaires", "template", "srs"],
        ["package", "build", str(tmp / "p")],
        ["score", EXAMPLE, "--format", "table"],
        ["score", EXAMPLE, "--format", "ndjson"],
        ["score", EXAMPLE],
        ["check", "--server", BASE],
        ["publish", "--server", BASE],
        ["publish", "--server", BASE, "--dry-run"],
        ["demo", "--server", BASE],
        ["sync", "--server", BASE],
        ["sync", "--server", BASE, "--dry-run"],
        ["signals", "--server", BASE],
        ["signals", "--server", BASE, "--tasks", "--dry-run"],
        ["report", "--server", BASE, "--patient", "Patient/afdemo-rupture", "--out", str(tmp / "r.png")],
        ["signals", str(scores)],
        ["report", str(scores), "--practitioner", "Practitioner/afdemo-t2", "--out", str(tmp / "c.svg")],
        ["failures", "--server", BASE],
    ]


def test_every_command_without_a_terminal_writes_plain_lines(server, tmp_path):
    runner.invoke(app, ["score", EXAMPLE, "--format", "ndjson"])
    (tmp_path / "scores.ndjson").write_text(runner.invoke(app, ["score", EXAMPLE, "--format", "ndjson"]).stdout)
    for args in commands(tmp_path):
        result = runner.invoke(app, args)
        assert result.exit_code in (0, 1), (args, result.output)
        assert not BOX.search(result.stdout + result.stderr), (args, result.stdout[:400])
        assert "Traceback" not in result.output, args


def test_tables_are_tab_separated_lines_without_a_terminal(server):
    result = runner.invoke(app, ["score", EXAMPLE, "--format", "table"])
    title, header, row = result.stdout.splitlines()
    assert title == "Scores" and header.split("\t") == [
        "response",
        "instrument",
        "total",
        "subscales",
        "flags",
        "rules",
    ]
    assert row.split("\t")[:3] == ["QuestionnaireResponse/example-srs-complete", "srs", "34.2"]


JSON_COMMANDS = [
    ["instruments", "list", "--json"],
    ["instruments", "show", "wai-sr", "--json"],
    ["check", "--server", BASE, "--json"],
    ["publish", "--server", BASE, "--json"],
    ["demo", "--server", BASE, "--json"],
    ["sync", "--server", BASE, "--json"],
    ["sync", "--server", BASE, "--dry-run", "--json"],
    ["signals", "--server", BASE, "--json"],
    ["failures", "--server", BASE, "--json"],
    ["signals", EXAMPLE, "--json"],
]


@pytest.mark.parametrize("args", JSON_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_json_is_one_document_on_one_line(server, args):
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1), result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout[:300]
    json.loads(lines[0])


def test_log_format_json_makes_every_stderr_line_a_timestamped_record(server, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"resourceType": "QuestionnaireResponse", "id": "x", "status": "done"}))
    for args in (
        ["--log-format", "json", "score", EXAMPLE, str(bad)],
        ["score", EXAMPLE, str(bad), "--log-format", "json"],
        ["sync", "--server", BASE, "-v", "--log-format=json"],
    ):
        result = runner.invoke(app, args)
        lines = result.stderr.splitlines()
        assert lines, args
        for line in lines:
            record = json.loads(line)
            assert (
                re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
                and record["level"]
                and record["message"]
            )
    records = [
        json.loads(line) for line in runner.invoke(app, ["--log-format", "json", "score", str(bad)]).stderr.splitlines()
    ]
    assert [(r["level"], r["kind"]) for r in records] == [("error", "error")]
    assert records[0]["message"].startswith("QuestionnaireResponse/x: status 'done'")


def test_verbose_text_log_lines_carry_a_timestamp(server):
    result = runner.invoke(app, ["check", "--server", BASE, "-v"])
    http = [line for line in result.stderr.splitlines() if "alliance_fhir.http" in line]
    assert http and all(
        re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO alliance_fhir\.http: GET ", line) for line in http
    )


def test_data_in_a_table_is_never_read_as_markup_or_control_characters(tmp_path):
    response = json.loads(Path(EXAMPLE).read_text())
    response["id"] = "a[/]b[bold]\x1b[31m"
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(response))
    result = runner.invoke(app, ["score", str(path), "--format", "table"])
    assert result.exit_code == 0, result.output
    assert "QuestionnaireResponse/a[/]b[bold]\\x1b[31m\tsrs\t34.2" in result.stdout and "\x1b" not in result.stdout


def test_a_forged_line_in_the_data_stays_on_its_own_line(tmp_path):
    response = json.loads(Path(EXAMPLE).read_text())
    response["item"][0]["linkId"] = "1\nerror: everything is fine"
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(response))
    result = runner.invoke(app, ["score", str(path)])
    assert result.exit_code == 1
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [result.stderr.strip()]
    assert "\\x0aerror: everything is fine" in result.stderr


def test_sync_dry_run_does_not_label_its_counts_written(server):
    runner.invoke(app, ["publish", "--server", BASE])
    runner.invoke(app, ["demo", "--server", BASE])
    runner.invoke(app, ["sync", "--server", BASE, "--reset"])
    result = runner.invoke(app, ["sync", "--server", BASE, "--dry-run"])
    title, header, _row = result.stdout.splitlines()
    assert "dry run: nothing written" in title
    assert header.split("\t")[2:5] == ["would write", "unchanged", "would retract"] and "written" not in header
