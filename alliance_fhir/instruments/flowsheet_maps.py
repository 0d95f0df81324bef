"""A site's flowsheet map: which of the EHR's flowsheet rows each of our score codes is written to.

An EHR that accepts Observations only in its own shape (Epic: vital-sign-shaped flowsheet rows,
api 963) needs each score written with the site's row code. The site builds the rows and keeps
this map (a JSON file, ``[writeback] flowsheet_map``); it is data, checked like the mappings:

- its shape by :class:`FlowsheetMap` (and ``flowsheet-maps/flowsheet-map.schema.json``,
  generated from it);
- against the catalog by :func:`check_flowsheet_map`: every row names a score code of a known
  instrument, no code or row twice, and an instrument the map names is mapped whole (every
  scale), since a flowsheet missing a part of the alliance would let a fall go unseen.

A map with any problem is refused with one line naming the file, the code and the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError, summarise_validation
from .models import InstrumentMapping

__all__ = [
    "FLOWSHEET_MAP_SCHEMA_ID",
    "FlowsheetMap",
    "FlowsheetRow",
    "check_flowsheet_map",
    "flowsheet_map_json_schema",
    "load_flowsheet_map",
]

FLOWSHEET_MAP_SCHEMA_ID = "http://alliance-fhir.org/schema/flowsheet-map.schema.json"
_OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


class FlowsheetRow(BaseModel):
    """One of our score codes and the site's row it is written to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    score: str = Field(
        min_length=1, description="Our score code, e.g. 'srs-total' (a scale's first code in the mapping)."
    )
    system: str = Field(min_length=1, description="The site's code system for its flowsheet rows.")
    code: str = Field(min_length=1, description="The site's row code (Epic: the flowsheet row id).")
    display: str | None = None
    unit: str | None = Field(default=None, description="The unit the row takes; '{score}' when left out.")

    def coding(self) -> dict[str, str]:
        found = {"system": self.system, "code": self.code}
        if self.display:
            found["display"] = self.display
        return found


class FlowsheetMap(BaseModel):
    """The site's map of our score codes to its flowsheet rows (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_ref: str | None = Field(default=None, alias="$schema")
    site: str = Field(min_length=1, description="Whose rows these are (a site or build name), for messages.")
    category_system: str = Field(
        default=_OBSERVATION_CATEGORY, description="The category the EHR files the rows under."
    )
    category: str = Field(default="vital-signs", description="Its code: 'vital-signs' unless the site says otherwise.")
    rows: list[FlowsheetRow] = Field(min_length=1)

    def row_for(self, score: str) -> FlowsheetRow | None:
        return next((row for row in self.rows if row.score == score), None)

    def category_concept(self) -> dict[str, Any]:
        return {"coding": [{"system": self.category_system, "code": self.category}]}


def flowsheet_map_json_schema() -> dict[str, Any]:
    """The flowsheet-map files' JSON Schema (draft 2020-12, as pydantic writes it)."""
    schema = FlowsheetMap.model_json_schema(by_alias=True)
    schema["$id"] = FLOWSHEET_MAP_SCHEMA_ID
    schema["title"] = "alliance-fhir flowsheet map (our score codes -> a site's flowsheet rows)"
    return schema


def check_flowsheet_map(flowsheet: FlowsheetMap, mappings: Iterable[InstrumentMapping], source: str) -> list[str]:
    """Every problem of ``flowsheet`` against the instruments, one sentence each (empty: it is whole)."""
    by_code = {scale.codes[0].code: (m, scale.id) for m in mappings for scale in m.scales}
    problems: list[str] = []
    seen_codes: set[str] = set()
    seen_rows: set[tuple[str, str]] = set()
    named: dict[str, InstrumentMapping] = {}
    for row in flowsheet.rows:
        if row.score in seen_codes:
            problems.append(f"{source}: score {row.score!r} is mapped twice")
        if (row.system, row.code) in seen_rows:
            problems.append(f"{source}: row {row.code!r} receives two scores")
        seen_codes.add(row.score)
        seen_rows.add((row.system, row.code))
        found = by_code.get(row.score)
        if found is None:
            problems.append(f"{source}: score {row.score!r} is none of our score codes")
        else:
            named[found[0].instrument] = found[0]
    for mapping in named.values():
        missing = [s.codes[0].code for s in mapping.scales if s.codes[0].code not in seen_codes]
        if missing:
            problems.append(
                f"{source}: {mapping.name} is mapped in part: no row for {', '.join(missing)} "
                "(map every score of an instrument, or none)"
            )
    return problems


def load_flowsheet_map(path: Path, mappings: Iterable[InstrumentMapping]) -> FlowsheetMap:
    """The site's map at ``path``, checked whole against ``mappings``.

    Raises:
        ConfigError: unreadable, not a flowsheet map, or partial/ambiguous: one line, the first problem
        (and how many more there are).
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        flowsheet = FlowsheetMap.model_validate(raw)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        detail = summarise_validation(exc) if isinstance(exc, ValidationError) else str(exc)
        raise ConfigError(f"flowsheet map {path}: {detail}") from None
    problems = check_flowsheet_map(flowsheet, mappings, f"flowsheet map {path}")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)
    return flowsheet
