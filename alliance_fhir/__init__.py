"""alliance-fhir: psychotherapy alliance measures in FHIR.

Instruments are data (a Questionnaire and a mapping per instrument); responses are scored
exactly as the authors publish and written as score Observations.
"""

from __future__ import annotations

from ._version import installed_version as _installed_version
from .content.package import build_package, package_resources, write_package
from .content.questionnaires import apply_text_packs, content_resources, load_text_pack
from .errors import (
    AllianceFhirError,
    FhirValidationError,
    InputError,
    InstrumentError,
    ScoringError,
    TextPackError,
)
from .fhirtypes import validate_resource
from .instruments.catalog import Catalog, Instrument, data_root, load_catalog
from .instruments.models import InstrumentMapping, TextPack
from .scoring.engine import score_response
from .scoring.inputs import read_inputs
from .scoring.observations import build_observation, collection_bundle, observation_identifier
from .scoring.offline import Outcome, score_records
from .scoring.results import ScaleScore, ScoreResult
from .signals.resources import detected_issue, signal_bundle, signal_resources
from .signals.rules import Signal, detect_signals
from .signals.trajectory import ScorePoint, Series, Trajectories, build_trajectories, context_from_encounters, unbundle

__version__ = _installed_version()

__all__ = [
    "AllianceFhirError",
    "Catalog",
    "FhirValidationError",
    "InputError",
    "Instrument",
    "InstrumentError",
    "InstrumentMapping",
    "Outcome",
    "ScaleScore",
    "ScoreResult",
    "ScorePoint",
    "ScoringError",
    "Series",
    "Signal",
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
    "detect_signals",
    "detected_issue",
    "load_catalog",
    "load_text_pack",
    "observation_identifier",
    "package_resources",
    "read_inputs",
    "score_records",
    "score_response",
    "signal_bundle",
    "signal_resources",
    "unbundle",
    "validate_resource",
    "write_package",
]
