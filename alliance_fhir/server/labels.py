"""The security labels written on every resource: the ``[labels]`` table, its variables and options.

The labels themselves (which codes, how they go into ``meta.security``) are
:class:`~alliance_fhir._security.SecurityLabels`; this is where a command finds the ones to use.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .._config_file import ENV_PREFIX, ConfigFile, validate_settings
from .._security import SecurityLabels
from ..errors import ConfigError

__all__ = ["LABELS_ENV", "LabelSettings", "load_labels"]

LABELS_ENV = {"confidentiality": f"{ENV_PREFIX}CONFIDENTIALITY", "sensitivity": f"{ENV_PREFIX}SENSITIVITY"}


class LabelSettings(BaseModel):
    """The ``[labels]`` table: a confidentiality code and sensitivity codes (checked as codes by
    :meth:`SecurityLabels.parse`; here only their shape)."""

    model_config = ConfigDict(extra="forbid")

    confidentiality: str | None = None
    sensitivity: list[str] = Field(default_factory=list)

    @field_validator("confidentiality", mode="before")
    @classmethod
    def _one_code(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError('a code (e.g. "R")')
        return value

    @field_validator("sensitivity", mode="before")
    @classmethod
    def _codes(cls, value: Any) -> Any:
        """One code, comma-separated codes (the environment's form) or a list of codes; none when empty."""
        if isinstance(value, str):
            return value.split(",")
        if value is None or (isinstance(value, list) and all(isinstance(c, str) for c in value)):
            return value or []
        raise ValueError('a code or a list of codes (e.g. ["PSY"])')


def load_labels(
    file: Path | ConfigFile | None = None,
    *,
    confidentiality: str | None = None,
    sensitivity: Sequence[str] | None = None,
) -> SecurityLabels:
    """The ``meta.security`` labels to write: option, else environment, else ``[labels]`` in the config file.

    ``[labels] confidentiality = "R"`` and ``sensitivity = ["PSY"]`` (a list, or one code);
    ``ALLIANCE_FHIR_CONFIDENTIALITY`` / ``ALLIANCE_FHIR_SENSITIVITY`` (comma-separated). They are
    codes, not secrets, so options may carry them. Nothing set: no labels. Sensitivity is taken
    from the same source as the confidentiality code when only that one is given on the command
    line (``--confidentiality R`` alone keeps the file's sensitivity). ``file`` is the file
    already read, or where to find it.

    Raises:
        ConfigError: an unreadable file, an unknown key in ``[labels]``, or a code that is not allowed.
    """
    loaded = ConfigFile.of(file)
    table, sources = loaded.table("labels"), loaded.sources("labels")
    unknown = sorted(set(table) - set(LABELS_ENV))
    if unknown:  # named as a key of the file: the environment and options cannot add one
        raise ConfigError(f"config file {loaded.path}: unknown key in [labels]: {', '.join(unknown)}")
    for key, env in LABELS_ENV.items():
        if env in os.environ:
            table[key], sources[(key,)] = os.environ[env], f"environment {env}"
    if confidentiality is not None:
        table["confidentiality"], sources[("confidentiality",)] = confidentiality, "option --confidentiality"
    if sensitivity is not None:
        table["sensitivity"], sources[("sensitivity",)] = list(sensitivity), "option --sensitivity"
    settings = validate_settings(LabelSettings, table, sources, prefix="labels")
    return SecurityLabels.parse(settings.confidentiality, settings.sensitivity)
