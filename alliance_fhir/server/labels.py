"""The security labels written on every resource: the ``[labels]`` table, its variables and options.

The labels themselves (which codes, how they go into ``meta.security``) are
:class:`~alliance_fhir._security.SecurityLabels`; this is where a command finds the ones to use.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._security import SecurityLabels
from ..errors import ConfigError
from ..fhirclient.config import ENV_PREFIX, config_file, read_config_file

__all__ = ["LABELS_ENV", "load_labels"]

LABELS_ENV = {"confidentiality": f"{ENV_PREFIX}CONFIDENTIALITY", "sensitivity": f"{ENV_PREFIX}SENSITIVITY"}


def load_labels(
    file: Path | None = None, *, confidentiality: str | None = None, sensitivity: Sequence[str] | None = None
) -> SecurityLabels:
    """The ``meta.security`` labels to write: option, else environment, else ``[labels]`` in the config file.

    ``[labels] confidentiality = "R"`` and ``sensitivity = ["PSY"]`` (a list, or one code);
    ``ALLIANCE_FHIR_CONFIDENTIALITY`` / ``ALLIANCE_FHIR_SENSITIVITY`` (comma-separated). They are
    codes, not secrets, so options may carry them. Nothing set: no labels. Sensitivity is taken
    from the same source as the confidentiality code when only that one is given on the command
    line (``--confidentiality R`` alone keeps the file's sensitivity).

    Raises:
        ConfigError: an unreadable file, an unknown key in ``[labels]``, or a code that is not allowed.
    """
    table: dict[str, Any] = {}
    path = config_file(file)
    if path is not None:
        table = dict(read_config_file(path).get("labels", {}))
        unknown = sorted(set(table) - set(LABELS_ENV))
        if unknown:
            raise ConfigError(f"config file {path}: unknown key in [labels]: {', '.join(unknown)}")
    for key, env in LABELS_ENV.items():
        if env in os.environ:
            table[key] = os.environ[env]
    if confidentiality is not None:
        table["confidentiality"] = confidentiality
    if sensitivity is not None:
        table["sensitivity"] = list(sensitivity)
    codes = table.get("sensitivity") or []
    if isinstance(codes, str):
        codes = codes.split(",")
    if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
        raise ConfigError('[labels] sensitivity: a code or a list of codes (e.g. ["PSY"])')
    conf = table.get("confidentiality")
    if conf is not None and not isinstance(conf, str):
        raise ConfigError('[labels] confidentiality: a code (e.g. "R")')
    return SecurityLabels.parse(conf, codes)
