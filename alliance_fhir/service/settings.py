"""``serve``'s own settings (the ``[serve]`` table of the config file), its webhook secret and its event signing key.

The secret is what the FHIR server sends back in every notification (``Authorization: Bearer
...`` from ``Subscription.channel.header``). It comes from ``ALLIANCE_FHIR_WEBHOOK_SECRET``, else
``[serve] webhook_secret`` in the config file, else it is generated once (256 bits) and kept in
the state database, whose file is then made private. It is never logged and never an option.

What it protects, and what not: whoever can read ``Subscription`` resources on the FHIR server
can read the header and so the secret. It grants nothing but "please re-check response X": the
service re-reads the response from the server with its own credentials, so a caller holding the
secret can at most make it re-score what is already there.

The event signing key is for an EHR's own event platform that signs its notifications instead
of sending a header back (athenahealth: :mod:`.signing`). It comes from
``ALLIANCE_FHIR_EVENT_SIGNING_KEY``, else ``[serve] event_signing_key``; it is never generated
(the site gives the same value to the EHR when it creates the Subscription there), never an
option, never logged. With a key, every notification must be signed; the webhook secret is then
required too only when one was configured (environment or file), since the EHR's platform
sends no ``Authorization`` header of ours.

``mode`` says how serve learns of new responses: ``subscription`` (notifications, with the
safety-net sync every ``safety_net_minutes`` underneath) or ``poll`` (no Subscription at all: the
same sync every ``safety_net_minutes`` is the path, for EHRs without FHIR Subscriptions, Epic's).
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from .._config_file import ConfigFile, validate_settings
from ..errors import ConfigError
from ..fhirclient.config import check_header_token
from ..server.state import StateStore
from .signing import EventSigning, SignatureMethod

__all__ = [
    "KEY_ENV",
    "SECRET_ENV",
    "ServeSettings",
    "authorised",
    "configured_webhook_secret",
    "event_signing",
    "load_serve_settings",
    "webhook_secret",
]

SECRET_ENV = "ALLIANCE_FHIR_WEBHOOK_SECRET"
KEY_ENV = "ALLIANCE_FHIR_EVENT_SIGNING_KEY"
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")  # an HTTP field name (RFC 9110 token)
_SECRET_SETTING = "webhook_secret"
MIB = 1024 * 1024


class ServeSettings(BaseModel):
    """Tunables of the service; the defaults suit a clinic's server."""

    model_config = ConfigDict(extra="forbid")

    webhook_secret: SecretStr | None = None
    mode: Literal["subscription", "poll"] = Field(
        "subscription",
        description="subscription: notifications, with the safety-net sync underneath; "
        "poll: no Subscription, the sync every safety_net_minutes is the path (EHRs without Subscriptions)",
    )
    event_signing_key: SecretStr | None = None
    event_signature_header: str = Field(
        "X-Hub-Signature",  # https://github.com/athenahealth/aone-fhir-subscriptions#verifying-message-authenticity
        description="the header carrying <method>=<hex HMAC of the body> (athenahealth, WebSub)",
    )
    event_signature_method: SignatureMethod = Field(
        "sha256",  # same README: "At present events will be signed using the sha256 method"
        description="the HMAC hash the signature must name (a header naming another is refused)",
    )
    event_max_age_minutes: float = Field(
        90.0,
        gt=0,
        le=7 * 24 * 60,
        description="a signed notification whose Bundle.timestamp is older is refused (replay window)",
    )
    max_events_per_notification: int = Field(
        1000, ge=1, le=100_000, description="a notification naming more events is refused whole (413)"
    )
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

    @field_validator("webhook_secret", "event_signing_key", mode="before")
    @classmethod
    def _header_safe(cls, value: object, info: ValidationInfo) -> object:
        """Checked when the file is read, before the state database is opened (see :func:`_checked`)."""
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not isinstance(value, str):
            return value
        try:
            return _checked(value, f"[serve] {info.field_name}", _WHAT[str(info.field_name)])
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("event_signature_header")
    @classmethod
    def _field_name(cls, value: str) -> str:
        if not _HEADER_NAME.fullmatch(value):
            raise ValueError("an HTTP header name (letters, digits and - at most, 1-64 characters)")
        return value

    @property
    def polling(self) -> bool:
        """Whether the sync every ``safety_net_minutes`` is the only path (no Subscription is managed)."""
        return self.mode == "poll"


def load_serve_settings(file: Path | ConfigFile | None = None, **overrides: object) -> ServeSettings:
    """The ``[serve]`` table of the config file (the file already read, or where to find it), then overrides.

    Raises:
        ConfigError: unreadable file or invalid settings (each blamed on the file or the option).
    """
    _environment_secret()  # a bad secret or key is a configuration error now, before anything is opened
    _environment_key()
    loaded = ConfigFile.of(file)
    raw, sources = loaded.table("serve"), loaded.sources("serve")
    for key, value in overrides.items():
        if value is not None:
            raw[key], sources[(key,)] = value, f"option --{key.replace('_', '-')}"
    return validate_settings(ServeSettings, raw, sources, prefix="serve")


def webhook_secret(settings: ServeSettings, store: StateStore) -> SecretStr:
    """The secret: environment, config file, else the one generated once into the state database."""
    configured = configured_webhook_secret(settings)
    if configured is not None:
        return configured
    return SecretStr(store.setting_once(_SECRET_SETTING, secrets.token_urlsafe(32)))


def configured_webhook_secret(settings: ServeSettings) -> SecretStr | None:
    """The secret the site configured (environment, else config file); None when it configured none."""
    from_env = _environment_secret()
    if from_env:
        return SecretStr(from_env)
    if settings.webhook_secret is not None:
        return SecretStr(_checked(settings.webhook_secret.get_secret_value(), "[serve] webhook_secret"))
    return None


def event_signing(settings: ServeSettings) -> EventSigning | None:
    """How notifications must be signed: the key (environment, else config file) and the header settings; None without a key."""
    key = _environment_key()
    if key is None and settings.event_signing_key is not None:
        key = _checked(
            settings.event_signing_key.get_secret_value(), "[serve] event_signing_key", _WHAT["event_signing_key"]
        )
    if key is None:
        return None
    return EventSigning(
        SecretStr(key),
        header=settings.event_signature_header,
        method=settings.event_signature_method,
        max_age=timedelta(minutes=settings.event_max_age_minutes),
    )


def _environment_secret() -> str | None:
    """``$ALLIANCE_FHIR_WEBHOOK_SECRET`` checked, or None when unset or blank (then the next source counts)."""
    value = os.environ.get(SECRET_ENV, "")
    return _checked(value, SECRET_ENV) if value.strip() else None


def _environment_key() -> str | None:
    """``$ALLIANCE_FHIR_EVENT_SIGNING_KEY`` checked, or None when unset or blank."""
    value = os.environ.get(KEY_ENV, "")
    return _checked(value, KEY_ENV, _WHAT["event_signing_key"]) if value.strip() else None


def authorised(header: str | None, secret: SecretStr) -> bool:
    """Whether an ``Authorization`` header carries the secret (constant-time comparison)."""
    expected = f"Bearer {secret.get_secret_value()}".encode()
    return hmac.compare_digest((header or "").encode("utf-8", "replace"), expected)


_WHAT = {"webhook_secret": "the webhook secret", "event_signing_key": "the event signing key"}


def _checked(value: str, source: str, what: str = "the webhook secret") -> str:
    """The secret without surrounding whitespace, when it can travel in a header and is long enough.

    The header rule is the one every secret follows (:func:`..fhirclient.config.check_header_token`);
    16 characters at least, so it cannot be guessed at no cost. The signing key follows the same
    rule: athenahealth takes it in the ``X-Hub-Secret`` header. The message never holds the value.
    """
    rule = (
        f"{what} must be at least 16 visible ASCII characters (no spaces, line breaks or other "
        "control characters); its value is not shown"
    )
    try:
        secret = check_header_token(value, what)
    except ValueError:
        raise ConfigError(f"{source}: {rule}") from None
    if len(secret) < 16:
        raise ConfigError(f"{source}: {rule}")
    return secret
