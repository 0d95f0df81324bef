"""Configuration errors name their real source; unknown tables and keys are errors; --since is
checked; secrets at rest are private (warnings for readable files, the state database 0600); a
bad SMART key is one configuration error."""

from __future__ import annotations

import logging
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from typer.testing import CliRunner

from alliance_fhir.cli import _common as cli_common
from alliance_fhir.cli.main import app
from alliance_fhir.errors import ConfigError
from alliance_fhir.fhirclient.auth import build_auth
from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.fhirclient.config import AuthSettings
from alliance_fhir.server.settings import load_config
from alliance_fhir.server.since import since_value
from alliance_fhir.server.state import StateStore

from ..fake_fhir import BASE, FakeFhir

runner = CliRunner()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):  # noqa: ANN001
    for name in list(os.environ):
        if name.startswith("ALLIANCE_FHIR_") and name != "ALLIANCE_FHIR_TEST_HAPI_PORT":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write_config(text: str, mode: int = 0o600) -> Path:
    path = Path("alliance-fhir.toml")
    path.write_text(text)
    path.chmod(mode)
    return path


def refused(**kwargs) -> str:  # noqa: ANN003
    with pytest.raises(ConfigError) as info:
        load_config(**kwargs)
    return str(info.value)


def test_an_invalid_value_is_blamed_on_where_it_came_from(monkeypatch):
    write_config('[server]\nurl = "http://x/fhir"\ntimeout = 30\n')
    monkeypatch.setenv("ALLIANCE_FHIR_CONCURRENCY", "0")
    message = refused()
    assert "concurrency" in message and "(from environment ALLIANCE_FHIR_CONCURRENCY)" in message
    assert "alliance-fhir.toml" not in message
    monkeypatch.delenv("ALLIANCE_FHIR_CONCURRENCY")
    assert "(from option --batch-size)" in refused(batch_size=0)
    write_config('[server]\nurl = "http://x/fhir"\ntimeout = -1\n')
    assert "timeout" in refused() and "(from alliance-fhir.toml [server] timeout)" in refused()


def test_a_misspelt_table_or_an_unknown_key_is_an_error_not_ignored():
    write_config('[server]\nurl = "http://x/fhir"\n[auht]\nkind = "bearer"\n')
    assert "unknown table [auht]" in refused()
    write_config('[server]\nurl = "http://x/fhir"\ntimeuot = 5\n')
    assert "timeuot: unknown setting (from alliance-fhir.toml [server] timeuot)" in refused()
    write_config('url = "http://x/fhir"\n')
    assert "unknown key 'url'" in refused()


def test_since_takes_iso_dates_datetimes_and_durations_and_refuses_the_rest():
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert since_value("7d", now) == "2026-11-24T12:00:00Z"
    assert since_value("12h", now) == "2026-12-01T00:00:00Z"
    assert since_value("2026-11-01") == "2026-11-01"
    assert since_value("2026-11-01T09:00:00+01:00") == "2026-11-01T09:00:00+01:00"
    assert since_value("2026-11-01T09:00:00") == "2026-11-01T09:00:00Z"
    for bad in ("yesterday", "2026-13-01", "7 days ago", "", "2026-11-01T25:00"):
        with pytest.raises(ConfigError, match="not an ISO date"):
            since_value(bad, now)


def test_sync_since_yesterday_is_refused_before_any_request(monkeypatch, tmp_path):
    fake = FakeFhir()
    monkeypatch.setattr(
        cli_common,
        "client_factory",
        lambda cfg: FhirClient(cfg, transport=httpx.MockTransport(fake), sleep=lambda s: None),
    )
    result = runner.invoke(
        app, ["sync", "--server", BASE, "--since", "yesterday", "--state", str(tmp_path / "s.sqlite")]
    )
    assert result.exit_code == 2 and "--since 'yesterday': not an ISO date" in result.stderr
    assert fake.requests == []


def test_a_readable_config_file_holding_a_secret_is_warned_about(caplog):
    write_config('[server]\nurl = "http://x/fhir"\n[auth]\nkind = "bearer"\ntoken = "s3cret"\n', mode=0o644)
    with caplog.at_level(logging.WARNING, logger="alliance_fhir"):
        load_config()
    [warning] = [r.getMessage() for r in caplog.records]
    assert (
        "holds secrets ([auth] token) but is readable by others (mode 644): run chmod 600" in warning
        and "s3cret" not in warning
    )
    caplog.clear()
    Path("alliance-fhir.toml").chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="alliance_fhir"):
        load_config()
    assert caplog.records == []


def test_the_state_database_is_created_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "new" / "state.sqlite"
    with StateStore(path) as store:
        store.set_checkpoint("http://x", "2026-11-01T00:00:00Z")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def _pem(key, public: bool = False) -> str:  # noqa: ANN001
    if public:
        return (
            key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC = ec.generate_private_key(ec.SECP384R1())
BAD_KEYS = [
    ("not a pem", "RS384", "is not a readable PEM private key"),
    (_pem(EC), "RS384", "is not an RSA key, which algorithm RS384 needs"),
    (_pem(RSA), "ES384", "is not an EC P-384 key"),
    (_pem(RSA, public=True), "RS384", "is a public key"),
]


@pytest.mark.parametrize(
    "pem, algorithm, reason", BAD_KEYS, ids=["bad-pem", "ec-with-rs384", "rsa-with-es384", "public-key"]
)
def test_every_bad_smart_key_is_one_configuration_error(pem, algorithm, reason, tmp_path, monkeypatch):
    settings = AuthSettings(
        kind="smart", client_id="c", private_key=pem, algorithm=algorithm, token_url="https://x/token"
    )
    with pytest.raises(ConfigError, match=reason) as info:
        build_auth(settings, "https://x/fhir", httpx.Client())
    assert "BEGIN" not in str(info.value)
    key_file = tmp_path / "key.pem"
    key_file.write_text(pem)
    key_file.chmod(0o600)
    for name, value in {
        "SERVER": "https://x/fhir",
        "AUTH": "smart",
        "CLIENT_ID": "c",
        "PRIVATE_KEY_FILE": str(key_file),
        "ALGORITHM": algorithm,
        "TOKEN_URL": "https://x/token",
    }.items():
        monkeypatch.setenv(f"ALLIANCE_FHIR_{name}", value)
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.splitlines() == [
        f"error: the SMART private key file {key_file} {reason}" + result.stderr.split(reason, 1)[1].rstrip()
    ]


def test_a_readable_private_key_file_is_warned_about(tmp_path, caplog):
    key_file = tmp_path / "key.pem"
    key_file.write_text(_pem(RSA))
    key_file.chmod(0o644)
    settings = AuthSettings(kind="smart", client_id="c", private_key_file=key_file, token_url="https://x/token")
    with caplog.at_level(logging.WARNING, logger="alliance_fhir"):
        build_auth(settings, "https://x/fhir", httpx.Client())
    assert any("is a private key but is readable by others" in r.getMessage() for r in caplog.records)
