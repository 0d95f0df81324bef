"""The settings the commands run with: the FHIR servers' connections, and where the state lives.

The connection (:class:`~alliance_fhir.fhirclient.config.ClientConfig`) is the transport's; the
state location is this layer's, since the state store is. Both come from the same ``[server]``
table, environment and options, read once by :func:`load_config`. The results store (where
Observations, DetectedIssues and Tasks go, when that is not the source: ``--results-server``,
``[results]``) rides along as ``ServerConfig.results``; :meth:`ServerConfig.results_settings` is
the one place that says which connection results use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from .._config_file import ConfigFile
from ..errors import ConfigError
from ..fhirclient.config import ClientConfig, ResultsConfig, load_results_settings, load_settings
from ._statedb import parse_location

__all__ = ["ServerConfig", "data_dir", "load_config"]


class ServerConfig(ClientConfig):
    """Everything a client needs for one FHIR server, and where the sync state lives."""

    ENVIRONMENT: ClassVar[dict[str, str]] = {
        **ClientConfig.ENVIRONMENT,
        "STATE_DB": "state_db",
        "READ_MODE": "read_mode",
        "PATIENTS": "patients",
    }
    OPTIONS: ClassVar[dict[str, str]] = {**ClientConfig.OPTIONS, "state_db": "--state"}

    state_db: str | None = Field(
        default=None, description="SQLite state file, or a postgresql:// URL shared by several workers."
    )
    read_mode: Literal["search", "patients", "export"] = Field(
        default="search",
        description="How sync reads responses: server-wide search, per patient of `patients`, or Group $export "
        "of `patients` (docs/sync.md).",
    )
    patients: str | None = Field(
        default=None,
        description="read_mode patients: Group/ID, List/ID or a file of patient references; export: Group/ID.",
    )
    results: ResultsConfig | None = Field(
        default=None, description="The results store, when it is not this server (set by load_config, not a key)."
    )

    def results_settings(self) -> ClientConfig:
        """The connection results are written to and read from: the results store, else this server."""
        return self.results if self.results is not None else self

    @property
    def results_url(self) -> str:
        """The results store's base URL (this server's own when there is one server)."""
        return self.results_settings().base_url

    @property
    def two_servers(self) -> bool:
        """Whether results go to a store other than the source."""
        return self.results is not None

    @field_validator("state_db")
    @classmethod
    def _state_location(cls, value: str | None) -> str | None:
        """Checked when the settings are read (before any file is made): see ``parse_location``."""
        if value is not None:
            try:
                parse_location(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

    def state_location(self) -> Path | str:
        """Where the sync state lives: a ``postgresql://`` URL, a SQLite file, or the default file."""
        if self.state_db is None:
            return data_dir() / "state.sqlite"
        return parse_location(self.state_db)


def data_dir() -> Path:
    """Where sync state lives by default (``$XDG_DATA_HOME/alliance-fhir``)."""
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "alliance-fhir"


def load_config(
    url: str | None = None,
    *,
    file: Path | ConfigFile | None = None,
    results_server: str | None = None,
    **overrides: Any,
) -> ServerConfig:
    """Build the ServerConfig from options, environment and file (a path, or the file already read).

    ``results_server`` is ``--results-server``; with it, ``ALLIANCE_FHIR_RESULTS_SERVER`` or
    ``[results] url``, results go to that store (:func:`~alliance_fhir.fhirclient.config.load_results_settings`).

    Every value remembers where it came from, so an invalid one is blamed on its real source
    (``option --concurrency``, ``environment ALLIANCE_FHIR_TIMEOUT``, ``alliance-fhir.toml [server]
    timeout``). An unknown table or key in the file is an error, never ignored: ``[auht]`` would
    otherwise silently drop every credential in it. A file holding secrets that group or others
    can read is warned about (``chmod 600``).

    Raises:
        ConfigError: no server URL, an unreadable file, an unknown table or key, or an invalid setting.
    """
    loaded = ConfigFile.of(file)
    if "results" in overrides or "results" in loaded.table("server"):
        raise ConfigError("the results store is named by --results-server or the [results] table, not in [server]")
    source = load_settings(ServerConfig, url, file=loaded, **overrides)
    results = load_results_settings(source, results_server, file=loaded)
    return source if results is None else source.model_copy(update={"results": results})
