"""``alliance-fhir backfill`` through CliRunner, with the fake Bulk Data server plugged in."""

from __future__ import annotations

import json

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
