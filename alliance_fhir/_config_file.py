"""The config file, read once: found, parsed and checked here; each layer validates its own table.

One TOML file holds six tables. Each belongs to the layer that uses it and is validated by that
layer's model: ``[server]`` and ``[auth]`` by the transport's ``ClientConfig`` (extended by
``server/settings.py``), ``[results]`` (with ``[results.auth]``: the results store) by its
``ResultsConfig``, ``[labels]`` by ``server/labels.py``, ``[serve]`` and ``[cds]`` by the
service. What they share lives here, below every layer: finding the file, parsing it once into a
:class:`ConfigFile` that a command passes to each loader, refusing a table the file may not have,
warning when it holds secrets others can read, and validating a table (with its environment
variables and options) so that a bad value is blamed on where it came from.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import ConfigError, summarise_validation

__all__ = [
    "ENV_PREFIX",
    "SECRETS",
    "TABLES",
    "ConfigFile",
    "Sources",
    "find_config_file",
    "validate_settings",
    "warn_if_readable",
]

ENV_PREFIX = "ALLIANCE_FHIR_"
TABLES = ("server", "auth", "results", "serve", "cds", "labels")
# The keys that hold secrets, by table: a file holding any of them should be private (chmod 600).
# A dotted name is a table inside a table ([results.auth]).
SECRETS: dict[str, tuple[str, ...]] = {
    "auth": ("token", "password", "private_key"),
    "results.auth": ("token", "password", "private_key"),
    "serve": ("webhook_secret", "event_signing_key"),
}
logger = logging.getLogger(__name__)
Model = TypeVar("Model", bound=BaseModel)
# Where each value of a model came from, by its location in the model: ("auth", "token") ->
# "environment ALLIANCE_FHIR_TOKEN". Read by summarise_validation to blame a bad value.
Sources = dict[tuple[str, ...], str]


def find_config_file(explicit: Path | None = None) -> Path | None:
    """The config file in use: explicit, ``./alliance-fhir.toml``, or the user config dir."""
    if explicit is not None:
        return explicit
    candidates = [Path("alliance-fhir.toml")]
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    candidates.append(Path(xdg) / "alliance-fhir" / "config.toml")
    return next((p for p in candidates if p.is_file()), None)


@dataclass(frozen=True)
class ConfigFile:
    """The tables of the config file, parsed and checked once (``path`` None: there is no file).

    A command reads it once (:meth:`read`) and hands it to every loader it calls; a loader given
    a path instead reads it itself (:meth:`of`), for library callers that load one thing.
    """

    path: Path | None = None
    tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def read(cls, explicit: Path | None = None) -> ConfigFile:
        """The file at ``explicit``, else the one :func:`find_config_file` finds, else an empty one.

        Warns (once, here) when the file holds secrets and its group or others can read it.

        Raises:
            ConfigError: unreadable, not TOML, an unknown table or top-level key, or a key that is not a table.
        """
        path = find_config_file(explicit)
        if path is None:
            return cls()
        loaded = cls(path, _parse(path))
        loaded.warn_if_readable()
        return loaded

    @classmethod
    def of(cls, file: Path | ConfigFile | None) -> ConfigFile:
        """``file`` when it is already read, else :meth:`read` of it."""
        return file if isinstance(file, ConfigFile) else cls.read(file)

    def table(self, name: str) -> dict[str, Any]:
        """A copy of table ``[name]`` (empty when the file has none), for a loader to add to."""
        return dict(self.tables.get(name, {}))

    def sources(self, name: str, under: tuple[str, ...] = ()) -> Sources:
        """Where each key of ``[name]`` came from (``alliance-fhir.toml [server] timeout``), at ``under`` in the model."""
        return {(*under, key): f"{self.path} [{name}] {key}" for key in self.tables.get(name, {})}

    def warn_if_readable(self) -> None:
        """Name the secrets the file holds (never their values) when others can read it."""
        held = [
            f"[{table}] {', '.join(found)}"
            for table, keys in SECRETS.items()
            if (found := [key for key in keys if self._at(table).get(key)])
        ]
        if held and self.path is not None:
            warn_if_readable(self.path, f"holds secrets ({'; '.join(held)})")

    def _at(self, dotted: str) -> Mapping[str, Any]:
        """The table at a dotted name (``results.auth``), empty when absent or not a table."""
        found: Any = self.tables
        for part in dotted.split("."):
            found = found.get(part, {}) if isinstance(found, Mapping) else {}
        return found if isinstance(found, Mapping) else {}


def _parse(path: Path) -> dict[str, Any]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    for key, value in raw.items():
        if key not in TABLES:
            kind = "table" if isinstance(value, dict) else "key"
            raise ConfigError(
                f"config file {path}: unknown {kind} {'[' + key + ']' if kind == 'table' else repr(key)} "
                "(the file has tables [server], [auth], [results], [serve], [cds] and [labels] only)"
            )
        if not isinstance(value, dict):
            raise ConfigError(f"config file {path}: '{key}' must be a table ([{key}])")
    return raw


def validate_settings(model: type[Model], values: dict[str, Any], sources: Sources, *, prefix: str = "") -> Model:
    """``model`` from ``values``; an invalid one is one ConfigError blaming each bad value's source.

    ``prefix`` names the table in the message when the model is one table (``serve.batch_size``).

    Raises:
        ConfigError: ``invalid settings: field: reason (from source); ...``.
    """
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        # from None: pydantic's own text shows the input values, and some of them are secrets
        raise ConfigError("invalid settings: " + summarise_validation(exc, sources=sources, prefix=prefix)) from None


def warn_if_readable(path: Path, what: str) -> None:
    """Log a warning when ``path`` (which holds secrets) can be read by its group or by others."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & 0o077:
        logger.warning(
            "%s %s but is readable by %s (mode %s): run chmod 600 %s",
            path,
            what,
            "others" if mode & 0o007 else "its group",
            oct(mode & 0o777)[2:],
            path,
        )
