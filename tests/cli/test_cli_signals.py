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
from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.server.demo import demo_resources

from ..fake_fhir import BASE, FakeFhir

runner = CliRunner()


@pytest.fixture
def demo_files(tmp_path: Path, catalog) -> Path:  # noqa: ANN001
    """The demo caseload scored offline: score Observations (with ids), Encounters and the people in one Bundle."""
    resources = []
    for resource in demo_resources(catalog):
        if resource["resourceType"] in ("Encounter", "Patient", "Practitioner"):
            resources.append(resource)
        elif resource["resourceType"] == "QuestionnaireResponse":
            obs = build_observation(score_response(resource, catalog), resource)
            resources.append(dict(obs, id=f"obs-{resource['id']}"))
    path = tmp_path / "demo.json"
    path.write_text(
        json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]})
    )
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
    # charts drawn inline, the client by name (the Patient in the files), nothing loaded from elsewhere
    assert "<svg" in text and "data:image" not in text and "http" not in text
    assert "<h1>Alliance report: Robin Rupture</h1>" in text and "afdemo-rupture" not in text


def test_the_couples_report_shows_the_split_without_the_partner(demo_files, tmp_path):
    html = tmp_path / "couple.html"
    result = runner.invoke(app, ["report", str(demo_files), "--patient", "Patient/afdemo-couple-b", "--out", str(html)])
    assert result.exit_code == 0, result.output
    text = html.read_text()
    assert "Split alliance" in text and "Highest of the other members" in text
    assert "Kim Couple" in text and "Jo Couple" not in text and "afdemo-couple-a" not in text


def test_report_practitioner_view(demo_files, tmp_path):
    html = tmp_path / "caseload.html"
    result = runner.invoke(
        app, ["report", str(demo_files), "--practitioner", "Practitioner/afdemo-t2", "--out", str(html)]
    )
    assert result.exit_code == 0, result.output
    text = html.read_text()
    assert "<h1>Alliance caseload: Lee Therapist</h1>" in text and "Practitioner/" not in text
    assert "Sam Early" in text and "afdemo-early-low" not in text


def test_report_needs_one_subject(demo_files):
    result = runner.invoke(app, ["report", str(demo_files)])
    assert result.exit_code == 2 and "exactly one of --patient or --practitioner" in result.stderr


def test_demo_writes_signals_and_reruns_write_nothing(monkeypatch, tmp_path):
    fake = FakeFhir()
    monkeypatch.setattr(
        cli_common,
        "client_factory",
        lambda cfg: FhirClient(cfg, transport=httpx.MockTransport(fake), sleep=lambda s: None),
    )
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


@pytest.mark.parametrize(
    "suffix, magic",
    [(".html", b"<!DOCTYPE html>"), (".png", b"\x89PNG\r\n\x1a\n"), (".svg", b"<?xml"), (".pdf", b"%PDF-")],
)
@pytest.mark.parametrize(
    "view", [["--patient", "Patient/afdemo-rupture"], ["--practitioner", "Practitioner/afdemo-t2"]]
)
def test_report_writes_the_format_its_suffix_names_for_both_views(demo_files, tmp_path, view, suffix, magic):
    target = tmp_path / f"report{suffix.upper() if suffix == '.pdf' else suffix}"  # the suffix is read case-blind
    result = runner.invoke(app, ["report", str(demo_files), *view, "--out", str(target)])
    assert result.exit_code == 0, result.output
    data = target.read_bytes()
    assert data.startswith(magic)
    if suffix == ".svg":
        assert b"<svg" in data
    assert f"wrote {target} ({suffix[1:].upper()}," in result.stderr


@pytest.mark.parametrize("name", ["report.jpg", "report", "report.txt", "report.png.gz"])
def test_report_refuses_a_suffix_it_cannot_write_before_doing_any_work(demo_files, tmp_path, name):
    target = tmp_path / name
    result = runner.invoke(
        app, ["report", str(demo_files), "--patient", "Patient/afdemo-rupture", "--out", str(target)]
    )
    assert (
        result.exit_code == 2
        and "unknown report format" in result.stderr
        and ".html, .png, .svg or .pdf" in result.stderr
    )
    assert not target.exists()


def test_image_reports_are_the_same_bytes_for_the_same_data(demo_files, tmp_path):
    for suffix in (".svg", ".pdf", ".png"):
        paths = [tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"]
        for path in paths:
            runner.invoke(
                app, ["report", str(demo_files), "--practitioner", "Practitioner/afdemo-t2", "--out", str(path)]
            )
        assert paths[0].read_bytes() == paths[1].read_bytes(), suffix


def _fake_server(monkeypatch, tmp_path) -> FakeFhir:  # noqa: ANN001
    fake = FakeFhir()
    monkeypatch.setattr(
        cli_common,
        "client_factory",
        lambda cfg: FhirClient(cfg, transport=httpx.MockTransport(fake), sleep=lambda s: None),
    )
    monkeypatch.setenv("ALLIANCE_FHIR_STATE_DB", str(tmp_path / "state.sqlite"))
    return fake


def test_signals_json_lists_every_signal_on_one_line(monkeypatch, tmp_path):
    fake = _fake_server(monkeypatch, tmp_path)
    assert runner.invoke(app, ["demo", "--server", BASE, "--json"]).exit_code == 0
    result = runner.invoke(app, ["signals", "--server", BASE, "--json"])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1
    listing = json.loads(result.stdout)["signals"]
    issues = {i["identifier"][0]["value"]: i for i in fake.store["DetectedIssue"].values()}
    assert len(listing) == len(issues) > 0
    for signal in listing:
        assert set(signal) >= {
            "subject",
            "instrument",
            "kind",
            "status",
            "severity",
            "opened",
            "detail",
            "detected_issue",
        }
        issue = issues[signal["identifier"]]
        assert signal["detected_issue"] == f"DetectedIssue/{issue['id']}"
        assert (signal["subject"], signal["severity"]) == (issue["patient"]["reference"], issue["severity"])
    assert {"alliance-rupture", "low-alliance"} <= {s["kind"] for s in listing}


def test_tasks_follow_their_signal_withdrawn_cancels_resolved_notes(monkeypatch, tmp_path):
    fake = _fake_server(monkeypatch, tmp_path)
    assert runner.invoke(app, ["demo", "--server", BASE, "--json"]).exit_code == 0
    assert runner.invoke(app, ["signals", "--server", BASE, "--tasks"]).exit_code == 0
    # one Task per open situation, following the DetectedIssue of the signal that opened it (its focus)
    followed = {t["focus"]["identifier"]["value"]: t for t in fake.store["Task"].values()}
    active = [
        i
        for i in fake.store["DetectedIssue"].values()
        if i["status"] == "final" and i["identifier"][0]["value"] in followed
    ]
    assert active
    # withdraw the scores behind one active signal: its Observations become entered-in-error
    issue = active[0]
    evidence = {d["identifier"]["value"] for d in issue["evidence"][0]["detail"]}
    for obs in fake.store["Observation"].values():
        if obs["identifier"][0]["value"] in evidence:
            fake.put({**obs, "status": "entered-in-error"})
    result = runner.invoke(app, ["signals", "--server", BASE, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    key = issue["identifier"][0]["value"]
    assert key in {w["identifier"] for w in summary["withdrawn_issues"]}
    task = next(t for t in fake.store["Task"].values() if t["focus"]["identifier"]["value"] == key)
    assert task["status"] == "cancelled" and "withdrawn" in task["statusReason"]["text"]
    assert summary["tasks_cancelled"] >= 1
    again = json.loads(runner.invoke(app, ["signals", "--server", BASE, "--json"]).stdout)
    assert again["tasks_cancelled"] == 0 and again["tasks_noted"] == 0  # a second run changes nothing


def test_report_without_matplotlib_writes_html_and_says_which_extra_images_need(demo_files, monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ModuleNotFoundError
    monkeypatch.setitem(sys.modules, "matplotlib.axes", None)
    monkeypatch.delitem(sys.modules, "alliance_fhir.signals.report_images", raising=False)
    html = runner.invoke(
        app, ["report", str(demo_files), "--patient", "Patient/afdemo-rupture", "--out", str(tmp_path / "r.html")]
    )
    assert html.exit_code == 0, html.output  # the base install writes the HTML report (what the card links to)
    assert "<svg" in (tmp_path / "r.html").read_text()
    png = runner.invoke(
        app, ["report", str(demo_files), "--patient", "Patient/afdemo-rupture", "--out", str(tmp_path / "r.png")]
    )
    assert png.exit_code == 2
    assert (
        png.stderr.strip() == "error: reports need matplotlib, an optional extra: pip install 'alliance-fhir[report]'"
    )
    assert not (tmp_path / "r.png").exists()
