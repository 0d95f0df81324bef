"""A response to a vendor's form, read through its form map into our instrument's shape, then scored as ours.

The translated response keeps every element of the vendor's (id, meta, status, subject,
authored, identifier...) and replaces only ``questionnaire`` (our ``url|version``) and ``item``
(our linkIds, each with one answer as our own form gives it: ``valueDecimal`` for a number,
``valueCoding`` with our answer code for a choice). The engine then scores it exactly as it
scores our own form; the Observation is built from the *vendor's* response (the caller's), so
its ``derivedFrom`` names the vendor QuestionnaireResponse and its identifier is derived from
that response's identity and our instrument, as for any response.

A bad answer fails the response with one line naming the resource, the vendor item (and ours)
and the reason; an answer's content is never repeated (it may be anything a person typed).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

from .._text import describe, safe_text
from ..errors import ScoringError
from ..instruments.catalog import Instrument, ItemSpec
from ..instruments.form_maps import LoadedFormMap, convert_number
from ..instruments.form_models import ChoiceConversion, FormItem, NumberConversion, fold_label

__all__ = ["MAX_VENDOR_DEPTH", "translate_response"]

MAX_VENDOR_DEPTH = 100
"""Vendor items nested deeper than this are refused (as the engine refuses ours)."""
_PLAIN_DECIMAL = re.compile(r"-?[0-9]{1,15}(\.[0-9]{1,15})?")
_VALUE_PREFIX = "value"


def translate_response(response: dict[str, Any], entry: LoadedFormMap, ref: str) -> dict[str, Any]:
    """The vendor response in our instrument's shape (see the module docstring).

    Raises:
        ScoringError: an item the map does not know, a vendor item given twice, an answer of a type the
            map does not take, a label or code the map lacks, a number that is not plain or leaves our range.
    """
    items: list[dict[str, Any]] = []
    for item in _vendor_items(response, entry, ref):
        mapped = entry.items[item["linkId"]]
        answers = item.get("answer") or []
        if not answers:
            continue  # unanswered: our missing-data rule decides
        if len(answers) > 1:
            raise ScoringError(ref, f"duplicate answers ({len(answers)} given, the item takes one)", item["linkId"])
        answer = _converted(answers[0], mapped, entry, ref)
        items.append({"linkId": mapped.link_id, "answer": [answer]})
    translated = {k: v for k, v in response.items() if k not in ("item", "questionnaire", "contained")}
    translated["questionnaire"] = entry.instrument.canonical
    translated["item"] = items
    return translated


def _vendor_items(response: dict[str, Any], entry: LoadedFormMap, ref: str) -> list[dict[str, Any]]:
    """Every mapped vendor item with its answers, depth first, each linkId at most once (iterative walk)."""
    found: list[dict[str, Any]] = []
    seen: set[str] = set()
    stack = [(item, 1) for item in reversed(_list(response, "item", ref, None))]
    while stack:
        item, depth = stack.pop()
        link = item.get("linkId") if isinstance(item, dict) else None
        if not isinstance(link, str):
            problem = "an item has no linkId" if isinstance(item, dict) else f"an item is {describe(item)}"
            raise ScoringError(ref, problem)
        if depth > MAX_VENDOR_DEPTH:
            raise ScoringError(ref, f"items nested deeper than {MAX_VENDOR_DEPTH} levels", safe_text(link, 60))
        if link not in entry.items and link not in entry.ignore:
            raise ScoringError(ref, f"unknown linkId (not in form map '{entry.id}')", safe_text(link, 60))
        if link in seen:
            raise ScoringError(ref, "duplicate item (the linkId appears more than once)", link)
        seen.add(link)
        answers = _list(item, "answer", ref, link)
        children = list(_list(item, "item", ref, link))
        for answer in answers:
            if isinstance(answer, dict):
                children += _list(answer, "item", ref, link)
        stack.extend((child, depth + 1) for child in reversed(children))
        if link in entry.items:
            found.append(item)
    return found


def _list(owner: dict[str, Any], key: str, ref: str, link: str | None) -> list[Any]:
    value = owner.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ScoringError(ref, f"{key} is malformed: expected a JSON array, found {describe(value)}", link)
    return value


def _converted(answer: Any, mapped: FormItem, entry: LoadedFormMap, ref: str) -> dict[str, Any]:
    """One vendor answer as our form gives it."""
    where = f"form map '{entry.id}' -> {entry.instrument.id} item {mapped.link_id}"
    link = mapped.vendor_link_id
    if not isinstance(answer, dict):
        raise ScoringError(ref, f"malformed answer: {describe(answer)}, expected a JSON object ({where})", link)
    present = [k for k in answer if k.startswith(_VALUE_PREFIX)]
    conversion = mapped.answer
    if len(present) != 1 or present[0] not in conversion.value_types:
        given = present[0] if present else "no value"
        wanted = " or ".join(conversion.value_types)
        raise ScoringError(ref, f"{given} given; the map takes {wanted} ({where})", link)
    key, raw = present[0], answer[present[0]]
    spec = entry.instrument.items[mapped.link_id]
    if isinstance(conversion, NumberConversion):
        return {"valueDecimal": _number(key, raw, conversion, spec, ref, link, where)}
    return {"valueCoding": _coding(key, raw, conversion, entry.instrument, spec, ref, link, where)}


def _number(
    key: str, raw: Any, conversion: NumberConversion, spec: ItemSpec, ref: str, link: str, where: str
) -> Decimal:
    vendor = _vendor_number(key, raw)
    if vendor is None:
        wanted = "a plain decimal number such as 7.5" if key == "valueString" else "a finite number"
        raise ScoringError(ref, f"{key} is not {wanted} ({where})", link)
    if not conversion.vendor_min <= vendor <= conversion.vendor_max:
        raise ScoringError(
            ref,
            f"{key} is out of the vendor range {conversion.vendor_min:g}-{conversion.vendor_max:g} ({where})",
            link,
        )
    value = convert_number(vendor, conversion)
    if not spec.min <= value <= spec.max:
        raise ScoringError(ref, f"{key} converts to a value out of range {spec.min}-{spec.max} ({where})", link)
    if -value.as_tuple().exponent > spec.decimals:  # type: ignore[operator]
        raise ScoringError(ref, f"{key} converts to more than {spec.decimals} decimal place(s) ({where})", link)
    return value


def _vendor_number(key: str, raw: Any) -> Decimal | None:
    if isinstance(raw, bool):
        return None
    if key == "valueString":
        return Decimal(raw) if isinstance(raw, str) and _PLAIN_DECIMAL.fullmatch(raw) else None
    if key == "valueInteger":
        return Decimal(raw) if isinstance(raw, int) else None
    if isinstance(raw, int):
        return Decimal(raw)
    if isinstance(raw, float):
        return Decimal(repr(raw)) if math.isfinite(raw) else None
    if isinstance(raw, Decimal):
        return raw if raw.is_finite() else None
    return None


def _coding(
    key: str,
    raw: Any,
    conversion: ChoiceConversion,
    instrument: Instrument,
    spec: ItemSpec,
    ref: str,
    link: str,
    where: str,
) -> dict[str, str]:
    code = _our_code(key, raw, conversion)
    if code is None:
        table = {"valueString": "labels", "valueCoding": "codes", "valueInteger": "numbers"}[key]
        raise ScoringError(ref, f"the {key} is not among the map's {table} ({where})", link)
    system = next(s for s, c in spec.options if c == code)  # checked when the map loaded
    return {"system": system, "code": code}


def _our_code(key: str, raw: Any, conversion: ChoiceConversion) -> str | None:
    if key == "valueString":
        if not isinstance(raw, str):
            return None
        folded = {fold_label(label): code for label, code in conversion.labels.items()}
        return folded.get(fold_label(raw))
    if key == "valueInteger":
        return conversion.numbers.get(str(raw)) if isinstance(raw, int) and not isinstance(raw, bool) else None
    if not isinstance(raw, dict) or not isinstance(raw.get("code"), str):
        return None
    system = raw.get("system")
    if isinstance(system, str) and f"{system}|{raw['code']}" in conversion.codes:
        return conversion.codes[f"{system}|{raw['code']}"]
    return conversion.codes.get(raw["code"])
