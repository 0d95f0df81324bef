"""Who may call the CDS Hooks service: the trusted CDS clients and the JWT each request carries.

CDS Hooks 2.0 has the CDS client sign a short JWT per request (``Authorization: Bearer``). We
accept it only when every one of these holds, and answer 401 with no detail otherwise (the
reason goes to the log, which never holds patient data):

- the header's ``alg`` is RS384 or ES384 (the two the spec names; ``none``, HMAC and the rest
  are refused before any key is looked at);
- ``iss`` is a client configured in ``[[cds.clients]]``; the key is the one with the header's
  ``kid`` in *that client's* JWKS: a ``jwks_file``, or a ``jwks_url`` fetched by us (bounded in
  size and time, cached). The token's own ``jku``, ``x5u``, ``jwk`` and ``x5c`` headers are
  ignored: a key location chosen by the caller would let anyone sign (and make us fetch URLs);
- ``aud`` is exactly the URL of the endpoint called (``--public-url`` + ``/cds-services/{id}``),
  as a string or within an array (RFC 7519 allows both);
- ``exp``, ``iat`` and ``jti`` are present; ``exp``, ``iat`` and ``nbf`` (when sent) are finite
  JSON numbers within a sane range (not a string, a boolean, null, NaN or Infinity, which would
  make every comparison false and so switch the checks off); ``iat`` is not in the future,
  ``nbf`` not after now, and ``exp`` not in the past (all within the clock-skew allowance); the
  token lives at most ``max_token_seconds`` (the spec asks clients for at most 5 minutes);
- ``sub`` is the client's ``client_id`` when one is configured;
- the ``jti`` was never seen before from that issuer (kept in the state database until the
  token expires, so replay protection survives a restart and is shared by replicas on PostgreSQL).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .._config_file import ConfigFile, validate_settings
from ..errors import CdsAuthError, ConfigError
from ..fhirclient.fetch import FetchFailed, Transport, fetch_bounded
from ..server.state import StateStore
from ..signals.prompts import load_prompts

__all__ = [
    "ALGORITHMS",
    "CdsClient",
    "CdsSettings",
    "JwksSource",
    "TokenVerifier",
    "load_cds_settings",
]

logger = logging.getLogger("alliance_fhir.cds")
ALGORITHMS = ("RS384", "ES384")
_KEY_TYPE = {"RS384": ("RSA", None), "ES384": ("EC", "P-384")}
KIB = 1024
_LATEST_TIME = 253402300799  # 9999-12-31T23:59:59Z: a larger "time" is not one (and overflows datetime)


class CdsClient(BaseModel):
    """One trusted CDS client (an EHR): its issuer and where its public keys are."""

    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(min_length=1)
    jwks_url: str | None = Field(None, pattern=r"^https?://")
    jwks_file: Path | None = None
    client_id: str | None = Field(None, description="When set, the token's sub must be this.")

    @model_validator(mode="after")
    def _one_key_source(self) -> CdsClient:
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise ValueError("give exactly one of jwks_url and jwks_file")
        return self


class CdsSettings(BaseModel):
    """The ``[cds]`` table: trusted clients and the limits of tokens, key sets and report links."""

    model_config = ConfigDict(extra="forbid")

    clients: list[CdsClient] = Field(default_factory=list)
    max_token_seconds: int = Field(300, ge=10, le=3600, description="longest exp - iat accepted")
    clock_skew_seconds: int = Field(30, ge=0, le=300)
    jwks_max_bytes: int = Field(64 * KIB, ge=KIB, le=4 * 1024 * KIB)
    jwks_cache_seconds: float = Field(300.0, ge=0, le=86400)
    jwks_timeout_seconds: float = Field(5.0, gt=0, le=60)
    report_link_minutes: int = Field(15, ge=1, le=240, description="how long a card's report link works")
    hook_deadline_seconds: float = Field(
        3.0,
        gt=0,
        le=10,
        description="the whole hook (JWT check with any JWKS fetch, FHIR reads) answers within this; EHRs wait about 5 s",
    )
    on_track_cards: bool = Field(
        True,
        description="a quiet info card ('SRS 38 at session 5, on track') with the trend link for every client "
        "whose latest alliance score meets no rule; false: cards only when there is something to discuss",
    )
    stored_read_max_age_seconds: float = Field(
        300.0,
        ge=0,
        le=3600,
        description="a hook without prefetch answers from the service's stored read of the patient while no writer "
        "of this state changed the patient's results and the read is younger than this; 0: always read the server",
    )
    prompts: Path | None = Field(
        None,
        description="a prompt file (a clinic's edited or translated discussion prompts, checked by "
        "`alliance-fhir prompts check`); none: the packaged English set",
    )


def load_cds_settings(file: Path | ConfigFile | None = None) -> CdsSettings:
    """The ``[cds]`` table of the config file (``[[cds.clients]]`` are its trusted clients); ``file``
    is the file already read, or where to find it.

    Raises:
        ConfigError: unreadable file, invalid settings, or a ``jwks_file`` that does not exist.
    """
    loaded = ConfigFile.of(file)
    settings = validate_settings(CdsSettings, loaded.table("cds"), loaded.sources("cds"), prefix="cds")
    path = loaded.path
    issuers = [c.issuer for c in settings.clients]
    if len(set(issuers)) != len(issuers):
        raise ConfigError(f"{path}: [[cds.clients]] names an issuer twice")
    for client in settings.clients:
        if client.jwks_file is not None and not client.jwks_file.is_file():
            raise ConfigError(f"{path}: [[cds.clients]] jwks_file {client.jwks_file} is not a file")
    if settings.prompts is not None:  # checked at start: a clinic's bad translation stops serve with one line
        try:
            load_prompts(settings.prompts)
        except ConfigError as exc:
            raise ConfigError(f"{path}: [cds] prompts: {exc}") from None
    return settings


@dataclass
class _CachedKeys:
    keys: dict[str, dict[str, Any]]
    fetched_at: float


class JwksSource:
    """One client's public keys by ``kid``: read from its file or fetched from its URL, cached, bounded.

    A token with an unknown ``kid`` refreshes the set at most once per ``min_refresh_seconds``
    (a client rotating its keys is picked up at once; a stream of bogus kids does not turn into
    a stream of fetches).
    """

    def __init__(
        self,
        client: CdsClient,
        settings: CdsSettings,
        *,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.monotonic,
        min_refresh_seconds: float = 30.0,
    ) -> None:
        self._client, self._settings, self._transport, self._clock = client, settings, transport, clock
        self._min_refresh = min_refresh_seconds
        self._cached: _CachedKeys | None = None
        self._lock = threading.Lock()

    def key(self, kid: str) -> dict[str, Any]:
        """The JWK with this ``kid``.

        Raises:
            CdsAuthError: no such key, or the key set could not be read (too large, not JSON, unreachable).
        """
        with self._lock:
            now = self._clock()
            cached = self._cached
            fresh = cached is not None and now - cached.fetched_at < self._settings.jwks_cache_seconds
            if cached is None or not fresh or (kid not in cached.keys and now - cached.fetched_at >= self._min_refresh):
                self._cached = cached = _CachedKeys(self._load(), now)
            found = cached.keys.get(kid)
        if found is None:
            raise CdsAuthError(f"no key with this kid in the JWKS of {self._client.issuer}")
        return found

    def _load(self) -> dict[str, dict[str, Any]]:
        raw = self._read_file() if self._client.jwks_file is not None else self._fetch()
        try:
            document = json.loads(raw)
        except ValueError as exc:
            raise CdsAuthError(f"the JWKS of {self._client.issuer} is not JSON") from exc
        keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(keys, list):
            raise CdsAuthError(f"the JWKS of {self._client.issuer} has no keys array")
        return {str(k["kid"]): k for k in keys if isinstance(k, dict) and isinstance(k.get("kid"), str)}

    def _read_file(self) -> bytes:
        path = self._client.jwks_file
        assert path is not None
        try:
            size = path.stat().st_size
            if size > self._settings.jwks_max_bytes:
                raise CdsAuthError(
                    f"the JWKS file of {self._client.issuer} is larger than {self._settings.jwks_max_bytes} bytes"
                )
            return path.read_bytes()
        except OSError as exc:
            raise CdsAuthError(f"the JWKS file of {self._client.issuer} cannot be read: {exc.strerror}") from exc

    def _fetch(self) -> bytes:
        url = self._client.jwks_url
        assert url is not None
        limit, timeout = self._settings.jwks_max_bytes, self._settings.jwks_timeout_seconds
        try:
            return fetch_bounded(
                url, max_bytes=limit, timeout=timeout, accept="application/json", transport=self._transport
            )
        except FetchFailed as exc:
            raise CdsAuthError(self._fetch_failure(exc, limit, timeout)) from exc

    def _fetch_failure(self, exc: FetchFailed, limit: int, timeout: float) -> str:
        issuer = self._client.issuer
        if exc.reason == "status":
            return f"the JWKS URL of {issuer} answered {exc.detail}"
        if exc.reason == "too_large":
            return f"the JWKS of {issuer} is larger than {limit} bytes"
        if exc.reason == "too_slow":
            return f"the JWKS URL of {issuer} took longer than {timeout:g} s"
        return f"the JWKS URL of {issuer} failed: {exc.detail}"


class TokenVerifier:
    """Checks the JWT of each CDS request against the trusted clients (see the module docstring)."""

    def __init__(
        self,
        settings: CdsSettings,
        store: StateStore,
        *,
        transport: Transport | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._settings, self._store, self._now = settings, store, now
        self._clients = {c.issuer: c for c in settings.clients}
        self._keys = {c.issuer: JwksSource(c, settings, transport=transport) for c in settings.clients}

    @property
    def issuers(self) -> list[str]:
        return sorted(self._clients)

    def verify(self, authorization: str | None, audience: str) -> dict[str, Any]:
        """The verified claims of the request's token.

        Raises:
            CdsAuthError: no token, or any check failed (the message says which, without patient data).
        """
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise CdsAuthError("no bearer token")
        token = token.strip()
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise CdsAuthError(f"not a JWT ({type(exc).__name__})") from exc
        algorithm, kid, issuer = header.get("alg"), header.get("kid"), unverified.get("iss")
        if algorithm not in ALGORITHMS:
            raise CdsAuthError(f"signing algorithm {str(algorithm)[:16]!r} is not RS384 or ES384")
        if not isinstance(kid, str) or not kid:
            raise CdsAuthError("no kid in the token header")
        client = self._clients.get(issuer) if isinstance(issuer, str) else None
        if client is None:
            raise CdsAuthError("unknown issuer (not in [[cds.clients]])")
        claims = self._checked_signature(token, algorithm, self._keys[client.issuer].key(kid), audience, client)
        self._check_times(claims)
        if client.client_id is not None and claims.get("sub") != client.client_id:
            raise CdsAuthError(f"sub is not the client_id configured for {client.issuer}")
        jti = claims["jti"]
        if not isinstance(jti, str) or not 0 < len(jti) <= 255:
            raise CdsAuthError("jti is not a string of 1-255 characters")
        expires = datetime.fromtimestamp(float(claims["exp"]) + self._settings.clock_skew_seconds, UTC)
        if not self._store.first_use_of_jti(client.issuer, jti, expires):
            raise CdsAuthError(f"replayed jti from {client.issuer}")
        return claims

    def _checked_signature(
        self, token: str, algorithm: str, jwk: dict[str, Any], audience: str, client: CdsClient
    ) -> dict[str, Any]:
        kty, curve = _KEY_TYPE[algorithm]
        if jwk.get("kty") != kty or (curve and jwk.get("crv") != curve) or jwk.get("alg", algorithm) != algorithm:
            raise CdsAuthError(f"the key for this kid of {client.issuer} is not a {algorithm} key")
        if jwk.get("use", "sig") != "sig":
            raise CdsAuthError(f"the key for this kid of {client.issuer} is not a signing key")
        try:
            key = jwt.PyJWK(jwk, algorithm=algorithm)
            return jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=audience,
                issuer=client.issuer,
                leeway=self._settings.clock_skew_seconds,
                options={"require": ["iss", "aud", "exp", "iat", "jti"], "verify_iat": False},
            )
        except jwt.InvalidAudienceError as exc:
            raise CdsAuthError("aud is not this service's URL") from exc
        except jwt.ExpiredSignatureError as exc:
            raise CdsAuthError("token expired") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise CdsAuthError(f"token lacks the {exc.claim} claim") from exc
        except jwt.InvalidSignatureError as exc:
            raise CdsAuthError(f"bad signature (issuer {client.issuer})") from exc
        except jwt.PyJWTError as exc:
            raise CdsAuthError(f"token refused: {type(exc).__name__}") from exc

    def _check_times(self, claims: dict[str, Any]) -> None:
        now, skew = self._now(), self._settings.clock_skew_seconds
        issued, expires = _time_claim(claims, "iat"), _time_claim(claims, "exp")
        not_before = _time_claim(claims, "nbf") if "nbf" in claims else None
        if issued > now + skew:
            raise CdsAuthError("iat is in the future")
        if not_before is not None and not_before > now + skew:
            raise CdsAuthError("nbf is in the future")
        if expires < now - skew:  # PyJWT checked too; said here again so no claim rests on one check
            raise CdsAuthError("token expired")
        if expires - issued > self._settings.max_token_seconds:
            raise CdsAuthError(f"token lifetime exp - iat over {self._settings.max_token_seconds} s")


def _time_claim(claims: dict[str, Any], name: str) -> float:
    """A NumericDate claim (RFC 7519: seconds since the epoch) as a finite number in 0..year 9999.

    Why so strict: NaN compares false with everything, so ``iat: NaN`` passed "not in the
    future" and made ``exp - iat`` NaN, which is never over the limit; a boolean is an int in
    Python (``true`` is 1); a string or null is no time at all.

    Raises:
        CdsAuthError: the claim is not such a number.
    """
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CdsAuthError(f"{name} is not a number")
    if not math.isfinite(value) or not 0 <= value <= _LATEST_TIME:
        raise CdsAuthError(f"{name} is not a finite time between 1970 and 9999")
    return float(value)
