"""The form-map file format: how a vendor's own form (an EHR's Questionnaire) maps onto one of our instruments.

EHRs send QuestionnaireResponses for *their* forms: Epic's Patient-Entered Questionnaires name
Epic Questionnaire ids and linkIds and answer with ``valueDecimal``/``valueString``; an OpenEMR
or Oracle form has ids of its own. A form map says, as data a site maintains, which vendor
Questionnaire it is, which of our instruments it asks, which vendor linkId is which of our
items, and how each answer becomes our value. The model is strict (unknown keys are refused) and
its JSON Schema is ``form-maps/form-map.schema.json`` (``alliance-fhir instruments form-map-schema``).

What a JSON Schema can say is said here; what needs our instrument (are all its scored items
mapped, does every label name one of its answer codes, does a number conversion stay in range)
is checked by :func:`alliance_fhir.instruments.form_maps.check_form_map`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "ChoiceConversion",
    "FormItem",
    "FormMap",
    "NumberConversion",
    "VendorIdentifier",
    "VendorQuestionnaire",
    "fold_label",
]

NumberType = Literal["valueDecimal", "valueInteger", "valueString"]
ChoiceType = Literal["valueString", "valueCoding", "valueInteger"]


def fold_label(label: str) -> str:
    """How answer labels compare: trimmed, inner spaces collapsed, case-folded ("Fairly  often " = "fairly often")."""
    return " ".join(label.split()).casefold()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VendorIdentifier(_Strict):
    """A business identifier of the vendor's Questionnaire (matched on a contained Questionnaire)."""

    system: str = Field(min_length=1)
    value: str = Field(min_length=1)


class VendorQuestionnaire(_Strict):
    """How a response names the vendor's Questionnaire. At least one way must be given; any one matches."""

    canonical: str | None = Field(
        default=None,
        pattern=r"^\S+$",
        description="The vendor Questionnaire's canonical url, with or without '|version' (without: every version).",
    )
    references: list[Annotated[str, Field(pattern=r"^Questionnaire/[A-Za-z0-9\-.]{1,64}$")]] = Field(
        default_factory=list,
        description="Literal references 'Questionnaire/<id>' (the vendor's server id); the same id on any base URL matches.",
    )
    identifiers: list[VendorIdentifier] = Field(
        default_factory=list,
        description="Identifiers of the vendor's Questionnaire, matched on a Questionnaire contained in the response.",
    )

    @model_validator(mode="after")
    def _some_way(self) -> VendorQuestionnaire:
        if self.canonical is None and not self.references and not self.identifiers:
            raise ValueError("name the vendor's Questionnaire by canonical, references or identifiers")
        return self


class NumberConversion(_Strict):
    """A number answer (a visual-analogue line, a rating): ``our value = vendor value x multiply + add``.

    ``valueString`` is read only as a plain decimal ("7.5"; "7,5" or "7.5 cm" are refused).
    ``vendor_min``/``vendor_max`` are the vendor form's own bounds: every value in them must
    convert into our item's range, or the map is refused.
    """

    kind: Literal["number"]
    value_types: list[NumberType] = Field(min_length=1, description="Which answer value types the vendor sends.")
    vendor_min: float
    vendor_max: float
    multiply: float = Field(default=1, description="E.g. 0.1 for a vendor line recorded in millimetres (0-100).")
    add: float = Field(default=0, description="E.g. 1 for a vendor Likert item numbered from 0.")

    @model_validator(mode="after")
    def _ordered(self) -> NumberConversion:
        if self.vendor_min > self.vendor_max:
            raise ValueError(f"vendor_min {self.vendor_min:g} is above vendor_max {self.vendor_max:g}")
        if self.multiply == 0:
            raise ValueError("multiply 0 would turn every answer into the same value")
        return self


class ChoiceConversion(_Strict):
    """A choice answer: the vendor's label (``valueString``), code (``valueCoding``) or number -> our answer code."""

    kind: Literal["choice"]
    value_types: list[ChoiceType] = Field(min_length=1, description="Which answer value types the vendor sends.")
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Vendor label -> our answer code (labels compare trimmed and case-folded).",
    )
    codes: dict[str, str] = Field(
        default_factory=dict,
        description="Vendor code ('code', or 'system|code') -> our answer code.",
    )
    numbers: dict[str, str] = Field(
        default_factory=dict, description="Vendor integer (as text, e.g. '0') -> our answer code."
    )

    @model_validator(mode="after")
    def _covers_types(self) -> ChoiceConversion:
        needs = {"valueString": self.labels, "valueCoding": self.codes, "valueInteger": self.numbers}
        for value_type in self.value_types:
            if not needs[value_type]:
                table = {"valueString": "labels", "valueCoding": "codes", "valueInteger": "numbers"}[value_type]
                raise ValueError(f"{value_type} answers need a '{table}' table")
        folded = [fold_label(label) for label in self.labels]
        twice = sorted({label for label in folded if folded.count(label) > 1})
        if twice:
            raise ValueError(f"labels {twice} are given twice (labels compare trimmed and case-folded)")
        bad = [n for n in self.numbers if not n.lstrip("-").isdigit()]
        if bad:
            raise ValueError(f"numbers keys {bad} are not integers")
        return self


Conversion = Annotated[NumberConversion | ChoiceConversion, Field(discriminator="kind")]


class FormItem(_Strict):
    """One vendor item: which of our items it is and how its answer converts."""

    vendor_link_id: str = Field(min_length=1)
    link_id: str = Field(min_length=1, description="Our item's linkId in the instrument's Questionnaire.")
    answer: Conversion
    note: str | None = None


class FormMap(_Strict):
    """A form-map file: one vendor Questionnaire -> one of our instruments (``canonical|version``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_ref: str | None = Field(default=None, alias="$schema")
    schema_version: Literal[1] = 1
    form_map: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$", description="Short stable id, e.g. 'epic-srs'.")
    title: str
    vendor: str = Field(description="Whose form it is, e.g. 'Epic (site X)'.")
    example: bool = Field(
        default=False,
        description="True: the ids are invented (an example; instruments check warns); a site fills in its own.",
    )
    source: str = Field(description="Where the vendor ids come from (the site's build, an export of the form).")
    note: str | None = None
    vendor_questionnaire: VendorQuestionnaire
    instrument: str = Field(pattern=r"^\S+\|\S+$", description="Our instrument's Questionnaire 'url|version'.")
    items: list[FormItem] = Field(min_length=1)
    ignore: list[str] = Field(
        default_factory=list,
        description="Vendor linkIds that carry nothing to score (headers, groups, comments); their children are still read.",
    )
