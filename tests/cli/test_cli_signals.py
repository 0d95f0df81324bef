"""`signals` and `report` from local files and from a (fake) server; sync --signals is idempotent."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from alliance_fhir import build_observation, score_response
from alliance_fhir.cli import _common as cli_common
from alliance_fhir.cli.main import app
from alliance_fhir.server.client import FhirClient
from alliance_fhir.server.demo import demo_resources

from ..fake_fhir import BASE, FakeFhir

runner = CliRunner()


@pytest.fixture
def demo_files(tmp_path: Path, catalog) -> Path:  # noqa: ANN001
    """The demo caseload scored offline: score Observations (with ids) and Encounters in one Bundle."""
    resources = []
    for resource in demo_resources(catalog):
        if resource["resourceType"] == "Encounter":
            resources.append(resource)
        elif resource["resourceType"] == "QuestionnaireResponse":
            obs = build_observation(score_response(resource, catalog), resource)
            resources.append(dict(obs, id=f"obs-{resource['id']}"))
    path = tmp_path / "demo.json"
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}))
    return path


def kinds(bundle: dict, subject: str) -> list[tuple[str, str]]:
    out = []
    for entry in bundle["entry"]:
        issue = entry["resource"]
        if issue["resourceType"] == "DetectedIssue" and issue["patient"]["reference"] == subject:
            status = next(e["valueCode"] for e in issue["extension"] if e["url"].endswith("alliance-signal-status"))
            out.append((issue["code"]["coding"][0]["code"], status))
    return sorted(out)


def test_offline_signals_for_the_demo_caseload(demo_files):
    result = runner.invoke(app, ["signals", str(demo_files)])
    assert result.exit_code == 0, result.output
    bundle = json.loads(result.stdout)
    # WAI-SR 48, 50, 41, 44, 51: the drop 50 -> 41 (9 >= 3) is a rupture, repaired by 51 >= 50
    assert ("alliance-rupture", "resolved") in kinds(bundle, "Patient/afdemo-rupture")
    # SRS 31.5, 33.0, 34.9, 36.8: below 36 in the first sessions
    early = kinds(bundle, "Patient/afdemo-early-low")
    assert any(k == "low-alliance" for k, _ in early) and any(k == "early-alliance-warning" for k, _ in early)
    # the steady client (SRS 37.2 ... 39.3, never below 36, never dropping by 1) has no signal
    assert kinds(bundle, "Patient/afdemo-steady") == []


def test_report_png_and_html(demo_files, tmp_path):
    png = tmp_path / "r.png"
    result = runner.invoke(app, ["report", str(demo_files), "--patient", "Patient/afdemo-rupture", "--out", str(png)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = tmp_path / "r.html"
    runner.invoke(app, ["report", str(demo_files), "--patient", "Patient/afdemo-rupture", "--out", str(html)])
    text = html.read_text()
    assert "data:image/png;base64," in text and "http://" not in text.split("<body", 1)[1].replace("http://alliance-fhir.org", "")


def test_report_practitioner_view(demo_files, tmp_path):
    html = tmp_path / "caseload.html"
    result = runner.invoke(app, ["report", str(demo_files), "--practitioner", "Practitioner/afdemo-t2", "--out", str(html)])
    assert result.exit_code == 0, result.output
    assert "afdemo-early-low" in html.read_text()


def test_report_needs_one_subject(demo_files):
    result = runner.invoke(app, ["report", str(demo_files)])
    assert result.exit_code == 2 and "exactly one of --patient or --practitioner" in result.stderr


def test_demo_writes_signals_and_reruns_write_nothing(monkeypatch, tmp_path):
    fake = FakeFhir()
    monkeypatch.setattr(cli_common, "client_factory", lambda cfg: FhirClient(cfg, transport=httpx.MockTransport(fake), sleep=lambda s: None))
    monkeypatch.setenv("ALLIANCE_FHIR_STATE_DB", str(tmp_path / "state.sqlite"))
    demo = runner.invoke(app, ["demo", "--server", BASE, "--json"])
    assert demo.exit_code == 0, demo.output
    issues = list(fake.store["DetectedIssue"].values())
    assert json.loads(demo.stdout)["signals"]["written"] == len(issues) > 0
    first = runner.invoke(app, ["sync", "--server", BASE, "--signals", "--tasks"])
    assert first.exit_code == 0, first.output
    assert f"written 0, unchanged {len(issues)}" in first.stderr
    assert len(fake.store["Task"]) >= 1
    second = runner.invoke(app, ["signals", "--server", BASE, "--tasks", "--json"])
    summary = json.loads(second.stdout)
    assert summary["written"] == 0 and summary["tasks_created"] == 0 and summary["unchanged"] == len(issues)
    assert len(fake.store["DetectedIssue"]) == len(issues)
