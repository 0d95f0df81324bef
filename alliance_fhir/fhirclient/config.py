"""Connection settings of one FHIR server: where to connect, how to authenticate, how hard to push.

Resolved in this order: command-line options (never secrets), environment variables, then the
``[server]`` and ``[auth]`` tables of the config file (``./alliance-fhir.toml``, else
``$XDG_CONFIG_HOME/alliance-fhir/config.toml``; found and read once by :mod:`alliance_fhir._config_file`).
Secrets (tokens, passwords, private keys) come only from the environment or the file, so
they never land in shell history. What is not about the server (where the state lives, the
security labels to write) is added above, in ``server/``: its model extends :class:`ClientConfig`
and its loader is :func:`load_settings` with that model.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from .._config_file import ENV_PREFIX, ConfigFile, validate_settings
from ..errors import ConfigError

__all__ = [
    "AuthSettings",
    "ClientConfig",
    "ResultsConfig",
    "WRITE_MODES",
    "check_header_token",
    "check_no_controls",
    "load_results_settings",
    "load_settings",
]

WriteMode = Literal["auto", "transaction", "batch", "single", "search"]
WRITE_MODES: tuple[str, ...] = ("auto", "transaction", "batch", "single", "search")
# A page of 500 QuestionnaireResponses is 2-8 MB of JSON; 64 MiB leaves room for large forms.
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024


# RFC 9110 VCHAR: what a token may be made of to travel verbatim in an HTTP header (no space, no
# control character, nothing outside ASCII). RFC 6750's b64token is a subset; tokens some servers
# issue are not, so the whole visible range is accepted.
_VCHAR = re.compile(r"[\x21-\x7e]+")
# C0 and C1 controls and DEL: never part of a credential (RFC 7617 forbids them in user-pass).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_header_token(value: str, what: str) -> str:
    """``value`` without surrounding whitespace, when it can be sent verbatim in an HTTP header.

    A token is put into ``Authorization: Bearer ...`` as it is. A newline in it would split the
    header, and the HTTP library refuses it with the whole header (the secret) in its message;
    so it is refused here, at configuration time, with a message that names ``what`` and never
    holds the value. Whitespace around it (a trailing newline from a secrets file) is dropped.

    Raises:
        ValueError: empty, or a character that is not visible ASCII (a space, a control, non-ASCII).
    """
    token = value.strip()
    if not _VCHAR.fullmatch(token):
        raise ValueError(
            f"{what} must be visible ASCII characters only (no spaces, line breaks or other control "
            "characters; it is sent in an HTTP header); its value is not shown"
        )
    return token


def check_no_controls(value: str, what: str) -> str:
    """``value`` when it holds no control character (a line break, NUL, DEL, C1); kept as it is.

    For credentials and identifiers that are encoded before they travel (the basic-auth user and
    password, the SMART client id, key id and scope): a control character in them is a pasting
    mistake, refused now instead of failing at the server.

    Raises:
        ValueError: a control character (the message never holds the value).
    """
    if _CONTROL.search(value):
        raise ValueError(f"{what} must not contain line breaks or other control characters; its value is not shown")
    return value


class AuthSettings(BaseModel):
    """How to authenticate: none, a bearer token, HTTP basic, or SMART Backend Services."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["none", "bearer", "basic", "smart"] = "none"
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    client_id: str | None = None
    token_url: str | None = Field(
        default=None, description="SMART token endpoint; discovered from .well-known when absent."
    )
    private_key: SecretStr | None = Field(default=None, description="PEM text of the signing key.")
    private_key_file: Path | None = None
    key_id: str | None = None
    algorithm: Literal["RS384", "ES384"] = "RS384"
    scope: str = (
        "system/QuestionnaireResponse.read system/Observation.write system/Questionnaire.write system/CodeSystem.write"
    )
    token_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts a SMART token endpoint may be on, besides the FHIR server's own host (and token_url's).",
    )

    @field_validator("token", mode="before")
    @classmethod
    def _header_safe_token(cls, value: Any) -> Any:
        """The bearer token goes verbatim into a header: checked by :func:`check_header_token`."""
        return check_header_token(value, "the bearer token") if isinstance(value, str) else value

    @field_validator("username", "password", "client_id", "key_id", "scope", mode="before")
    @classmethod
    def _no_controls(cls, value: Any, info: ValidationInfo) -> Any:
        """Credentials and identifiers hold no control characters (:func:`check_no_controls`)."""
        return check_no_controls(value, f"the {info.field_name}") if isinstance(value, str) else value

    @field_validator("username")
    @classmethod
    def _basic_user(cls, value: str | None) -> str | None:
        """RFC 7617: the user-id of HTTP basic cannot contain a colon (it separates the password)."""
        if value is not None and ":" in value:
            raise ValueError("the basic-auth user name must not contain a colon; its value is not shown")
        return value


class ClientConfig(BaseModel):
    """Everything a client needs for one FHIR server.

    ``ENVIRONMENT`` maps the ``ALLIANCE_FHIR_*`` variables (without the prefix) to fields and
    ``OPTIONS`` names the command-line option of a field where it is not ``--field-name``: both
    are read by :func:`load_settings`, and a model that adds fields adds their names too.
    """

    model_config = ConfigDict(extra="forbid")
    ENVIRONMENT: ClassVar[dict[str, str]] = {
        "SERVER": "url",
        "TIMEOUT": "timeout",
        "CA_BUNDLE": "ca_bundle",
        "CONCURRENCY": "concurrency",
        "BATCH_SIZE": "batch_size",
        "PAGE_SIZE": "page_size",
        "MAX_PAGES": "max_pages",
        "VERIFY": "verify",
        "MAX_RETRY_SECONDS": "max_retry_seconds",
        "REQUEST_DEADLINE": "request_deadline",
        "MAX_RESPONSE_BYTES": "max_response_bytes",
        "CLOCK_TOLERANCE_SECONDS": "clock_tolerance_seconds",
        "WRITE_MODE": "write_mode",
    }
    OPTIONS: ClassVar[dict[str, str]] = {"url": "--server", "ca_bundle": "--ca-bundle"}

    url: str
    auth: AuthSettings = Field(default_factory=lambda: AuthSettings())
    timeout: float = Field(default=60.0, gt=0)
    verify: bool = True
    ca_bundle: Path | None = None
    concurrency: int = Field(default=4, ge=1, le=64)
    batch_size: int = Field(default=50, ge=1, le=1000)
    page_size: int = Field(default=200, ge=1, le=1000)
    max_pages: int = Field(
        default=10_000,
        ge=1,
        description="Most pages one search may take (2,000,000 responses at page_size 200); stops endless paging.",
    )
    max_attempts: int = Field(default=6, ge=1, le=20)
    max_retry_seconds: float = Field(default=300.0, gt=0)
    retry_after_cap: float = Field(default=120.0, ge=0)
    overlap_seconds: float = Field(
        default=300.0, ge=0, description="Re-read window before the checkpoint, for late commits."
    )
    request_deadline: float = Field(
        default=120.0, gt=0, description="Wall-clock limit of one HTTP exchange, body included."
    )
    max_response_bytes: int = Field(
        default=DEFAULT_MAX_RESPONSE_BYTES, ge=1024, description="Largest body accepted, after decompression."
    )
    clock_tolerance_seconds: float = Field(
        default=300.0, ge=0, description="How far ahead of our clock a server stamp may be."
    )
    write_mode: WriteMode = "auto"

    @field_validator("url")
    @classmethod
    def _plain_http_url(cls, value: str) -> str:
        """http(s) with a host, and no credentials: they would land in logs, shell history and ps."""
        return plain_http_url(value, "the server URL", "ALLIANCE_FHIR_USERNAME and ALLIANCE_FHIR_PASSWORD")

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")


def plain_http_url(value: str, what: str, variables: str) -> str:
    """``value`` stripped, when it is http(s) with a host and no credentials (``variables``: where they go instead).

    Raises:
        ValueError: another scheme, no host, or ``user:password@`` in it (the message never holds the URL).
    """
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{what} must start with http:// or https://")
    if "@" in parts.netloc:
        raise ValueError(f"{what} must not contain credentials (user:password@); use {variables} or the config file")
    if not parts.hostname:
        raise ValueError(f"{what} has no host")
    return value.strip()


class ResultsConfig(ClientConfig):
    """The results store's connection (``--results-server``, ``[results]``): where Observations,
    DetectedIssues and Tasks are written when that is not the server the responses are read from.

    Its credentials are its own (``[results.auth]``, ``ALLIANCE_FHIR_RESULTS_TOKEN`` ...): the
    source's are never sent to it, since the two are usually run by different parties (an EHR and
    a clinic's own HAPI). What is not given in ``[results]`` (timeouts, concurrency, batch size,
    write mode, TLS) is the source's setting.
    """

    ENVIRONMENT: ClassVar[dict[str, str]] = {
        "RESULTS_SERVER": "url",
        "RESULTS_CA_BUNDLE": "ca_bundle",
        "RESULTS_VERIFY": "verify",
        "RESULTS_TIMEOUT": "timeout",
        "RESULTS_WRITE_MODE": "write_mode",
    }
    OPTIONS: ClassVar[dict[str, str]] = {"url": "--results-server"}

    @field_validator("url")
    @classmethod
    def _plain_http_url(cls, value: str) -> str:
        """As for the source: no credentials in the URL (they would land in logs, shell history and ps)."""
        return plain_http_url(
            value, "the results server URL", "ALLIANCE_FHIR_RESULTS_USERNAME and ALLIANCE_FHIR_RESULTS_PASSWORD"
        )


Settings = TypeVar("Settings", bound=ClientConfig)


_ENV_AUTH = {
    "AUTH": "kind",
    "TOKEN": "token",
    "USERNAME": "username",
    "PASSWORD": "password",
    "CLIENT_ID": "client_id",
    "TOKEN_URL": "token_url",
    "PRIVATE_KEY": "private_key",
    "PRIVATE_KEY_FILE": "private_key_file",
    "KEY_ID": "key_id",
    "ALGORITHM": "algorithm",
    "SCOPE": "scope",
    "TOKEN_HOSTS": "token_hosts",
}


def load_settings(
    model: type[Settings], url: str | None = None, *, file: Path | ConfigFile | None = None, **overrides: Any
) -> Settings:
    """Build ``model`` (a :class:`ClientConfig`) from options, environment and the config file.

    ``file`` is the file already read (:class:`~alliance_fhir._config_file.ConfigFile`), or where
    to find it. Every value remembers where it came from, so an invalid one is blamed on its real
    source (``option --concurrency``, ``environment ALLIANCE_FHIR_TIMEOUT``, ``alliance-fhir.toml
    [server] timeout``). An unknown table or key in the file is an error, never ignored: ``[auht]``
    would otherwise silently drop every credential in it. A file holding secrets that group or
    others can read is warned about (``chmod 600``) when it is read.

    Raises:
        ConfigError: no server URL, an unreadable file, an unknown table or key, or an invalid setting.
    """
    loaded = ConfigFile.of(file)
    server, auth = loaded.table("server"), loaded.table("auth")
    sources = {**loaded.sources("server"), **loaded.sources("auth", under=("auth",))}
    for env, under, target in ((model.ENVIRONMENT, (), server), (_ENV_AUTH, ("auth",), auth)):
        for suffix, key in env.items():
            if f"{ENV_PREFIX}{suffix}" in os.environ:
                target[key] = os.environ[f"{ENV_PREFIX}{suffix}"]
                sources[(*under, key)] = f"environment {ENV_PREFIX}{suffix}"
    if isinstance(auth.get("token_hosts"), str):
        auth["token_hosts"] = [h.strip() for h in auth["token_hosts"].split(",") if h.strip()]
    for key, value in overrides.items():
        if value is not None:
            server[key] = value
            sources[(key,)] = f"option {model.OPTIONS.get(key, '--' + key.replace('_', '-'))}"
    if url:
        server["url"] = url
        sources[("url",)] = "option --server"
    if not server.get("url"):
        raise ConfigError(
            "no FHIR server: pass --server URL, set ALLIANCE_FHIR_SERVER, or add [server] url to alliance-fhir.toml"
        )
    return validate_settings(model, {**server, "auth": auth}, sources)


# The results store's credentials: the same names as the source's, with RESULTS_ after the prefix.
_ENV_RESULTS_AUTH = {f"RESULTS_{suffix}": key for suffix, key in _ENV_AUTH.items()}
# What the results store takes from the source's settings when [results] does not say (never its url or auth).
_INHERITED = tuple(name for name in ClientConfig.model_fields if name not in ("url", "auth"))


def load_results_settings(
    source: ClientConfig, url: str | None = None, *, file: Path | ConfigFile | None = None
) -> ResultsConfig | None:
    """The results store's settings, or None when none is named (one server: results go to the source).

    Named by ``--results-server`` (``url``), ``ALLIANCE_FHIR_RESULTS_SERVER`` or ``[results] url``;
    its credentials from ``ALLIANCE_FHIR_RESULTS_*`` or ``[results.auth]`` only (the source's are
    never reused); every other setting is ``[results]``'s, else the environment's, else the
    source's. A results URL equal to the source's is one server (None).

    Raises:
        ConfigError: an invalid setting (blamed on its source), e.g. a URL with credentials in it.
    """
    loaded = ConfigFile.of(file)
    table = loaded.table("results")
    auth = table.pop("auth", None) or {}
    if not isinstance(auth, dict):
        raise ConfigError(f"config file {loaded.path}: [results] auth must be a table ([results.auth])")
    auth = dict(auth)
    sources = {k: v for k, v in loaded.sources("results").items() if k != ("auth",)}
    sources.update({("auth", key): f"{loaded.path} [results.auth] {key}" for key in auth})
    for env, under, target in ((ResultsConfig.ENVIRONMENT, (), table), (_ENV_RESULTS_AUTH, ("auth",), auth)):
        for suffix, key in env.items():
            if f"{ENV_PREFIX}{suffix}" in os.environ:
                target[key] = os.environ[f"{ENV_PREFIX}{suffix}"]
                sources[(*under, key)] = f"environment {ENV_PREFIX}{suffix}"
    if isinstance(auth.get("token_hosts"), str):
        auth["token_hosts"] = [h.strip() for h in auth["token_hosts"].split(",") if h.strip()]
    if url:
        table["url"] = url
        sources[("url",)] = "option --results-server"
    if not table.get("url"):
        if auth or len(table) > 0:
            raise ConfigError(
                "results store settings without a URL: pass --results-server URL, set "
                "ALLIANCE_FHIR_RESULTS_SERVER, or add [results] url to alliance-fhir.toml"
            )
        return None
    inherited = {name: getattr(source, name) for name in _INHERITED if name not in table}
    results = validate_settings(ResultsConfig, {**inherited, **table, "auth": auth}, sources, prefix="results")
    return None if results.base_url == source.base_url else results
