"""``serve``'s own settings (the ``[serve]`` table of the config file) and its webhook secret.

The secret is what the FHIR server sends back in every notification (``Authorization: Bearer
...`` from ``Subscription.channel.header``). It comes from ``ALLIANCE_FHIR_WEBHOOK_SECRET``, else
``[serve] webhook_secret`` in the config file, else it is generated once (256 bits) and kept in
the state database, whose file is then made private. It is never logged and never an option.

What it protects, and what not: whoever can read ``Subscription`` resources on the FHIR server
can read the header and so the secret. It grants nothing but "please re-check response X": the
service re-reads the response from the server with its own credentials, so a caller holding the
secret can at most make it re-score what is already there.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from .._config_file import ConfigFile, validate_settings
from ..errors import ConfigError
from ..fhirclient.config import check_header_token
from ..server.state import StateStore

__all__ = ["SECRET_ENV", "ServeSettings", "authorised", "load_serve_settings", "webhook_secret"]

SECRET_ENV = "ALLIANCE_FHIR_WEBHOOK_SECRET"
_SECRET_SETTING = "webhook_secret"
MIB = 1024 * 1024


class ServeSettings(BaseModel):
    """Tunables of the service; the defaults suit a clinic's server."""

    model_config = ConfigDict(extra="forbid")

    webhook_secret: SecretStr | None = None
    channel: Literal["rest-hook", "topic"] = Field(
        "rest-hook", description="classic R4 rest-hook, or an R5 Backport topic subscription"
    )
    safety_net_minutes: float = Field(15.0, gt=0, le=24 * 60, description="a full incremental sync this often")
    max_body_bytes: int = Field(MIB, ge=1024, le=64 * MIB)
    limit_concurrency: int = Field(32, ge=1, le=1024, description="connections served at once; more get 503")
    keep_alive_seconds: float = Field(5.0, gt=0, le=300)
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="a connection whose request line and headers are not complete this long after it opened "
        "(or after its previous answer) is closed: idle half-open connections cannot hold the service",
    )
    body_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="a request body not complete this long after its headers: the connection is closed",
    )
    start_retry_max_seconds: float = Field(
        60.0,
        ge=1,
        le=3600,
        description="the longest wait between attempts to reach the FHIR server at start "
        "(check, Subscription, catch-up); the waits double from 1 s up to this",
    )
    batch_size: int = Field(
        200,
        ge=1,
        le=500,
        description="hints re-read per round (written in batches of [server] batch_size, several in flight)",
    )
    max_attempts: int = Field(20, ge=1, le=1000, description="a hint that keeps failing is left to the safety net")
    stall_seconds: float = Field(
        60.0, gt=0, le=3600, description="healthz answers 503 when hints wait and none was handled for this long"
    )
    shutdown_seconds: float = Field(
        30.0, gt=0, le=600, description="grace for in-flight requests and writes on SIGTERM"
    )

    @field_validator("webhook_secret", mode="before")
    @classmethod
    def _header_safe(cls, value: object) -> object:
        """Checked when the file is read, before the state database is opened (see :func:`_checked`)."""
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not isinstance(value, str):
            return value
        try:
            return _checked(value, "[serve] webhook_secret")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


def load_serve_settings(file: Path | ConfigFile | None = None, **overrides: object) -> ServeSettings:
    """The ``[serve]`` table of the config file (the file already read, or where to find it), then overrides.

    Raises:
        ConfigError: unreadable file or invalid settings (each blamed on the file or the option).
    """
    _environment_secret()  # a bad secret is a configuration error now, before anything is opened
    loaded = ConfigFile.of(file)
    raw, sources = loaded.table("serve"), loaded.sources("serve")
    for key, value in overrides.items():
        if value is not None:
            raw[key], sources[(key,)] = value, f"option --{key.replace('_', '-')}"
    return validate_settings(ServeSettings, raw, sources, prefix="serve")


def webhook_secret(settings: ServeSettings, store: StateStore) -> SecretStr:
    """The secret: environment, config file, else the one generated once into the state database."""
    from_env = _environment_secret()
    if from_env:
        return SecretStr(from_env)
    if settings.webhook_secret is not None:
        return SecretStr(_checked(settings.webhook_secret.get_secret_value(), "[serve] webhook_secret"))
    return SecretStr(store.setting_once(_SECRET_SETTING, secrets.token_urlsafe(32)))


def _environment_secret() -> str | None:
    """``$ALLIANCE_FHIR_WEBHOOK_SECRET`` checked, or None when unset or blank (then the next source counts)."""
    value = os.environ.get(SECRET_ENV, "")
    return _checked(value, SECRET_ENV) if value.strip() else None


def authorised(header: str | None, secret: SecretStr) -> bool:
    """Whether an ``Authorization`` header carries the secret (constant-time comparison)."""
    expected = f"Bearer {secret.get_secret_value()}".encode()
    return hmac.compare_digest((header or "").encode("utf-8", "replace"), expected)


def _checked(value: str, source: str) -> str:
    """The secret without surrounding whitespace, when it can travel in a header and is long enough.

    The header rule is the one every secret follows (:func:`..fhirclient.config.check_header_token`);
    16 characters at least, so it cannot be guessed at no cost. The message never holds the value.
    """
    rule = (
        "the webhook secret must be at least 16 visible ASCII characters (no spaces, line breaks or other "
        "control characters); its value is not shown"
    )
    try:
        secret = check_header_token(value, "the webhook secret")
    except ValueError:
        raise ConfigError(f"{source}: {rule}") from None
    if len(secret) < 16:
        raise ConfigError(f"{source}: {rule}")
    return secret
