"""Loaded form maps: which vendor Questionnaire a response names, and whether a map is whole and unambiguous.

A form map (:mod:`.form_models`) is checked against the instrument it names when the catalog
loads it; a map with any problem is left out and every problem is one sentence naming the
file, the item and the reason (``alliance-fhir instruments check`` prints them). A loaded map is
then found by what a response's ``questionnaire`` says: the vendor canonical (with or without a
version), a literal ``Questionnaire/<id>`` on any base URL, or ``#id`` naming a contained
Questionnaire whose url or identifier the map names.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .._refs import parse_reference
from .form_models import ChoiceConversion, FormItem, FormMap, NumberConversion

if TYPE_CHECKING:
    from .catalog import Instrument

__all__ = ["FormMaps", "LoadedFormMap", "check_form_map", "convert_number"]


@dataclass(frozen=True)
class LoadedFormMap:
    """A form map that passed every check, with the instrument it feeds and its items by vendor linkId."""

    form_map: FormMap
    instrument: Instrument
    source: str
    items: dict[str, FormItem]
    ignore: frozenset[str]

    @property
    def id(self) -> str:
        return self.form_map.form_map


@dataclass
class FormMaps:
    """Every loaded form map, indexed by the ways a response can name a vendor Questionnaire."""

    maps: list[LoadedFormMap] = field(default_factory=list)
    _by_key: dict[str, LoadedFormMap] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.maps)

    def __iter__(self) -> Iterator[LoadedFormMap]:
        return iter(self.maps)

    def add(self, entry: LoadedFormMap) -> str | None:
        """Index ``entry``; or, when another map already claims one of its vendor names, say which (and add nothing)."""
        keys = list(_keys(entry.form_map))
        for key in keys:
            other = self._by_key.get(key)
            if other is not None:
                return f"claims the same vendor Questionnaire ({_shown(key)}) as form map '{other.id}' ({other.source})"
        self.maps.append(entry)
        self._by_key.update(dict.fromkeys(keys, entry))
        return None

    def claimed(self, key_text: str) -> LoadedFormMap | None:
        """The map claiming a canonical url (``url`` or ``url|version``), if any."""
        return self._by_key.get(f"url:{key_text}")

    def match(self, response: dict[str, Any]) -> LoadedFormMap | None:
        """The form map for a response's ``questionnaire``, or None (then it is ours or unknown)."""
        named = response.get("questionnaire")
        if not isinstance(named, str) or not named:
            return None
        if named.startswith("#"):
            return self._contained(response, named[1:])
        found = self._by_key.get(f"url:{named}") or self._by_key.get(f"url:{named.partition('|')[0]}")
        if found is not None:
            return found
        ref = parse_reference(named)
        if ref is not None and ref.type == "Questionnaire" and ref.version is None:
            return self._by_key.get(f"ref:{ref.id}")
        return None

    def _contained(self, response: dict[str, Any], local_id: str) -> LoadedFormMap | None:
        contained = response.get("contained")
        if not isinstance(contained, list):
            return None
        for resource in contained:
            if not (isinstance(resource, dict) and resource.get("resourceType") == "Questionnaire"):
                continue
            if resource.get("id") != local_id:
                continue
            url, version = resource.get("url"), resource.get("version")
            for key in (f"url:{url}|{version}", f"url:{url}") if isinstance(url, str) else ():
                if key in self._by_key:
                    return self._by_key[key]
            identifiers = resource.get("identifier")
            for ident in identifiers if isinstance(identifiers, list) else ():
                if isinstance(ident, dict):
                    found = self._by_key.get(f"id:{ident.get('system')}|{ident.get('value')}")
                    if found is not None:
                        return found
        return None

    def search_values(self, instrument_urls: Iterable[str] | None = None, server: str | None = None) -> list[str]:
        """What a ``questionnaire=`` search lists to find the mapped vendor responses (of those instruments, when given).

        The vendor canonical without its version (a search on a canonical matches every version), and each
        literal reference relative and on ``server``'s base (servers index references as written). A map
        that names its Questionnaire only by identifier (a contained Questionnaire) cannot be searched this way.
        """
        wanted = set(instrument_urls) if instrument_urls is not None else None
        values: list[str] = []
        for entry in self.maps:
            if wanted is not None and entry.instrument.url not in wanted:
                continue
            vendor = entry.form_map.vendor_questionnaire
            if vendor.canonical:
                values.append(vendor.canonical.partition("|")[0])
            for reference in vendor.references:
                values.append(reference)
                if server:
                    values.append(f"{server.rstrip('/')}/{reference}")
        return list(dict.fromkeys(values))


def _keys(form_map: FormMap) -> Iterator[str]:
    vendor = form_map.vendor_questionnaire
    if vendor.canonical:
        yield f"url:{vendor.canonical}"
    for reference in vendor.references:
        yield f"ref:{reference.removeprefix('Questionnaire/')}"
    for ident in vendor.identifiers:
        yield f"id:{ident.system}|{ident.value}"


def _shown(key: str) -> str:
    kind, _, value = key.partition(":")
    return {"url": "canonical ", "ref": "Questionnaire/", "id": "identifier "}[kind] + value


def check_form_map(form_map: FormMap, instrument: Instrument) -> list[str]:
    """Every reason ``form_map`` is ambiguous, partial or cannot give in-range answers for ``instrument``.

    One sentence each, naming the item (``item 'vendor id' -> our 'linkId'``): a vendor linkId
    mapped twice, one of our items fed twice or not at all, an item that is not ours to score,
    a label or code naming no answer code of ours, a number conversion whose vendor range leaves
    our item's range.
    """
    problems: list[str] = []
    seen_vendor: set[str] = set()
    fed: dict[str, str] = {}
    for item in form_map.items:
        where = f"item '{item.vendor_link_id}' -> our '{item.link_id}'"
        if item.vendor_link_id in seen_vendor:
            problems.append(f"{where}: vendor linkId '{item.vendor_link_id}' is mapped twice")
        seen_vendor.add(item.vendor_link_id)
        if item.link_id in fed:
            problems.append(
                f"{where}: our item '{item.link_id}' is also fed by vendor item '{fed[item.link_id]}' (ambiguous)"
            )
        fed.setdefault(item.link_id, item.vendor_link_id)
        problems += [f"{where}: {p}" for p in _check_item(item, instrument)]
    for link in sorted(set(form_map.ignore) & seen_vendor):
        problems.append(f"item '{link}': listed in both items and ignore")
    for link in sorted(_required(instrument) - set(fed), key=_link_key):
        problems.append(f"our item '{link}' of {instrument.canonical} is not mapped (a partial map)")
    return problems


def _required(instrument: Instrument) -> set[str]:
    """Our items a map must feed: every scored item, and every answerable item the Questionnaire requires."""
    from .catalog import walk_items  # the catalog imports this module; the walk is its own

    required = set(instrument.items)
    for item in walk_items(instrument.questionnaire.get("item", [])):
        if item.get("required") and not item.get("readOnly") and item.get("type") not in ("group", "display"):
            required.add(item["linkId"])
    return required


def _check_item(item: FormItem, instrument: Instrument) -> list[str]:
    spec = instrument.items.get(item.link_id)
    if spec is None:
        return [f"'{item.link_id}' is not a scored item of {instrument.canonical}"]
    answer = item.answer
    if isinstance(answer, NumberConversion):
        if spec.kind != "number":
            return ["a number conversion cannot feed a choice item (use kind 'choice' with a table per value type)"]
        return _check_number(answer, spec.min, spec.max)
    if spec.kind != "choice":
        return ["a choice conversion cannot feed a number item (use kind 'number')"]
    return _check_choice(answer, {code for _, code in spec.options})


def _check_number(answer: NumberConversion, low: Decimal, high: Decimal) -> list[str]:
    ends = sorted(convert_number(Decimal(repr(v)), answer) for v in (answer.vendor_min, answer.vendor_max))
    if ends[0] < low or ends[1] > high:
        return [
            f"the conversion turns the vendor range {answer.vendor_min:g}-{answer.vendor_max:g} into "
            f"{_plain(ends[0])}-{_plain(ends[1])}, outside our item's range {_plain(low)}-{_plain(high)}"
        ]
    return []


def _plain(number: Decimal) -> str:
    """A number as a person writes it: 100, 0, 7.5 (not 100.0 or 1E+2)."""
    return format(number.normalize(), "f")


def convert_number(value: Decimal, answer: NumberConversion) -> Decimal:
    """The one formula, shared with scoring: ``value x multiply + add``, in Decimal arithmetic."""
    return value * _exact(answer.multiply) + _exact(answer.add)


def _exact(number: float) -> Decimal:
    return Decimal(int(number)) if float(number).is_integer() else Decimal(repr(number))


def _check_choice(answer: ChoiceConversion, codes: set[str]) -> list[str]:
    problems = []
    for table, entries in (("label", answer.labels), ("code", answer.codes), ("number", answer.numbers)):
        for vendor, ours in entries.items():
            if ours not in codes:
                problems.append(f"{table} '{vendor}' maps to '{ours}', which is no answer code of our item")
    return problems


def _link_key(link: str) -> tuple[int, str]:
    return (int(link), "") if link.isdigit() else (1 << 30, link)
