"""Running our ViewDefinitions in a real SQL-on-FHIR engine: fhir4ds-v2 (DuckDB plus its FHIRPath extension).

Why this engine: it is on PyPI, maintained, runs offline and in-process (DuckDB, no JVM, no
server), reads Bulk Data NDJSON as it comes from ``$export``, and checks each column's declared
type and cardinality at run time, so a path that yields the wrong type fails instead of passing.
Pathling (the other candidate) needs its Java runtime from Maven at session start, and the
``au.csiro.pathling`` artifacts are not served by the registry this machine reaches.

The NDJSON lines are mounted as they are (DuckDB's ``read_ndjson_objects``, one JSON value a line,
as the table fhir4ds queries: ``resources(id, resourceType, resource, patient_ref)``), not through
fhir4ds's own NDJSON source: that one infers one struct schema for all lines, so an extension
list mixing ``valueCode`` and ``valueReference`` comes back with each sibling set to null, and
``value.ofType(code)`` then finds nothing (seen with 0.0.17).

fhir4ds follows the SQL on FHIR 2.x rule that a ViewDefinition's ``resourceType``, when present,
is the logical model's canonical URL; our files say ``ViewDefinition`` (what packages, Pathling
and the spec's own examples use), so the runner leaves ``resourceType`` out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import fhir4ds
from fhir4ds.sources.existing import ExistingTableSource

_CONNECTIONS: dict[Path, duckdb.DuckDBPyConnection] = {}
_MOUNT = """
CREATE TABLE raw_resources AS
SELECT json ->> 'id' AS id, json ->> 'resourceType' AS resourceType, json AS resource,
       CAST(NULL AS VARCHAR) AS patient_ref
FROM read_ndjson_objects(?)
"""


def connect(folder: Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the FHIRPath functions and ``folder/*.ndjson`` mounted as ``resources``."""
    if folder not in _CONNECTIONS:
        con = duckdb.connect(config={"allow_unsigned_extensions": True})
        fhir4ds.register_fhirpath(con)
        con.execute(_MOUNT, [str(folder / "*.ndjson")])
        fhir4ds.attach(con, ExistingTableSource("raw_resources"))
        _CONNECTIONS[folder] = con
    return _CONNECTIONS[folder]


def run_view(folder: Path, view: dict[str, Any]) -> list[dict[str, Any]]:
    """The view's rows over the NDJSON files in ``folder``, as dicts (column name -> value), in the engine's order."""
    definition = {k: v for k, v in view.items() if k != "resourceType"}
    cursor = connect(folder).execute(fhir4ds.generate_view_sql(definition))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def write_ndjson(folder: Path, resources: list[dict[str, Any]]) -> Path:
    """Write resources as one NDJSON file per type (``<Type>.ndjson``, as ``$export`` does); return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    by_type: dict[str, list[str]] = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(json.dumps(resource))
    for kind, lines in by_type.items():
        (folder / f"{kind}.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
