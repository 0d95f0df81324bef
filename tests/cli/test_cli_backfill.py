"""``alliance-fhir backfill`` through CliRunner, with the fake Bulk Data server plugged in."""

from __future__ import annotations

import json
import shlex

import pytest
from typer.testing import CliRunner

from alliance_fhir.cli.main import app

from ..conftest import all_items
from ..fake_bulk import STAMP, FakeBulk
from ..fake_fhir import BASE, FakeFhir
from ..support.cli_server import use_fake_server

runner = CliRunner()


@pytest.fixture
def bulk(monkeypatch, tmp_path, make_response) -> FakeBulk:
    fake = FakeBulk(FakeFhir())
    fake.files = [[make_response("wai-sr", all_items(12, 3), rid=f"qr{i}") for i in range(4)]]
    use_fake_server(monkeypatch, tmp_path, fake)
    return fake


def run(*args: str):  # noqa: ANN201
    return runner.invoke(app, ["backfill", "--server", BASE, *args])


def test_help_names_the_options():
    result = runner.invoke(app, ["backfill", "--help"])
    assert result.exit_code == 0
    for option in ("--since", "--instrument", "--group", "--patient", "--via", "--state", "--json", "--cancel"):
        assert option in result.output


def test_backfill_json_then_nothing_to_write(bulk):
    result = run("--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["responses"]["written"] == 4 and report["complete"] and report["checkpoint"] == STAMP
    assert report["status_url"] == "/fhir/$export-poll-status?_jobId="  # never the job id's value
    again = json.loads(run("--json", "--since", "2000-01-01").stdout)
    assert again["responses"]["written"] == 0 and again["responses"]["unchanged"] == 4


def test_a_failed_file_is_one_line_and_exit_1(bulk):
    bulk.file_url = lambda i: "https://elsewhere.example/Binary/f0"
    result = run()
    assert result.exit_code == 1
    assert "another origin" in result.stderr and "job is kept" in result.stderr


def test_an_endless_export_is_exit_2_then_cancel_deletes_it(bulk):
    bulk.polls = 10**6
    result = run("--max-wait", "2", "--poll-interval", "1")
    assert result.exit_code == 2 and "did not complete within 2 s" in result.stderr
    cancelled = run("--cancel", "--json")
    assert cancelled.exit_code == 0 and json.loads(cancelled.stdout)["cancelled"].startswith("/fhir/$export-poll")
    assert len(bulk.deleted) == 1
    assert "nothing to cancel" in run("--cancel").stderr


def test_bad_via_is_exit_2(bulk):
    result = run("--via", "carrier-pigeon")
    assert result.exit_code == 2 and "--via must be one of" in result.stderr


# ---------------------------------------------------------------- issue 23: hints, unreadable lines, errors


def test_the_failures_hint_keeps_the_state_and_following_it_lists_the_unreadable_line(bulk, tmp_path):
    responses = bulk.files[0]
    assert isinstance(responses, list)
    bulk.files[0] = b"{broken\n" + b"".join(json.dumps(r).encode() + b"\n" for r in responses)
    state = str(tmp_path / "elsewhere" / "my state.sqlite")
    result = run("--state", state)
    assert result.exit_code == 1
    hint = next(line for line in result.stderr.splitlines() if "outstanding failures: 1" in line)
    command = shlex.split(hint.split("(", 1)[1].rsplit(" lists them)", 1)[0])
    assert command[:2] == ["alliance-fhir", "failures"] and command[command.index("--state") + 1] == state
    listed = runner.invoke(app, [*command[1:], "--json"])
    assert listed.exit_code == 1 and json.loads(listed.stdout)["outstanding"][0]["response"] == "/fhir/Binary/f0 line 1"
    again = run("--state", state, "--since", "2000-01-01")  # every later run lists it and fails
    assert again.exit_code == 1 and "outstanding failures: 1" in again.stderr
    dismissed = runner.invoke(app, [*command[1:], "--dismiss", "/fhir/Binary/f0 line 1", "--reason", "garbage line"])
    assert dismissed.exit_code == 0, dismissed.output
    bulk.files[0] = responses  # the next export reads clean
    assert run("--state", state, "--since", "2000-01-01").exit_code == 0


def test_a_download_cut_short_is_one_error_line_and_exit_2(bulk):
    import httpx

    from ..server.test_backfill_hostile import CutShort

    bulk.faults.append(lambda r: httpx.Response(200, stream=CutShort(b"{")) if "/Binary/" in r.url.path else None)
    result = run()
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "/fhir/Binary/f0" in errors[0] and "broke off" in errors[0]


def test_a_manifest_over_max_files_is_exit_2(bulk):
    bulk.files = bulk.files * 3
    result = run("--max-files", "2")
    assert result.exit_code == 2 and "lists 3 files, more than the limit of 2 (--max-files)" in result.stderr
    assert bulk.downloads == []


def test_syncs_failures_hint_keeps_the_state_and_the_config_too(bulk, tmp_path, make_response):
    bulk.fhir.put(make_response("wai-sr", {}, rid="empty"))  # nothing answered: it cannot be scored
    state = str(tmp_path / "other.sqlite")
    config = tmp_path / "site config.toml"
    config.write_text("[server]\ntimeout = 30\n")
    result = runner.invoke(app, ["sync", "--server", BASE, "--state", state, "--config", str(config)])
    assert result.exit_code == 1, result.output
    hint = next(line for line in result.stderr.splitlines() if "outstanding failures: 1" in line)
    command = shlex.split(hint.split("(", 1)[1].rsplit(" lists them)", 1)[0])
    assert command[command.index("--state") + 1] == state and command[command.index("--config") + 1] == str(config)
    listed = runner.invoke(app, [*command[1:], "--json"])
    assert json.loads(listed.stdout)["outstanding"][0]["response"] == "QuestionnaireResponse/empty"
