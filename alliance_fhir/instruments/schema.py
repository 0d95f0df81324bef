"""The JSON Schemas of mapping and form-map files, generated from :class:`~.models.InstrumentMapping` and
:class:`~.form_models.FormMap`.

``mappings/mapping.schema.json`` is this function's output (``make schema``; a test keeps the
two in step; likewise ``form-maps/form-map.schema.json``), so editors check a contributor's mapping against the same rules the catalog
applies. Cross-field rules (unique ids, reverse items among the scale's items, the headline
first) live only in the model's validators: a JSON Schema cannot say them.
"""

from __future__ import annotations

from typing import Any

from .form_models import FormMap
from .models import InstrumentMapping

__all__ = ["FORM_MAP_SCHEMA_ID", "SCHEMA_ID", "form_map_json_schema", "mapping_json_schema"]

SCHEMA_ID = "http://alliance-fhir.org/schema/mapping.schema.json"
FORM_MAP_SCHEMA_ID = "http://alliance-fhir.org/schema/form-map.schema.json"


def mapping_json_schema() -> dict[str, Any]:
    """The mapping files' JSON Schema (draft 2020-12, as pydantic writes it)."""
    schema = InstrumentMapping.model_json_schema(by_alias=True)
    schema["$id"] = SCHEMA_ID
    schema["title"] = "alliance-fhir instrument mapping"
    return schema


def form_map_json_schema() -> dict[str, Any]:
    """The form-map files' JSON Schema (draft 2020-12, as pydantic writes it).

    What needs the instrument (every scored item mapped, labels naming its answer codes, numbers
    converting into its range) is checked when the catalog loads the map, not here.
    """
    schema = FormMap.model_json_schema(by_alias=True)
    schema["$id"] = FORM_MAP_SCHEMA_ID
    schema["title"] = "alliance-fhir form map (a vendor's form -> one of our instruments)"
    return schema
