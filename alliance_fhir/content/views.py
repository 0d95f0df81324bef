"""The SQL on FHIR v2 ViewDefinitions we ship: our score Observations and signal DetectedIssues as tables.

Data teams analyse FHIR in their own engines (Spark with Pathling, DuckDB, BigQuery, Aidbox), not
in the FHIR server. A ViewDefinition is the portable way to hand them a table: the same JSON runs
in any SQL-on-FHIR engine. The files are data, like the instruments: ``content/views/*.json`` in
a checkout, ``alliance_fhir/_data/content/views`` in the wheel, and ``package/other/`` in the FHIR
package (a ViewDefinition is a logical-model instance, not an R4 resource, so it stays out of the
package's resource index, where FHIR servers would try to load it).

- ``alliance-scores`` (table ``alliance_scores``): one row per score, the total and each subscale;
- ``alliance-signals`` (table ``alliance_signals``): one row per signal.

Both follow the ShareableViewDefinition and TabularViewDefinition profiles: a canonical url, a
SQL-safe name, ``fhirVersion``, and a declared primitive type for every column.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import AllianceFhirError
from ..instruments.catalog import data_root

__all__ = ["VIEWS_FOLDER", "view_definitions", "views_root"]

VIEWS_FOLDER = Path("content") / "views"


def views_root() -> Path:
    """Folder holding the shipped ViewDefinitions (beside the instrument data, wheel or checkout).

    Raises:
        InstrumentError: the shipped data is not found at all.
    """
    return data_root() / VIEWS_FOLDER


def view_definitions(folder: Path | None = None) -> list[dict[str, Any]]:
    """The shipped ViewDefinitions (or those in ``folder``), sorted by file name, dotfiles skipped.

    Raises:
        AllianceFhirError: a file is unreadable, not JSON, or not a ViewDefinition with an id.
    """
    root = folder if folder is not None else views_root()
    views = []
    for path in sorted(root.glob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AllianceFhirError(f"{path}: not readable JSON ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("resourceType") != "ViewDefinition" or not doc.get("id"):
            raise AllianceFhirError(f"{path}: not a ViewDefinition with an id")
        views.append(doc)
    return views
