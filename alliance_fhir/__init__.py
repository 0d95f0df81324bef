"""alliance-fhir: psychotherapy alliance measures in FHIR.

Instruments are data (a Questionnaire and a mapping per instrument); responses are scored
exactly as the authors publish and written as score Observations.

The public API is exactly ``__all__`` below (``docs/api.md`` documents it; the tests pin it):
the catalog, scoring and Observations, publishable content and the FHIR package, signals, and
the server use cases (client, settings, sync, signals, publish) with their options and
reports. Everything else - the subpackages' modules, ``_``-prefixed modules, names not listed
here - is internal: its import path may change in any release before 1.0.
"""

from __future__ import annotations

import importlib
import typing

from ._version import installed_version as _installed_version
from .content.definitions import definition_resources
from .content.extraction import extraction_problems
from .content.package import build_package, package_resources, write_package
from .content.questionnaires import (
    apply_text_packs,
    content_resources,
    load_text_pack,
    text_pack_template,
    write_content,
)
from .errors import (
    AllianceFhirError,
    AuthError,
    ConfigError,
    Conflict,
    FhirServerError,
    FhirTransportError,
    FhirValidationError,
    InputError,
    InstrumentError,
    NotFound,
    ScoringError,
    StateError,
    TextPackError,
)
from .fhirtypes import validate_resource
from .instruments.catalog import Catalog, Instrument, data_root, load_catalog
from .instruments.models import InstrumentMapping, TextPack
from .instruments.schema import mapping_json_schema
from .scoring.engine import score_response
from .scoring.inputs import read_inputs
from .scoring.observations import build_observation, collection_bundle, observation_identifier
from .scoring.offline import Outcome, score_records
from .scoring.results import ScaleScore, ScoreResult
from .signals.resources import detected_issue, signal_bundle, signal_resources
from .signals.rules import Signal, detect_signals
from .signals.trajectory import ScorePoint, Series, Trajectories, build_trajectories, context_from_encounters, unbundle

if typing.TYPE_CHECKING:
    from .fhirclient.client import FhirClient
    from .fhirclient.config import AuthSettings
    from .server.publish import PublishResult, publish_resources
    from .server.settings import ServerConfig, load_config
    from .server.signal_sync import SignalReport, fetch_trajectories, run_signals
    from .server.state import StateStore
    from .server.sync import SyncFailure, SyncOptions, SyncReport, run_sync

# The server use cases load on first use (PEP 562): importing them pulls in httpx and the
# transport, which offline scoring never needs (6 % of a 50,000-response `score` run). Each name
# maps to the module that defines it; keep this table and the TYPE_CHECKING block above in step.
_LAZY: dict[str, str] = {
    "FhirClient": ".fhirclient.client",
    "AuthSettings": ".fhirclient.config",
    "ServerConfig": ".server.settings",
    "load_config": ".server.settings",
    "PublishResult": ".server.publish",
    "publish_resources": ".server.publish",
    "SignalReport": ".server.signal_sync",
    "fetch_trajectories": ".server.signal_sync",
    "run_signals": ".server.signal_sync",
    "StateStore": ".server.state",
    "SyncFailure": ".server.sync",
    "SyncOptions": ".server.sync",
    "SyncReport": ".server.sync",
    "run_sync": ".server.sync",
}


def _load_lazy(name: str) -> object:
    """Import the module behind a lazy public name on first access and keep the name here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value: object = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def _public_dir() -> list[str]:
    """``dir()`` lists the lazy names too, before they are loaded."""
    return sorted(set(globals()) | set(_LAZY))


# Defined for the interpreter only: a module ``__getattr__`` visible to type checkers would
# make every misspelt ``alliance_fhir.X`` type-check as ``object`` in a user's code.
if not typing.TYPE_CHECKING:
    __getattr__ = _load_lazy
    __dir__ = _public_dir

__version__ = _installed_version()

__all__ = [
    "AllianceFhirError",
    "AuthError",
    "AuthSettings",
    "Catalog",
    "ConfigError",
    "Conflict",
    "FhirClient",
    "FhirServerError",
    "FhirTransportError",
    "FhirValidationError",
    "InputError",
    "Instrument",
    "InstrumentError",
    "InstrumentMapping",
    "NotFound",
    "Outcome",
    "PublishResult",
    "ScaleScore",
    "ScorePoint",
    "ScoreResult",
    "ScoringError",
    "Series",
    "ServerConfig",
    "Signal",
    "SignalReport",
    "StateError",
    "StateStore",
    "SyncFailure",
    "SyncOptions",
    "SyncReport",
    "TextPack",
    "TextPackError",
    "Trajectories",
    "__version__",
    "apply_text_packs",
    "build_observation",
    "build_package",
    "build_trajectories",
    "collection_bundle",
    "content_resources",
    "context_from_encounters",
    "data_root",
    "definition_resources",
    "detect_signals",
    "detected_issue",
    "extraction_problems",
    "fetch_trajectories",
    "load_catalog",
    "load_config",
    "load_text_pack",
    "mapping_json_schema",
    "observation_identifier",
    "package_resources",
    "publish_resources",
    "read_inputs",
    "run_signals",
    "run_sync",
    "score_records",
    "score_response",
    "signal_bundle",
    "signal_resources",
    "text_pack_template",
    "unbundle",
    "validate_resource",
    "write_content",
    "write_package",
]
