"""The server commands (check, publish, sync, demo) through CliRunner, with the fake server plugged in."""

from __future__ import annotations

import json

import httpx
import pytest
from typer.testing import CliRunner

from alliance_fhir.cli import _common as cli_common
from alliance_fhir.cli.main import app
from alliance_fhir.fhirclient.client import FhirClient

from ..conftest import all_items
from ..fake_fhir import BASE, CAPABILITIES, FakeFhir
from ..support.cli_server import use_fake_server

runner = CliRunner()


@pytest.fixture
def server(monkeypatch, tmp_path) -> FakeFhir:
    fake = FakeFhir()
    use_fake_server(monkeypatch, tmp_path, fake)
    return fake


def run(*args: str):  # noqa: ANN201
    return runner.invoke(app, list(args))


@pytest.mark.parametrize("command", ["check", "publish", "sync", "demo"])
def test_help(command):
    result = run(command, "--help")
    assert result.exit_code == 0 and "--server" in result.output


def test_no_server_is_exit_2(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ALLIANCE_FHIR_SERVER", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    result = run("sync")
    assert result.exit_code == 2 and "no FHIR server" in result.stderr


def test_secrets_are_not_options():
    assert "--token" not in run("sync", "--help").output and "--password" not in run("sync", "--help").output


def test_check_reports_capabilities(server):
    result = run("check", "--server", BASE, "--json")
    assert result.exit_code == 0, result.output
    checks = {c["check"]: c["ok"] for c in json.loads(result.stdout)["checks"]}
    assert checks == {
        "FHIR version": True,
        "transactions": True,
        "search responses": True,
        "conditional update": True,
        "conditional create": True,
        "write mode": True,
        "credentials": True,
        "read mode": True,
    }
    mode = next(c["detail"] for c in json.loads(result.stdout)["checks"] if c["check"] == "write mode")
    assert mode == "transaction: the server offers transactions and conditional update on Observation"


def test_check_says_a_server_without_transactions_gets_batches(server, monkeypatch):
    monkeypatch.setitem(CAPABILITIES["rest"][0], "interaction", [{"code": "batch"}])  # type: ignore[index]
    result = run("check", "--server", BASE, "--json")
    assert result.exit_code == 0
    checks = {c["check"]: (c["ok"], c["detail"]) for c in json.loads(result.stdout)["checks"]}
    assert checks["transactions"][0] is False
    assert (
        checks["write mode"][1]
        == "batch: the server offers batches (no transactions) and conditional update on Observation"
    )


def test_check_flags_a_server_without_search(server, monkeypatch):
    monkeypatch.setitem(CAPABILITIES["rest"][0], "resource", [{"type": "Observation", "conditionalUpdate": True}])  # type: ignore[index]
    result = run("check", "--server", BASE)
    assert result.exit_code == 1 and "MISSING" in result.stdout


def test_check_unreachable_server_is_exit_2(monkeypatch):
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    monkeypatch.setattr(
        cli_common,
        "client_factory",
        lambda cfg: FhirClient(cfg, transport=httpx.MockTransport(refuse), sleep=lambda s: None),
    )
    result = run("check", "--server", BASE)
    assert result.exit_code == 2 and "ConnectError" in result.stderr


def test_publish_twice_changes_nothing_the_second_time(server):
    first = run("publish", "--server", BASE, "--json")
    assert first.exit_code == 0, first.output
    assert {r["action"] for r in json.loads(first.stdout)} == {"created"}
    second = run("publish", "--server", BASE, "--json")
    assert {r["action"] for r in json.loads(second.stdout)} == {"unchanged"}
    assert len(server.store["Questionnaire"]) == 7 and len(server.store["CodeSystem"]) == 1


def test_publish_dry_run_writes_nothing(server):
    result = run("publish", "--server", BASE, "--dry-run")
    assert result.exit_code == 0 and "created" in result.stdout
    assert server.store["Questionnaire"] == {}


def test_sync_json_summary_and_exit_codes(server, make_response):
    server.put(make_response("srs", {1: 9, 2: 9, 3: 9, 4: 9}, rid="good"))
    bad = make_response("srs", {1: 9, 2: 9, 3: 9, 4: 9}, rid="bad")
    bad["item"][0]["answer"] = [{"valueDecimal": 11}]
    server.put(bad)
    result = run("sync", "--server", BASE, "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["found"], summary["written"], summary["failed"]) == (2, 1, 1)
    assert "failed: QuestionnaireResponse/bad: " in result.stderr and "item '1'" in result.stderr
    again = run("sync", "--server", BASE, "--json")  # the failure is still outstanding: still exit 1
    summary = json.loads(again.stdout)
    assert again.exit_code == 1 and summary["written"] == 0 and summary["failed"] == 0
    assert summary["outstanding_count"] == 1 and summary["outstanding"][0]["response"] == "QuestionnaireResponse/bad"


def test_sync_reset(server, make_response):
    server.put(make_response("wai-sr", all_items(12, 4), rid="w"))
    assert run("sync", "--server", BASE).exit_code == 0
    result = run("sync", "--server", BASE, "--reset")
    assert result.exit_code == 0 and "forgot the checkpoint" in result.stderr
    assert json.loads(run("sync", "--server", BASE, "--json").stdout)["unchanged"] == 0


def test_sync_unknown_instrument_is_exit_2(server):
    result = run("sync", "--server", BASE, "--instrument", "calpas-p")
    assert result.exit_code == 2 and "unknown instrument" in result.stderr


def test_demo_round_trip_and_cleanup(server):
    result = run("demo", "--server", BASE, "--json")
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)
    assert runs["first"]["written"] == 42 and runs["second"]["written"] == 0
    assert len(server.store["Observation"]) == 42


def test_publish_retries_a_conflicting_concurrent_write_once(server):
    from ..fake_fhir import fail_times

    server.faults.append(fail_times(1, 409, when=lambda r: r.method == "PUT"))
    result = run("publish", "--server", BASE, "--json")
    assert result.exit_code == 0, result.output
    assert {r["action"] for r in json.loads(result.stdout)} == {"created"}


# ---------------------------------------------------------------- read modes (docs/sync.md#read-modes)


def test_sync_patients_reads_each_patient_of_a_file_and_names_a_bad_line(server, make_response, tmp_path):
    server.put(make_response("srs", {1: 9.5, 2: 9, 3: 8.1, 4: 7}, rid="qr-a", subject={"reference": "Patient/a"}))
    listed = tmp_path / "caseload.txt"
    listed.write_text("# caseload\nPatient/a\nPractitioner/t\n")
    result = run("sync", "--server", BASE, "--patients", str(listed), "--json")
    assert result.exit_code == 1  # the bad line fails the run; the good patient is read
    report = json.loads(result.stdout)
    assert (report["patients"], report["patients_read"], report["written"]) == (1, 1, 1)
    assert report["failures"] == [
        {
            "resource": "caseload.txt line 3",
            "reason": "a Practitioner reference, not a Patient (only patients are read)",
        }
    ]
    total = next(o for o in server.store["Observation"].values() if o["code"]["coding"][0]["code"].endswith("total"))
    assert total["valueQuantity"]["value"] == 33.6  # 9.5 + 9 + 8.1 + 7


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--patients", "Group/1", "--via-export", "Group/1"), "exclude each other"),
        (("--patients", "Group/1", "--patient", "Patient/a"), "--patient reads one patient"),
        (("--via-export", "Group/1", "--dry-run"), "--dry-run does not go with --via-export"),
        (("--via-export", "List/1"), "--via-export needs Group/ID"),
    ],
)
def test_read_mode_options_that_do_not_go_together_are_one_line_and_exit_2(server, args, said):
    result = run("sync", "--server", BASE, *args)
    assert result.exit_code == 2 and said in result.stderr
    assert not [r for r in server.requests if r.url.path.endswith("/QuestionnaireResponse")]
