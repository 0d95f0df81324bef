"""The JSON Schema of mapping files, generated from :class:`~.models.InstrumentMapping`.

``mappings/mapping.schema.json`` is this function's output (``make schema``; a test keeps the
two in step), so editors check a contributor's mapping against the same rules the catalog
applies. Cross-field rules (unique ids, reverse items among the scale's items, the headline
first) live only in the model's validators: a JSON Schema cannot say them.
"""

from __future__ import annotations

from typing import Any

from .models import InstrumentMapping

__all__ = ["SCHEMA_ID", "mapping_json_schema"]

SCHEMA_ID = "http://alliance-fhir.org/schema/mapping.schema.json"


def mapping_json_schema() -> dict[str, Any]:
    """The mapping files' JSON Schema (draft 2020-12, as pydantic writes it)."""
    schema = InstrumentMapping.model_json_schema(by_alias=True)
    schema["$id"] = SCHEMA_ID
    schema["title"] = "alliance-fhir instrument mapping"
    return schema
