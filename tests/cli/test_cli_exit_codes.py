"""Exit codes, pinned per command (README: 0 ok; 1 some response or resource failed, or failures
outstanding; 2 configuration, connection, authentication or server errors)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from alliance_fhir.cli import _common as cli_common
from alliance_fhir.cli.main import app
from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.server.state import StateStore

from ..conftest import all_items
from ..fake_fhir import BASE, FakeFhir

runner = CliRunner()
COMMANDS = ["check", "publish", "sync"]


@pytest.fixture
def fake(monkeypatch, tmp_path) -> FakeFhir:
    server = FakeFhir()
    monkeypatch.setattr(
        cli_common,
        "client_factory",
        lambda cfg: FhirClient(cfg, transport=httpx.MockTransport(server), sleep=lambda s: None),
    )
    monkeypatch.setenv("ALLIANCE_FHIR_STATE_DB", str(tmp_path / "state.sqlite"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("ALLIANCE_FHIR_SERVER", raising=False)
    monkeypatch.chdir(tmp_path)
    return server


def run(*args: str):  # noqa: ANN201
    return runner.invoke(app, list(args))


def _refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused")


FAULTS = {
    "connection": _refuse,
    "authentication": lambda r: httpx.Response(
        401, json={"resourceType": "OperationOutcome", "issue": [{"severity": "error", "diagnostics": "who are you"}]}
    ),
    "server error": lambda r: httpx.Response(
        500, json={"resourceType": "OperationOutcome", "issue": [{"severity": "error", "diagnostics": "boom"}]}
    ),
    "not R4": lambda r: httpx.Response(200, json={"resourceType": "CapabilityStatement", "fhirVersion": "5.0.0"}),
}


@pytest.mark.parametrize("command", [*COMMANDS, "failures"])
@pytest.mark.parametrize(
    "url", ["ftp://fhir.example.org/fhir", "fhir.example.org", "https://u:pw@fhir.example.org/fhir"]
)
def test_configuration_errors_exit_2(fake, command, url):
    result = run(command, "--server", url)
    assert result.exit_code == 2, result.output
    assert "error:" in result.stderr and "pw@" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [*COMMANDS, "demo"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_server_side_errors_exit_2(fake, command, fault):
    fake.faults.append(FAULTS[fault])
    result = run(command, "--server", BASE)
    assert result.exit_code == 2, (fault, result.output)
    assert "error:" in result.stderr


def test_an_r5_server_is_refused_by_every_command_with_the_reason(fake):
    fake.faults.append(FAULTS["not R4"])
    for command in COMMANDS:
        assert "alliance-fhir needs FHIR R4 (4.0.x)" in run(command, "--server", BASE).stderr


@pytest.mark.parametrize("command", [*COMMANDS, "failures"])
def test_success_exits_0(fake, command):
    assert run(command, "--server", BASE).exit_code == 0


def test_a_failed_response_exits_1_and_keeps_doing_so_until_fixed(fake, make_response):
    bad = make_response("srs", {1: 9, 2: 9, 3: 9, 4: 9}, rid="bad")
    bad["item"][0]["answer"] = [{"valueDecimal": 11}]
    fake.put(bad)
    assert run("sync", "--server", BASE).exit_code == 1
    again = run("sync", "--server", BASE)
    assert again.exit_code == 1 and "outstanding failures: 1" in again.stderr
    listed = run("failures", "--server", BASE, "--json")
    assert listed.exit_code == 1
    [row] = json.loads(listed.stdout)["outstanding"]
    assert row["response"] == "QuestionnaireResponse/bad" and "item '1'" in row["reason"] and row["since"]
    bad["item"][0]["answer"] = [{"valueDecimal": 9}]
    fake.put(bad)
    assert run("sync", "--server", BASE).exit_code == 0
    assert run("failures", "--server", BASE).exit_code == 0


def test_a_refused_resource_makes_publish_exit_1(fake):
    fake.faults.append(
        lambda r: (
            httpx.Response(
                422,
                json={"resourceType": "OperationOutcome", "issue": [{"severity": "error", "diagnostics": "invalid"}]},
            )
            if r.method == "PUT" and "CodeSystem" in r.url.path
            else None
        )
    )
    result = run("publish", "--server", BASE, "--json")
    assert result.exit_code == 1
    assert [r["action"] for r in json.loads(result.stdout) if r["resource_type"] == "CodeSystem"] == ["failed"]


def test_publish_verifies_what_came_back(fake):
    fake.faults.append(
        lambda r: (
            httpx.Response(201, json={"resourceType": "OperationOutcome", "issue": []}) if r.method == "PUT" else None
        )
    )
    result = run("publish", "--server", BASE)
    assert result.exit_code == 2 and "the server answered with OperationOutcome" in result.stderr


def test_failures_dismiss_records_who_and_why(fake, make_response):
    bad = make_response("srs", {1: 9, 2: 9, 3: 9, 4: 9}, rid="bad")
    bad["item"][0]["answer"] = [{"valueDecimal": 11}]
    fake.put(bad)
    run("sync", "--server", BASE)
    assert (
        run("failures", "--server", BASE, "--dismiss", "QuestionnaireResponse/bad").exit_code == 2
    )  # a reason is required
    done = run(
        "failures",
        "--server",
        BASE,
        "--dismiss",
        "QuestionnaireResponse/bad",
        "--reason",
        "duplicate paper form",
        "--by",
        "ops.lee",
    )
    assert (
        done.exit_code == 0 and "dismissed: QuestionnaireResponse/bad by ops.lee: duplicate paper form" in done.stderr
    )
    assert run("sync", "--server", BASE).exit_code == 0
    assert run("failures", "--server", BASE, "--dismiss", "nothing-here", "--reason", "x").exit_code == 2


def test_sync_json_lists_outstanding_with_response_reason_since(fake, make_response):
    fake.put(make_response("wai-sr", all_items(12, 3), rid="ok"))
    fake.faults.append(
        lambda r: (
            httpx.Response(200, json={"resourceType": "OperationOutcome", "issue": []})
            if r.method == "POST" and r.url.path.rstrip("/") == "/fhir"
            else None
        )
    )
    result = run("sync", "--server", BASE, "--json")
    summary = json.loads(result.stdout)
    assert result.exit_code == 1 and summary["written"] == 0 and summary["outstanding_count"] == 1
    assert set(summary["outstanding"][0]) >= {"response", "reason", "since"}


@pytest.mark.parametrize("mode", ["transaction", "batch", "single", "search"])
def test_sync_write_mode_option(fake, make_response, mode):
    fake.put(make_response("wai-sr", all_items(12, 3), rid="w"))
    result = run("sync", "--server", BASE, "--write-mode", mode, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["write_mode"] == mode
    assert len(fake.store["Observation"]) == 1


def test_an_unknown_write_mode_is_a_configuration_error(fake):
    assert run("sync", "--server", BASE, "--write-mode", "yolo").exit_code == 2


def test_endless_paging_exits_2_with_one_line_naming_the_server_and_keeps_the_checkpoint(
    fake, make_response, monkeypatch
):
    """Issue 23, case 5: fresh next links without a total stop at max_pages."""
    fake.put(make_response("wai-sr", all_items(12, 3), rid="p"))
    assert run("sync", "--server", BASE).exit_code == 0
    checkpoint = _checkpoint()
    pages = iter(range(1, 10_000))

    def endless(request: httpx.Request) -> httpx.Response | None:
        if not request.url.path.endswith("/QuestionnaireResponse"):
            return None
        body = fake.serve(request).json()
        del body["total"]
        body["link"] = [{"relation": "next", "url": f"{BASE}/QuestionnaireResponse?page={next(pages)}"}]
        return httpx.Response(200, json=body)

    fake.faults.append(endless)
    monkeypatch.setenv("ALLIANCE_FHIR_MAX_PAGES", "5")
    result = run("sync", "--server", BASE, "--json")
    assert result.exit_code == 2 and next(pages) == 6
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: GET http://fhir.test/fhir/QuestionnaireResponse") and "max_pages (5)" in line
    assert checkpoint is not None and _checkpoint() == checkpoint


def _checkpoint() -> str | None:
    with StateStore(Path(os.environ["ALLIANCE_FHIR_STATE_DB"])) as store:
        return store.checkpoint(BASE)
