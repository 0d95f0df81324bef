"""Authentication for FHIR servers: bearer token, HTTP basic, SMART Backend Services.

SMART Backend Services (client-credentials grant with a private-key JWT assertion, RS384 or
ES384) caches the access token until shortly before it expires and refreshes it; a 401 from
the FHIR server forces one re-authentication and one resend, which is not counted as a retry.
"""

from __future__ import annotations

import ipaddress
import math
import re
import threading
import time
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import httpx
import jwt

from .._config_file import warn_if_readable
from .._text import safe_text
from ..errors import AuthError, ConfigError, FhirTransportError
from .config import AuthSettings, check_header_token

__all__ = ["SmartBackendAuth", "build_auth"]

_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_EARLY_REFRESH = 60.0
# RFC 6749 section 5.2: an error code is a short run of these characters.
_ERROR_CODE = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,64}")
# Three dot-separated base64url runs: a JWT (our own client assertion, echoed back) is never shown.
_JWT_LIKE = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")


class _Bearer(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


class SmartBackendAuth(httpx.Auth):
    """SMART Backend Services: a signed JWT buys a short-lived access token, cached per client."""

    def __init__(
        self,
        settings: AuthSettings,
        token_url: str,
        *,
        http: httpx.Client,
        clock: Any = time.time,
    ) -> None:
        if not settings.client_id:
            raise ConfigError("SMART auth needs a client id (ALLIANCE_FHIR_CLIENT_ID or [auth] client_id)")
        self._settings = settings
        self._key = _private_key(settings)
        self._token_url = token_url
        self._http = http
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.token_requests = 0

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._current_token()}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {self._current_token(force=True, stale=request)}"
            yield request

    def _current_token(self, *, force: bool = False, stale: httpx.Request | None = None) -> str:
        with self._lock:
            sent = stale.headers.get("Authorization", "") if stale is not None else ""
            renewed_meanwhile = force and self._token is not None and sent != f"Bearer {self._token}"
            if self._token is None or self._clock() >= self._expires_at or (force and not renewed_meanwhile):
                self._fetch_token()
            return str(self._token)

    def _fetch_token(self) -> None:
        now = self._clock()
        claims = {
            "iss": self._settings.client_id,
            "sub": self._settings.client_id,
            "aud": self._token_url,
            "exp": int(now) + 300,
            "iat": int(now),
            "jti": str(uuid.uuid4()),
        }
        headers = {"kid": self._settings.key_id} if self._settings.key_id else None
        assertion = jwt.encode(claims, self._key, algorithm=self._settings.algorithm, headers=headers)
        form = {
            "grant_type": "client_credentials",
            "scope": self._settings.scope,
            "client_assertion_type": _ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        self.token_requests += 1
        try:
            response = self._http.post(self._token_url, data=form, headers={"Accept": "application/json"})
        except httpx.TransportError as exc:
            raise FhirTransportError("POST", self._token_url, f"token endpoint: {type(exc).__name__}") from exc
        body = _json_or_none(response)
        if response.status_code != 200 or body is None or "access_token" not in body:
            self._refused(response.status_code, _refusal_reason(body))
        try:
            token, lifetime = _granted(body)
        except ValueError as exc:
            self._refused(response.status_code, f"the token endpoint's answer is not usable: {exc}")
        self._token = token
        self._expires_at = now + lifetime - _EARLY_REFRESH

    def _refused(self, status: int, reason: str) -> NoReturn:
        raise AuthError("POST", self._token_url, status, {"issue": [{"severity": "error", "diagnostics": reason}]})


def _refusal_reason(body: dict[str, Any] | None) -> str:
    """Why the token endpoint refused, for one error line: its ``error`` code and description,
    control characters escaped, cut short, and anything shaped like a JWT (our signed assertion,
    echoed back) masked; the rest of the body is never shown."""
    body = body or {}
    code, description = body.get("error"), body.get("error_description")
    parts = [code] if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else []
    if isinstance(description, str) and description.strip():
        parts.append(safe_text(_JWT_LIKE.sub("[a JWT, not shown]", description), 200))
    return ": ".join(parts) or "no access_token"


def _granted(body: dict[str, Any]) -> tuple[str, float]:
    """The access token and its lifetime from a 200 answer. The token goes verbatim into our
    ``Authorization`` header, so it follows the rule every configured token follows; it is never
    shown, whatever is wrong with it.

    Raises:
        ValueError: the token is not a header-safe string, or ``expires_in`` is not a usable number.
    """
    token = body["access_token"]
    if not isinstance(token, str):
        raise ValueError("the access_token is not a string")
    return check_header_token(token, "the access_token"), _lifetime(body.get("expires_in", 300))


def _lifetime(value: Any) -> float:
    """Seconds the access token lives (``expires_in``): a finite positive number, or the answer is refused
    (NaN would never expire, text would be a traceback)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expires_in is not a number")
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError("expires_in is not a number") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("expires_in is not a finite positive number")
    return seconds


def _json_or_none(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _private_key(settings: AuthSettings) -> Any:
    """The signing key, loaded and checked against the algorithm now: a bad key is one configuration
    error naming where it came from, never a traceback at the first token request."""
    if settings.private_key is not None:
        return _load_key(
            settings.private_key.get_secret_value().encode(),
            "the SMART private key ([auth] private_key / ALLIANCE_FHIR_PRIVATE_KEY)",
            settings.algorithm,
        )
    if settings.private_key_file is not None:
        path = Path(settings.private_key_file)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the SMART private key file {path}: {exc.strerror or exc}") from exc
        warn_if_readable(path, "is a private key")
        return _load_key(data, f"the SMART private key file {path}", settings.algorithm)
    raise ConfigError("SMART auth needs a private key (ALLIANCE_FHIR_PRIVATE_KEY_FILE or [auth] private_key_file)")


def _load_key(data: bytes, where: str, algorithm: str) -> Any:
    """A PEM private key that fits ``algorithm`` (RS384: RSA; ES384: EC on P-384). Its content is never shown."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if b"PUBLIC KEY" in data and b"PRIVATE KEY" not in data:
        raise ConfigError(f"{where} is a public key; SMART Backend Services signs with the private key")
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError as exc:  # encrypted
        raise ConfigError(f"{where} is encrypted with a passphrase; give an unencrypted PEM key") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{where} is not a readable PEM private key") from exc
    if algorithm == "RS384" and not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(
            f'{where} is not an RSA key, which algorithm RS384 needs (set [auth] algorithm = "ES384" for an EC key)'
        )
    if algorithm == "ES384" and not (
        isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1)
    ):
        raise ConfigError(f"{where} is not an EC P-384 key, which algorithm ES384 needs")
    return key


def discover_token_url(http: httpx.Client, base_url: str) -> str:
    """The token endpoint from ``.well-known/smart-configuration``.

    Raises:
        ConfigError: the server does not publish one.
    """
    url = f"{base_url}/.well-known/smart-configuration"
    try:
        response = http.get(url, headers={"Accept": "application/json"})
    except httpx.TransportError as exc:
        raise FhirTransportError("GET", url, type(exc).__name__) from exc
    body = _json_or_none(response)
    if response.status_code != 200 or not body or not body.get("token_endpoint"):
        raise ConfigError(f"{url} gives no token_endpoint; set ALLIANCE_FHIR_TOKEN_URL")
    return str(body["token_endpoint"])


def build_auth(settings: AuthSettings, base_url: str, http: httpx.Client) -> httpx.Auth | None:
    """The httpx.Auth for the settings (``http`` is used for token requests only).

    Raises:
        ConfigError: a secret the chosen kind needs is missing.
    """
    if settings.kind == "none":
        return None
    if settings.kind == "bearer":
        if settings.token is None:
            raise ConfigError("bearer auth needs a token (ALLIANCE_FHIR_TOKEN or [auth] token)")
        return _Bearer(settings.token.get_secret_value())
    if settings.kind == "basic":
        if not settings.username or settings.password is None:
            raise ConfigError("basic auth needs ALLIANCE_FHIR_USERNAME and ALLIANCE_FHIR_PASSWORD")
        return httpx.BasicAuth(settings.username, settings.password.get_secret_value())
    token_url = settings.token_url or discover_token_url(http, base_url)
    check_token_url(token_url, base_url, settings)
    return SmartBackendAuth(settings, token_url, http=http)


def check_token_url(token_url: str, base_url: str, settings: AuthSettings) -> None:
    """Our signed assertion goes only to https (loopback excepted) on a host the config allows.

    Allowed hosts: the FHIR server's own, a configured ``token_url``'s, and ``token_hosts``. A
    discovery document pointing anywhere else (or at plain http) is refused, so a tampered
    ``.well-known`` cannot harvest assertions.

    Raises:
        ConfigError: the endpoint is not https, or is on a host the config does not allow.
    """
    parts = urlsplit(token_url)
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" and not (parts.scheme == "http" and _is_loopback(host)):
        raise ConfigError(
            f"SMART token endpoint must use https (loopback excepted), not {parts.scheme or 'no scheme'!r}"
        )
    allowed = {(urlsplit(base_url).hostname or "").lower(), *(h.lower() for h in settings.token_hosts)}
    if settings.token_url:
        allowed.add((urlsplit(settings.token_url).hostname or "").lower())
    if host not in allowed:
        raise ConfigError(
            f"SMART token endpoint host {host!r} is not allowed: add it to [auth] token_hosts "
            "(ALLIANCE_FHIR_TOKEN_HOSTS) if you trust it"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
