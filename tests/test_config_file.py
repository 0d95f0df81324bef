"""The config file is read once: one reader finds, parses and checks it; each layer validates its own
table with its own model, and every bad value is blamed on the file, table and key it came from."""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from alliance_fhir._config_file import TABLES, ConfigFile, find_config_file
from alliance_fhir.cli.main import app
from alliance_fhir.errors import ConfigError
from alliance_fhir.server.labels import load_labels
from alliance_fhir.server.settings import load_config
from alliance_fhir.service.cds_auth import load_cds_settings
from alliance_fhir.service.settings import load_serve_settings

runner = CliRunner()
SERVER = '[server]\nurl = "http://x/fhir"\n'


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("ALLIANCE_FHIR_") and name != "ALLIANCE_FHIR_TEST_HAPI_PORT":
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every TOML text parsed from now on (the reader's only way to read the file)."""
    seen: list[str] = []
    real = tomllib.loads

    def counting(text: str, **kwargs: Any) -> dict[str, Any]:
        seen.append(text)
        return real(text, **kwargs)

    monkeypatch.setattr(tomllib, "loads", counting)
    return seen


def write(text: str, name: str = "alliance-fhir.toml", mode: int = 0o600) -> Path:
    path = Path(name)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def test_no_file_is_an_empty_file_and_the_local_file_wins_over_the_user_one(tmp_path: Path):
    empty = ConfigFile.read()
    assert empty.path is None and empty.table("server") == {} and empty.sources("server") == {}
    user = tmp_path / "xdg" / "alliance-fhir" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text(SERVER)
    assert find_config_file() == user
    assert find_config_file() != write(SERVER) and find_config_file() == Path("alliance-fhir.toml")


def test_a_table_is_a_copy_that_a_loader_may_add_to():
    loaded = ConfigFile.read(write(SERVER + "timeout = 5\n"))
    table = loaded.table("server")
    table["url"] = "http://elsewhere"
    assert loaded.table("server") == {"url": "http://x/fhir", "timeout": 5}
    assert loaded.sources("server") == {
        ("url",): "alliance-fhir.toml [server] url",
        ("timeout",): "alliance-fhir.toml [server] timeout",
    }
    assert loaded.sources("auth", under=("auth",)) == {}


def test_every_loader_takes_the_file_already_read_and_does_not_read_it_again(parses: list[str]):
    path = write(
        SERVER + '[serve]\nchannel = "topic"\n[labels]\nconfidentiality = "R"\n[[cds.clients]]\n'
        'issuer = "https://ehr"\njwks_url = "https://ehr/jwks"\n'
    )
    loaded = ConfigFile.read(path)
    path.unlink()  # what the loaders see now can only come from what was read
    assert load_config(file=loaded).url == "http://x/fhir"
    assert load_labels(loaded).confidentiality == "R"
    assert load_serve_settings(loaded).channel == "topic"
    assert [c.issuer for c in load_cds_settings(loaded).clients] == ["https://ehr"]
    assert len(parses) == 1


def test_serve_reads_the_file_once_for_its_four_loaders(parses: list[str]):
    """serve loads [server]/[auth], [labels], [serve] and [cds]; a bad [cds] fails the last loader."""
    write(SERVER + "[labels]\nconfidentiality = 'R'\n[serve]\nchannel = 'topic'\n[cds]\nmax_token_seconds = 99999\n")
    result = runner.invoke(app, ["serve", "--no-subscribe"])
    assert result.exit_code == 2, result.output
    assert "cds.max_token_seconds" in result.stderr and "(from alliance-fhir.toml [cds] max_token_seconds)" in (
        result.stderr
    )
    assert len(parses) == 1


BAD_VALUES: dict[str, tuple[str, str, str]] = {
    # table: (the table's text, the field as named in the message, the key the blame names)
    "server": ("timeout = -1", "timeout", "timeout"),
    "auth": ('kind = "kerberos"', "auth.kind", "kind"),
    "results": ('url = "http://results/fhir"\ntimeout = -1', "results.timeout", "timeout"),
    "serve": ("batch_size = 0", "serve.batch_size", "batch_size"),
    "cds": ("max_token_seconds = 1", "cds.max_token_seconds", "max_token_seconds"),
    "labels": ("sensitivity = 5", "labels.sensitivity", "sensitivity"),
}
LOADERS: dict[str, Callable[[ConfigFile], object]] = {
    "server": lambda file: load_config(file=file),
    "auth": lambda file: load_config(file=file),
    "results": lambda file: load_config(file=file),
    "serve": load_serve_settings,
    "cds": load_cds_settings,
    "labels": load_labels,
}


def test_every_table_the_file_may_have_has_a_loader():
    assert set(TABLES) == set(BAD_VALUES) == set(LOADERS)


@pytest.mark.parametrize("table", TABLES)
def test_a_bad_value_in_any_table_is_blamed_on_the_file_table_and_key(table: str):
    text, field, key = BAD_VALUES[table]
    loaded = ConfigFile.read(write(f"{SERVER}[{table}]\n{text}\n" if table != "server" else f"{SERVER}{text}\n"))
    with pytest.raises(ConfigError) as info:
        LOADERS[table](loaded)
    message = str(info.value)
    assert message.startswith("invalid settings: ") and f"{field}: " in message
    assert message.endswith(f"(from alliance-fhir.toml [{table}] {key})")
    assert info.value.__cause__ is None  # pydantic's own text shows input values


@pytest.mark.parametrize(
    "loader, option, blamed",
    [
        (lambda f: load_serve_settings(f, batch_size=0), "batch_size", "option --batch-size"),
        (lambda f: load_config("http://x/fhir", file=f, concurrency=0), "concurrency", "option --concurrency"),
        (lambda f: load_labels(f, sensitivity=[""], confidentiality=""), None, None),
    ],
)
def test_an_option_that_overrides_the_file_is_blamed_on_the_option(
    loader: Callable[[ConfigFile], object], option: str | None, blamed: str | None
):
    loaded = ConfigFile.read(write(SERVER + "concurrency = 4\n[serve]\nbatch_size = 10\n"))
    if option is None:  # empty codes on the command line switch the labels off: nothing to blame
        assert not loader(loaded)
        return
    with pytest.raises(ConfigError, match=rf"{option}: .* \(from {blamed}\)$"):
        loader(loaded)


def test_a_readable_file_with_secrets_is_warned_about_once_per_read(caplog: pytest.LogCaptureFixture):
    path = write(SERVER + '[auth]\nkind = "bearer"\ntoken = "s3cret-token"\n', mode=0o644)
    with caplog.at_level(logging.WARNING, logger="alliance_fhir"):
        loaded = ConfigFile.read(path)
        load_config(file=loaded)
        load_labels(loaded)
        load_serve_settings(loaded)
    [warning] = [r.getMessage() for r in caplog.records]
    assert "holds secrets ([auth] token)" in warning and "s3cret-token" not in warning


@pytest.mark.parametrize(
    "text, reason",
    [
        ("[auht]\nkind = 'bearer'\n", "unknown table [auht]"),
        ('url = "http://x"\n', "unknown key 'url'"),
        ("[server\n", "config file alliance-fhir.toml: "),
    ],
)
def test_the_file_itself_is_checked_whichever_table_is_asked_for(text: str, reason: str):
    write(text)
    for load in (lambda: load_config(file=None), lambda: load_labels(), lambda: load_cds_settings()):
        with pytest.raises(ConfigError, match=re.escape(reason)):
            load()
