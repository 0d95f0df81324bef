"""Secrets that end up in an HTTP header are checked when the settings are read, and never shown.

A bearer token (and serve's webhook secret) travels verbatim: visible ASCII only (no space, no
line break or other control character, nothing beyond ASCII; whitespace around it is dropped).
The basic-auth user and password are base64-encoded before they travel, so they may hold spaces
and non-ASCII, but no control character (RFC 7617), and the user no colon. Whatever the source
(environment or config file), a bad secret is exit 2 with one ``error:`` line that holds neither
the secret nor any part of it; and should the HTTP library refuse a header anyway, its message
(which quotes the header) is not shown either.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from alliance_fhir.cli import _common as cli_common
from alliance_fhir.cli.main import app
from alliance_fhir.errors import ConfigError, FhirTransportError
from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.server.settings import ServerConfig, load_config
from alliance_fhir.service import run as service_run

from ..fake_fhir import BASE, FakeFhir

runner = CliRunner()
HEAD, TAIL = "first-half-of-the-secret", "second-half-of-the-secret"

# secret: (environment variable, config table, config key, extra settings, characters refused)
SECRETS = {
    "bearer token": (
        "ALLIANCE_FHIR_TOKEN",
        "auth",
        "token",
        {"auth": {"kind": "bearer"}},
        ["\n", "\r", "\r\n", "\x00", "\x7f", "\t", " ", "\x85", "\u00e9", "\u2028"],
    ),
    "basic user": (
        "ALLIANCE_FHIR_USERNAME",
        "auth",
        "username",
        {"auth": {"kind": "basic", "password": "pw"}},
        ["\n", "\r", "\x00", "\x7f", "\t", "\x85", ":"],
    ),
    "basic password": (
        "ALLIANCE_FHIR_PASSWORD",
        "auth",
        "password",
        {"auth": {"kind": "basic", "username": "u"}},
        ["\n", "\r", "\x00", "\x7f", "\t", "\x85"],
    ),
    "webhook secret": (
        "ALLIANCE_FHIR_WEBHOOK_SECRET",
        "serve",
        "webhook_secret",
        {},
        ["\n", "\r", "\x00", "\x7f", "\t", " ", "\x85", "\u00e9"],
    ),
}
CASES = [
    pytest.param(name, source, bad, id=f"{name}-{source}-{bad.encode('unicode_escape').decode()}")
    for name, (*_, refused) in SECRETS.items()
    for source in ("environment", "config file")
    for bad in refused
    if not (source == "environment" and bad == "\x00")  # no environment variable can hold a NUL
]


@pytest.fixture(autouse=True)
def _clean(isolated_cli, monkeypatch):  # noqa: ANN001
    # were a bad secret accepted, serve would end at once instead of serving forever
    monkeypatch.setattr(service_run, "run_service", lambda *args, **kwargs: False)


@pytest.fixture
def fake(monkeypatch) -> FakeFhir:  # noqa: ANN001
    server = FakeFhir()
    monkeypatch.setattr(
        cli_common,
        "client_factory",
        lambda cfg: FhirClient(cfg, transport=httpx.MockTransport(server), sleep=lambda s: None),
    )
    return server


def _toml(tables: dict[str, dict[str, str]]) -> str:
    return "".join(
        f"[{table}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())
        for table, values in tables.items()
    )


def _assert_one_line_without(output: str, secret: str) -> None:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for part in (secret, HEAD, TAIL, repr(secret), secret.encode("unicode_escape").decode()):
        assert part not in output


@pytest.mark.parametrize(("name", "source", "bad"), CASES)
def test_a_secret_that_cannot_travel_in_a_header_is_refused_before_any_request(
    name, source, bad, fake, monkeypatch, tmp_path
):
    env_name, table, key, extra, _ = SECRETS[name]
    secret = f"{HEAD}{bad}{TAIL}"
    tables: dict[str, dict[str, str]] = {"server": {"url": BASE}, "auth": {}, "serve": {}}
    for extra_table, values in extra.items():
        tables[extra_table].update(values)
    if source == "environment":
        monkeypatch.setenv(env_name, secret)
    else:
        tables[table][key] = secret
    config = tmp_path / "alliance-fhir.toml"
    config.write_text(_toml(tables))
    config.chmod(0o600)
    command = ["serve"] if name == "webhook secret" else ["check"]
    result = runner.invoke(app, [*command, "--config", str(config)])
    assert result.exit_code == 2, result.output
    _assert_one_line_without(result.stdout + result.stderr, secret)
    assert (env_name if source == "environment" else key) in result.stderr
    assert fake.requests == []  # refused before anything was sent
    assert not (tmp_path / "data").exists()  # and before the state database was made


def test_whitespace_around_a_token_is_dropped_and_inner_spaces_of_a_password_kept(monkeypatch):
    monkeypatch.setenv("ALLIANCE_FHIR_TOKEN", "  tok.en-_~+/=\n")
    monkeypatch.setenv("ALLIANCE_FHIR_PASSWORD", " pass word \u00e9 ")
    monkeypatch.setenv("ALLIANCE_FHIR_USERNAME", "J\u00fcrgen M")
    auth = load_config(BASE).auth
    assert auth.token is not None and auth.token.get_secret_value() == "tok.en-_~+/="
    assert auth.password is not None and auth.password.get_secret_value() == " pass word \u00e9 "
    assert auth.username == "J\u00fcrgen M"


@pytest.mark.parametrize("key", ["client_id", "key_id", "scope"])
def test_smart_identifiers_hold_no_control_characters(key, monkeypatch):
    monkeypatch.setenv(f"ALLIANCE_FHIR_{key.upper()}", f"{HEAD}\n{TAIL}")
    with pytest.raises(ConfigError) as info:
        load_config(BASE)
    assert f"auth.{key}" in str(info.value) and HEAD not in str(info.value) and TAIL not in str(info.value)
    assert info.value.__cause__ is None  # pydantic's own text, which shows inputs, is not chained


def test_a_header_the_http_library_refuses_is_not_shown_and_not_retried(monkeypatch):
    """The transport edge: h11's ``Illegal header value b'Bearer ...'`` never reaches a message."""
    secret = f"{HEAD}\n{TAIL}"
    sent: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        raise httpx.LocalProtocolError(f"Illegal header value b'Bearer {secret}'")

    monkeypatch.setattr(
        cli_common,
        "client_factory",
        lambda cfg: FhirClient(cfg, transport=httpx.MockTransport(refuse), sleep=lambda s: None),
    )
    result = runner.invoke(app, ["check", "--server", BASE])
    assert result.exit_code == 2, result.output
    _assert_one_line_without(result.stdout + result.stderr, secret)
    assert "LocalProtocolError" in result.stderr and "not shown" in result.stderr
    assert len(sent) == 1  # our own request is broken: asking again cannot help


@pytest.fixture
def listening() -> Iterator[str]:
    """A loopback socket that accepts connections (the kernel's backlog) and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/fhir"


def test_the_real_http_stack_refusing_a_header_does_not_show_it(listening: str):
    secret = f"{HEAD}\r\n{TAIL}"
    with FhirClient(ServerConfig(url=listening, timeout=5, max_attempts=3), sleep=lambda s: None) as client:
        with pytest.raises(FhirTransportError) as info:
            client.request("GET", "metadata", headers={"X-Probe": secret})
        assert client.requests_sent == 1
    message = str(info.value)
    assert "LocalProtocolError" in message and HEAD not in message and TAIL not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_readable_config_file_with_a_webhook_secret_is_warned_about(tmp_path: Path, caplog):  # noqa: ANN001
    config = tmp_path / "alliance-fhir.toml"
    config.write_text(_toml({"server": {"url": BASE}, "serve": {"webhook_secret": HEAD + TAIL}}))
    config.chmod(0o640)
    with caplog.at_level(logging.WARNING, logger="alliance_fhir"):
        load_config(file=config)
    [warning] = [r.getMessage() for r in caplog.records]
    assert "holds secrets ([serve] webhook_secret) but is readable by its group" in warning and HEAD not in warning
