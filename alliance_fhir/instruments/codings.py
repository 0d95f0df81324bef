"""The FHIR pieces every score resource shares, built in one place from the mapping.

A score Observation (:mod:`alliance_fhir.scoring.observations`), the ObservationDefinition of the
same score (:mod:`alliance_fhir.content.definitions`) and the Questionnaire's score item
(:mod:`alliance_fhir.content.extraction`) must say the same unit and the same method; they sit in
sibling subpackages, so the builders live here, below both.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .._ids import PROJECT_CODESYSTEM, UCUM
from .models import InstrumentMapping

__all__ = ["SCORE_UNIT", "method_coding", "score_quantity"]

SCORE_UNIT: dict[str, str] = {"system": UCUM, "code": "{score}", "display": "{score}"}
"""The UCUM ``{score}`` unit as a Coding (Questionnaire ``questionnaire-unit``, ObservationDefinition)."""


def score_quantity(value: Decimal | float) -> dict[str, Any]:
    """A score as a FHIR Quantity in UCUM ``{score}``.

    A Decimal keeps its written precision ('46' -> 46, a prorated '46.0' -> 46.0); a float that is
    whole becomes an int (range bounds and cutoffs: 46.0 -> 46).
    """
    number: int | float
    if isinstance(value, Decimal):
        exponent = value.as_tuple().exponent
        number = int(value) if isinstance(exponent, int) and exponent >= 0 else float(value)
    else:
        number = int(value) if float(value).is_integer() else value
    return {"value": number, "unit": "{score}", "system": UCUM, "code": "{score}"}


def method_coding(mapping: InstrumentMapping) -> dict[str, str]:
    """The scoring-method Coding: our CodeSystem's ``<instrument>-scoring``, versioned by the
    mapping's ``algorithm_version`` (which also enters every Observation identifier)."""
    return {
        "system": PROJECT_CODESYSTEM,
        "code": f"{mapping.instrument}-scoring",
        "version": mapping.algorithm_version,
        "display": f"{mapping.name} scoring algorithm",
    }
