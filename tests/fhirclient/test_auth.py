"""Authentication: bearer, basic, and SMART Backend Services end to end over real local HTTP.

The SMART test runs a token endpoint and a protected FHIR endpoint on 127.0.0.1: the token
endpoint verifies our signed client assertion (RS384 and ES384) with the public key, the FHIR
endpoint accepts only tokens it issued and expires one mid-run to force a re-authentication.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from alliance_fhir.errors import AuthError, ConfigError
from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.fhirclient.config import AuthSettings
from alliance_fhir.server.settings import ServerConfig, load_config

CLIENT_ID = "alliance-fhir-test"


def keypair(algorithm: str) -> tuple[str, Any]:
    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS384"
        else ec.generate_private_key(ec.SECP384R1())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return pem, key.public_key()


class AuthServer(ThreadingHTTPServer):
    def __init__(self, public_key: Any, algorithm: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.public_key, self.algorithm = public_key, algorithm
        self.tokens: dict[str, int] = {}  # token -> remaining uses
        self.token_requests = 0
        self.rejected_assertions: list[str] = []
        self.jtis: set[str] = set()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: AuthServer

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - the token endpoint
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode()).items()}
        self.server.token_requests += 1
        try:
            claims = jwt.decode(
                form["client_assertion"],
                self.server.public_key,
                algorithms=[self.server.algorithm],
                audience=f"{self.server.base}/token",
                leeway=600,
            )  # the refresh test moves our clock
            assert claims["iss"] == claims["sub"] == CLIENT_ID and claims["jti"] not in self.server.jtis
            assert form["grant_type"] == "client_credentials"
            assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            self.server.jtis.add(claims["jti"])
        except Exception as exc:  # noqa: BLE001 - any failure is a refusal, recorded for the test
            self.server.rejected_assertions.append(repr(exc))
            self._send(401, {"error": "invalid_client", "error_description": "bad assertion"})
            return
        token = str(uuid.uuid4())
        self.server.tokens[token] = 3  # each token works for three requests, then "expires"
        self._send(200, {"access_token": token, "token_type": "bearer", "expires_in": 300, "scope": form.get("scope")})

    def do_GET(self) -> None:  # noqa: N802 - the protected FHIR endpoint
        if self.path.endswith("/.well-known/smart-configuration"):
            self._send(200, {"token_endpoint": f"{self.server.base}/token"})
            return
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.server.tokens.get(token, 0) <= 0:
            self._send(401, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login"}]})
            return
        self.server.tokens[token] -= 1
        self._send(200, {"resourceType": "Patient", "id": "1"})


@pytest.fixture(params=["RS384", "ES384"])
def smart(request: pytest.FixtureRequest) -> Iterator[tuple[AuthServer, str]]:
    pem, public = keypair(request.param)
    server = AuthServer(public, request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, pem
    server.shutdown()
    server.server_close()


def smart_client(server: AuthServer, pem: str, **auth: object) -> FhirClient:
    settings = AuthSettings(kind="smart", client_id=CLIENT_ID, private_key=pem, algorithm=server.algorithm, **auth)
    return FhirClient(ServerConfig(url=f"{server.base}/fhir", auth=settings, max_attempts=1))


def test_smart_backend_services_end_to_end(smart):
    server, pem = smart
    with smart_client(server, pem) as client:  # token endpoint discovered from .well-known
        for _ in range(7):
            assert client.read("Patient", "1")["id"] == "1"
    # 7 reads, 3 per token: the cached token is reused, and each 401 costs one new token, not a retry
    assert server.token_requests == 3
    assert server.rejected_assertions == []


def test_token_is_refreshed_before_it_expires(smart):
    server, pem = smart
    now = [time.time()]
    with smart_client(server, pem, token_url=f"{server.base}/token") as client:
        client._http.auth._clock = lambda: now[0]  # type: ignore[union-attr]
        client.read("Patient", "1")
        now[0] += 200  # still inside expires_in (300) minus the 60 s early refresh
        client.read("Patient", "1")
        now[0] += 50  # now past it: refreshed before the server would refuse the token
        client.read("Patient", "1")
    assert server.token_requests == 2


def test_refused_assertion_is_an_auth_error(smart):
    server, _ = smart
    other_pem, _ = keypair(server.algorithm)
    with smart_client(server, other_pem) as client, pytest.raises(AuthError, match="bad assertion"):
        client.read("Patient", "1")
    assert server.rejected_assertions


def test_smart_needs_a_key_and_a_client_id():
    with pytest.raises(ConfigError, match="client id"):
        FhirClient(ServerConfig(url="http://x/fhir", auth=AuthSettings(kind="smart", token_url="https://x/token")))
    with pytest.raises(ConfigError, match="private key"):
        FhirClient(
            ServerConfig(
                url="http://x/fhir", auth=AuthSettings(kind="smart", client_id="c", token_url="https://x/token")
            )
        )


def test_bearer_and_basic_headers():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        return httpx.Response(200, json={})

    transport = httpx.MockTransport(handler)
    with FhirClient(
        ServerConfig(url="http://x/fhir", auth=AuthSettings(kind="bearer", token="t0k")), transport=transport
    ) as c:
        c.read("Patient", "1")
    with FhirClient(
        ServerConfig(url="http://x/fhir", auth=AuthSettings(kind="basic", username="u", password="p")),
        transport=transport,
    ) as c:
        c.read("Patient", "1")
    assert seen == ["Bearer t0k", "Basic dTpw"]


def test_secrets_come_from_the_environment_or_the_file(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALLIANCE_FHIR_AUTH", "bearer")
    monkeypatch.setenv("ALLIANCE_FHIR_TOKEN", "from-env")
    config = load_config("http://x/fhir")
    assert config.auth.kind == "bearer" and config.auth.token is not None
    assert config.auth.token.get_secret_value() == "from-env" and "from-env" not in repr(config)
    monkeypatch.delenv("ALLIANCE_FHIR_TOKEN")
    monkeypatch.delenv("ALLIANCE_FHIR_AUTH")
    (tmp_path / "alliance-fhir.toml").write_text(
        '[server]\nurl = "http://file/fhir"\n[auth]\nkind = "basic"\nusername = "u"\npassword = "pw"\n'
    )
    config = load_config()
    assert config.base_url == "http://file/fhir" and config.auth.kind == "basic"


def test_missing_server_is_a_config_error(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ALLIANCE_FHIR_SERVER", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="no FHIR server"):
        load_config()


def test_fetching_a_token_is_not_a_retry(smart):
    """With retries on, a read that first fetches a token sleeps never and asks for one token."""
    server, pem = smart
    slept: list[float] = []
    settings = AuthSettings(kind="smart", client_id=CLIENT_ID, private_key=pem, algorithm=server.algorithm)
    with FhirClient(ServerConfig(url=f"{server.base}/fhir", auth=settings), sleep=slept.append) as client:
        assert client.read("Patient", "1")["id"] == "1"
    assert slept == [] and server.token_requests == 1


SMART_BASE = "http://127.0.0.1:1/fhir"
LEAK = "eyJhbGciOiJSUzM4NCJ9.eyJpc3MiOiJhbGxpYW5jZSJ9.c2lnbmF0dXJlLXBhcnQ"


def _smart_client_answering(token_answer: tuple[int, dict[str, object]]) -> FhirClient:
    """A SMART client whose token endpoint answers ``token_answer`` (the FHIR endpoint accepts anything)."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            return httpx.Response(token_answer[0], json=token_answer[1])
        return httpx.Response(200, json={"resourceType": "Patient", "id": "1"})

    pem, _ = keypair("RS384")
    settings = AuthSettings(kind="smart", client_id=CLIENT_ID, private_key=pem, token_url="http://127.0.0.1:1/token")
    config = ServerConfig(url=SMART_BASE, auth=settings, max_attempts=1)
    return FhirClient(config, transport=httpx.MockTransport(handler), sleep=lambda s: None)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"access_token": f"{LEAK}\nInjected: 1", "expires_in": 300}, "the access_token must be visible ASCII"),
        ({"access_token": f"{LEAK} {LEAK}", "expires_in": 300}, "the access_token must be visible ASCII"),
        ({"access_token": {"value": LEAK}, "expires_in": 300}, "the access_token is not a string"),
        ({"access_token": LEAK, "expires_in": "NaN"}, "expires_in is not a finite positive number"),
        ({"access_token": LEAK, "expires_in": "soon"}, "expires_in is not a number"),
        ({"access_token": LEAK, "expires_in": [300]}, "expires_in is not a number"),
    ],
)
def test_an_access_token_that_cannot_be_used_is_refused_and_never_shown(answer, reason):
    with _smart_client_answering((200, answer)) as client, pytest.raises(AuthError) as info:
        client.read("Patient", "1")
    message = str(info.value)
    assert reason in message
    assert LEAK not in message and "Injected" not in message and "c2lnbmF0dXJl" not in message


def test_a_token_endpoint_refusal_shows_its_error_code_and_description_but_no_jwt():
    description = f"assertion {LEAK} was rejected\nforged: line"
    with (
        _smart_client_answering((400, {"error": "invalid_client", "error_description": description})) as client,
        pytest.raises(AuthError) as info,
    ):
        client.read("Patient", "1")
    message = str(info.value)
    assert "HTTP 400: error: invalid_client: assertion [a JWT, not shown] was rejected\\x0aforged: line" in message
    assert LEAK not in message and "\n" not in message
    with (
        _smart_client_answering((401, {"error": f"bad\n{LEAK}", "error_description": 7})) as client,
        pytest.raises(AuthError) as info,
    ):
        client.read("Patient", "1")
    assert str(info.value).endswith("HTTP 401: error: no access_token") and LEAK not in str(info.value)
