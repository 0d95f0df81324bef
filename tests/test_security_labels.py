"""Security labels: one definition, the same bytes from every writer, off means exactly today's output.

The labels are what lets a server with label-based access control keep alliance results from
the client (docs/hiding-results.md): a v3 Confidentiality code (R by our reading of HL7's
definitions), optionally v3 ActCode sensitivity codes.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from alliance_fhir._json import dumps
from alliance_fhir._security import NO_LABELS, SecurityLabels, carries_labels, with_labels
from alliance_fhir.errors import ConfigError
from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.scoring.batch import score_chunk
from alliance_fhir.scoring.engine import score_response
from alliance_fhir.scoring.observations import build_observation, observation_json
from alliance_fhir.server.labels import load_labels
from alliance_fhir.server.settings import ServerConfig, load_config
from alliance_fhir.server.state import StateStore
from alliance_fhir.server.sync import SyncOptions, run_sync
from alliance_fhir.signals.resources import detected_issue, signal_resources
from alliance_fhir.signals.rules import RUPTURE, detect_signals
from alliance_fhir.signals.situations import situation_history
from alliance_fhir.signals.trajectory import build_trajectories

from .conftest import all_items
from .fake_fhir import BASE, FakeFhir
from .trajectory_builders import series_obs

CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
RESTRICTED = SecurityLabels.parse("R")
R_PSY = SecurityLabels.parse("R", ["PSY"])


def test_restricted_is_one_v3_confidentiality_coding() -> None:
    assert RESTRICTED.codings() == [{"system": CONF, "code": "R", "display": "restricted"}]
    assert R_PSY.codings()[1] == {
        "system": ACT,
        "code": "PSY",
        "display": "psychiatry disorder information sensitivity",
    }
    assert R_PSY.fingerprint == "R+PSY" and NO_LABELS.fingerprint == "" and not NO_LABELS


@pytest.mark.parametrize(
    ("confidentiality", "sensitivity", "reason"),
    [
        ("restricted", [], "not a v3 Confidentiality code"),
        ("r", [], "not a v3 Confidentiality code"),  # HL7 codes are case-sensitive
        ("R", ["PSYTHPN"], "not one of the v3 ActCode sensitivity codes"),  # psychotherapy notes exclude test results
        (None, ["PSY"], "needs a confidentiality code"),
    ],
)
def test_codes_outside_the_systems_are_refused(confidentiality, sensitivity, reason) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=reason):
        SecurityLabels.parse(confidentiality, sensitivity)


def test_labels_off_leaves_the_observation_exactly_as_it_was(catalog, make_response) -> None:  # noqa: ANN001
    response = make_response("wai-sr", all_items(12, 4))
    result = score_response(response, catalog)
    plain = build_observation(result, response)
    assert "meta" not in plain
    assert build_observation(result, response, security=NO_LABELS) == plain
    assert observation_json(result, response) == dumps(plain)


@pytest.mark.parametrize("labels", [RESTRICTED, R_PSY])
def test_a_labelled_observation_is_the_same_resource_plus_meta_security(catalog, make_response, labels) -> None:  # noqa: ANN001
    response = make_response("srs", {1: 9.5, 2: 9, 3: 8.1, 4: 7})
    result = score_response(response, catalog)
    labelled = build_observation(result, response, security=labels)
    assert list(labelled)[:2] == ["resourceType", "meta"]
    assert labelled["meta"] == {"security": labels.codings()}
    assert {k: v for k, v in labelled.items() if k != "meta"} == build_observation(result, response)
    # the fast NDJSON path (score, backfill) writes the same bytes as the dict path (sync, bundle)
    assert observation_json(result, response, security=labels) == dumps(labelled)


def test_score_output_carries_the_labels_in_every_format(catalog, make_response) -> None:  # noqa: ANN001
    raw = json.dumps(make_response("wai-sr", all_items(12, 3))).encode()
    for fmt in ("ndjson", "bundle"):
        chunk = score_chunk([("qr.json", raw, False)], catalog, fmt, R_PSY)
        text = (chunk.ndjson or b"".join(chunk.entries)).decode()
        assert '"code":"R"' in text.replace(" ", "") and '"code":"PSY"' in text.replace(" ", ""), fmt


def test_detected_issues_and_tasks_carry_the_labels_the_device_does_not(catalog) -> None:  # noqa: ANN001
    trajectories = build_trajectories(series_obs("srs", [38, 36.5]), catalog)
    found = detect_signals(trajectories)
    signal = next(s for s in found if s.kind == RUPTURE)
    assert "meta" not in detected_issue(signal)
    history = situation_history([signal], trajectories)
    device, issue, task = signal_resources([signal], situations=history, tasks=True, security=RESTRICTED)
    assert "meta" not in device
    assert issue["meta"]["security"] == RESTRICTED.codings() == task["meta"]["security"]


def test_with_labels_keeps_what_is_there_and_adds_each_label_once() -> None:
    tagged = {"resourceType": "Observation", "status": "final", "meta": {"tag": [{"code": "x"}]}}
    once = with_labels(tagged, R_PSY)
    assert with_labels(once, R_PSY) == once
    assert once["meta"]["tag"] == [{"code": "x"}] and len(once["meta"]["security"]) == 2
    assert carries_labels(once, with_labels({"resourceType": "Observation"}, RESTRICTED))
    assert not carries_labels(tagged, once)


def test_labels_come_from_option_then_environment_then_config_file(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    config = tmp_path / "alliance-fhir.toml"
    config.write_text('[server]\nurl = "http://x"\n[labels]\nconfidentiality = "R"\nsensitivity = ["PSY"]\n')
    assert load_labels(config) == R_PSY
    assert load_config(file=config).url == "http://x"  # the [labels] table is not an unknown table to [server]
    monkeypatch.setenv("ALLIANCE_FHIR_CONFIDENTIALITY", "V")
    assert load_labels(config).confidentiality == "V"
    assert load_labels(config, confidentiality="R", sensitivity=["MH"]) == SecurityLabels("R", ("MH",))
    config.write_text('[labels]\nconfidentialty = "R"\n')
    with pytest.raises(ConfigError, match="unknown key in \\[labels\\]: confidentialty"):
        load_labels(config)


# ---------------------------------------------------------------- sync: turning labels on relabels once


def _sync(server: FakeFhir, catalog, store: StateStore, labels: SecurityLabels):  # noqa: ANN001, ANN202
    config = ServerConfig(url=BASE, page_size=5, batch_size=3)
    with FhirClient(config, transport=httpx.MockTransport(server), sleep=lambda _s: None) as client:
        return run_sync(client, catalog, store, SyncOptions(security=labels))


def test_turning_labels_on_rewrites_every_observation_once_then_nothing(
    tmp_path: Path,
    catalog,
    make_response,  # noqa: ANN001
) -> None:
    server = FakeFhir()
    for i in range(7):
        server.put(make_response("wai-sr", all_items(12, 1 + i % 5), rid=f"qr{i}"))
    with StateStore(tmp_path / "state.sqlite") as store:
        first = _sync(server, catalog, store, NO_LABELS)
        assert first.written == 7
        assert all("meta" not in o or "security" not in o["meta"] for o in server.store["Observation"].values())
        assert _sync(server, catalog, store, NO_LABELS).written == 0  # off: nothing remembered, nothing changes
        # the responses did not change and the checkpoint is past them: the relabel run still reads them all
        relabel = _sync(server, catalog, store, R_PSY)
        assert (relabel.written, relabel.unchanged, relabel.failed) == (7, 0, 0)
        assert all(carries_labels(o, with_labels(o, R_PSY)) for o in server.store["Observation"].values())
        assert all(
            o["meta"]["security"][0]["code"] == "R" for o in server.store["Observation"].values()
        )  # the server's copy
        again = _sync(server, catalog, store, R_PSY)
        assert (again.written, again.failed) == (0, 0)  # the ledger and the labels agree: a re-run writes nothing
        server.put(make_response("srs", {1: 9.5, 2: 9, 3: 8.1, 4: 7}, rid="qr-new"))
        new = _sync(server, catalog, store, R_PSY)
        assert new.written == 1
        assert server.store["Observation"][max(server.store["Observation"])]["meta"]["security"] == R_PSY.codings()


def test_dropping_a_label_warns_that_servers_keep_it(tmp_path: Path, catalog, make_response) -> None:  # noqa: ANN001
    server = FakeFhir()
    server.put(make_response("wai-sr", all_items(12, 2), rid="qr1"))
    with StateStore(tmp_path / "state.sqlite") as store:
        _sync(server, catalog, store, R_PSY)
        report = _sync(server, catalog, store, RESTRICTED)
    assert report.written == 1
    assert any("PSY" in w.reason and "$meta-delete" in w.reason for w in report.warnings)


# ---------------------------------------------------------------- the CLI: codes as options, errors as exit 2


def test_score_labels_its_output_and_refuses_an_unknown_code(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from alliance_fhir.cli.main import app

    example = str(Path(__file__).resolve().parents[1] / "examples" / "wai-sr" / "complete.json")
    runner = CliRunner()
    result = runner.invoke(
        app, ["score", example, "--format", "ndjson", "--confidentiality", "R", "--sensitivity", "PSY"]
    )
    assert result.exit_code == 0, result.output
    observation = json.loads(result.stdout.splitlines()[0])
    assert observation["meta"]["security"] == R_PSY.codings()
    (tmp_path / "empty.toml").write_text("")
    plain = runner.invoke(app, ["score", example, "--format", "ndjson", "--config", str(tmp_path / "empty.toml")])
    assert plain.exit_code == 0 and "meta" not in json.loads(plain.stdout.splitlines()[0])
    refused = runner.invoke(app, ["score", example, "--security-label", "secret"])
    assert refused.exit_code == 2 and "not a v3 Confidentiality code" in refused.output
