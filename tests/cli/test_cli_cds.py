"""`cds-token` and the demo's CDS lines: the printed hook call carries a token our verifier accepts."""

from __future__ import annotations

import shlex
import stat

from typer.testing import CliRunner

from alliance_fhir.cli import app
from alliance_fhir.cli.serve import cds_demo_lines
from alliance_fhir.server.state import StateStore
from alliance_fhir.service.cds_auth import CdsSettings, TokenVerifier, load_cds_settings

runner = CliRunner()
AUD = "http://127.0.0.1:8765/cds-services/alliance-patient-view"


def test_the_demo_writes_a_private_cds_client_and_a_working_curl_line(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    lines = cds_demo_lines("http://127.0.0.1:8080/fhir")
    folder = tmp_path / "alliance-fhir" / "cds-demo"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "demo-ehr-key.pem").stat().st_mode) == 0o600
    assert "serve --config" in lines[1] and "--no-subscribe" in lines[1]
    curl = lines[-1]
    assert curl.strip().startswith(f"curl -sS -X POST {AUD}") and '"patientId": "afdemo-rupture"' in curl
    # the token command inside $(...) works and its token passes our own verifier
    mint = curl.split("$(", 1)[1].split(")", 1)[0]
    args = shlex.split(mint)[shlex.split(mint).index("cds-token") :]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    settings: CdsSettings = load_cds_settings(folder / "alliance-fhir.toml")
    with StateStore(tmp_path / "s.db") as store:
        claims = TokenVerifier(settings, store).verify(f"Bearer {result.output.strip()}", AUD)
    assert claims["iss"] == "http://demo-ehr.localhost" and claims["exp"] - claims["iat"] == 60
    key = (folder / "demo-ehr-key.pem").read_bytes()
    assert cds_demo_lines("http://127.0.0.1:8080/fhir") and (folder / "demo-ehr-key.pem").read_bytes() == key  # kept


def test_cds_token_errors(tmp_path):
    missing = runner.invoke(
        app, ["cds-token", "--key", str(tmp_path / "none.pem"), "--kid", "k", "--issuer", "i", "--audience", AUD]
    )
    assert missing.exit_code == 2
    bad_alg = runner.invoke(
        app, ["cds-token", "--key", "k.pem", "--kid", "k", "--issuer", "i", "--audience", AUD, "--algorithm", "HS256"]
    )
    assert bad_alg.exit_code == 2
    assert runner.invoke(app, ["cds-token", "--help"]).exit_code == 0
