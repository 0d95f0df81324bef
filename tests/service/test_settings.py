"""The webhook secret: environment, then config file, else generated once into the (private) state database."""

from __future__ import annotations

import stat

import pytest
from pydantic import SecretStr

from alliance_fhir.errors import ConfigError
from alliance_fhir.server.state import StateStore
from alliance_fhir.service.settings import SECRET_ENV, ServeSettings, authorised, load_serve_settings, webhook_secret


def test_generated_once_kept_in_the_state_database_which_becomes_private(tmp_path, monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    path = tmp_path / "state.sqlite"
    with StateStore(path) as store:
        first = webhook_secret(ServeSettings(), store)
    with StateStore(path) as store:
        assert webhook_secret(ServeSettings(), store).get_secret_value() == first.get_secret_value()
    assert len(first.get_secret_value()) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_environment_wins_over_the_config_file(tmp_path, monkeypatch):
    with StateStore(tmp_path / "s.sqlite") as store:
        settings = ServeSettings(webhook_secret=SecretStr("from-the-config-file-123"))
        monkeypatch.delenv(SECRET_ENV, raising=False)
        assert webhook_secret(settings, store).get_secret_value() == "from-the-config-file-123"
        monkeypatch.setenv(SECRET_ENV, "from-the-environment-123")
        assert webhook_secret(settings, store).get_secret_value() == "from-the-environment-123"
        monkeypatch.setenv(SECRET_ENV, "short")
        with pytest.raises(ConfigError, match="at least 16"):
            webhook_secret(settings, store)


def test_only_the_exact_bearer_is_authorised():
    secret = SecretStr("s" * 32)
    assert authorised("Bearer " + "s" * 32, secret)
    for header in (
        None,
        "",
        "s" * 32,
        "Bearer " + "s" * 31,
        "bearer " + "s" * 32,
        "Bearer " + "s" * 33,
        "Basic xyz",
        "Bearer ✓",
    ):
        assert not authorised(header, secret)


def test_the_serve_table_of_the_config_file(tmp_path):
    file = tmp_path / "alliance-fhir.toml"
    file.write_text('[server]\nurl = "http://x"\n[serve]\nsafety_net_minutes = 5\nchannel = "topic"\n')
    settings = load_serve_settings(file)
    assert settings.safety_net_minutes == 5 and settings.channel == "topic" and settings.max_body_bytes == 1024 * 1024
    assert load_serve_settings(file, safety_net_minutes=2.5).safety_net_minutes == 2.5
    file.write_text("[serve]\nsafety_net_minute = 5\n")
    with pytest.raises(ConfigError, match="safety_net_minute"):
        load_serve_settings(file)
