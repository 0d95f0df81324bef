"""Finding, loading and cross-checking instruments (Questionnaire + mapping pairs) and form maps.

Instruments are data: the shipped ``questionnaires/`` and ``mappings/`` folders, plus any
folders a user adds through ``ALLIANCE_FHIR_INSTRUMENTS`` or ``--instruments``. Form maps (a
vendor's own form -> one of our instruments, :mod:`.form_maps`) are data the same way: each
folder's ``form-maps/`` (or, in a flat folder, any file with a ``vendor_questionnaire``). Loading never
happens at import time (a broken data file must not break ``--help``), and every problem is
collected with a sentence that explains it, so ``alliance-fhir instruments check`` can list
them all instead of stopping at the first.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import InstrumentError, summarise_validation
from .form_maps import FormMaps, LoadedFormMap, check_form_map
from .form_models import FormMap
from .models import InstrumentMapping, ScaleSpec

__all__ = [
    "Catalog",
    "Instrument",
    "ItemSpec",
    "CLIENT_SUFFIX",
    "INSTRUMENTS_ENV",
    "data_root",
    "load_catalog",
]

INSTRUMENTS_ENV = "ALLIANCE_FHIR_INSTRUMENTS"
CLIENT_SUFFIX = "-for-client"
"""What the client-facing Questionnaire's url and id add to the instrument's (``wai-sr-for-client``)."""
ORDINAL_VALUE = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
ITEM_WEIGHT = "http://hl7.org/fhir/StructureDefinition/itemWeight"
WEIGHT_URLS = (ITEM_WEIGHT, ORDINAL_VALUE)
MIN_VALUE = "http://hl7.org/fhir/StructureDefinition/minValue"
MAX_VALUE = "http://hl7.org/fhir/StructureDefinition/maxValue"
MAX_DECIMALS = "http://hl7.org/fhir/StructureDefinition/maxDecimalPlaces"
CALCULATED = "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-calculatedExpression"


def data_root() -> Path:
    """Folder holding the shipped ``questionnaires/``, ``mappings/`` and ``form-maps/``.

    The wheel carries them inside the package (``alliance_fhir/_data``); an editable install
    or a source checkout has them at the repository's top level.
    """
    packaged = Path(str(resources.files("alliance_fhir"))) / "_data"
    if (packaged / "mappings").is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "mappings").is_dir():
        return checkout
    raise InstrumentError(f"shipped instrument data not found (looked in {packaged} and {checkout})")


@dataclass(frozen=True, slots=True)
class ItemSpec:
    """What a scored item accepts: coded options with weights, or a bounded number."""

    link_id: str
    kind: str  # "choice" or "number"
    options: dict[tuple[str, str], Decimal]
    values: frozenset[Decimal]
    min: Decimal
    max: Decimal
    decimals: int


@dataclass(frozen=True)
class Instrument:
    """One scorable Questionnaire version with its mapping and an index for fast scoring."""

    questionnaire: dict[str, Any]
    mapping: InstrumentMapping
    items: dict[str, ItemSpec]
    link_ids: frozenset[str]
    score_link_ids: frozenset[str]
    source: str

    @property
    def id(self) -> str:
        return self.mapping.instrument

    @property
    def canonical(self) -> str:
        return self.mapping.questionnaire

    @property
    def url(self) -> str:
        return self.mapping.url

    @property
    def version(self) -> str:
        return self.mapping.version

    @property
    def client_url(self) -> str:
        """Canonical url of the client-facing Questionnaire derived from this one (no scores shown;
        ``content.client``), which responses from a client portal name: scored as this instrument."""
        return self.url + CLIENT_SUFFIX

    @property
    def client_canonical(self) -> str:
        return f"{self.client_url}|{self.version}"

    @property
    def response_urls(self) -> tuple[str, str]:
        """Every Questionnaire url a response to this instrument may name: the full form's and the
        client-facing one's. Sync's search, serve's Subscription and back-fills find responses by these."""
        return (self.url, self.client_url)


@dataclass
class Catalog:
    """All loaded instruments, the CodeSystems beside them, the form maps, and every problem found."""

    instruments: dict[str, Instrument] = field(default_factory=dict)
    codesystems: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    forms: FormMaps = field(default_factory=FormMaps)

    def __iter__(self) -> Iterator[Instrument]:
        return iter(sorted(self.instruments.values(), key=lambda i: (i.id, _version_key(i.version))))

    def get(self, ref: str) -> Instrument:
        """Find an instrument by id (latest version), ``url`` or ``url|version``.

        Raises:
            InstrumentError: nothing matches ``ref``.
        """
        if ref in self.instruments:
            return self.instruments[ref]
        matches = [i for i in self.instruments.values() if ref in (i.id, i.url)]
        if not matches:
            raise InstrumentError(f"unknown instrument '{ref}' (known: {', '.join(sorted({i.id for i in self}))})")
        return max(matches, key=lambda i: _version_key(i.version))

    def instrument_for(self, response: dict[str, Any]) -> Instrument:
        """The instrument a QuestionnaireResponse is scored as: through its form map when a map claims its
        vendor Questionnaire, else by its ``questionnaire`` canonical (:meth:`resolve`).

        Raises:
            InstrumentError: neither a form map nor one of our instruments matches.
        """
        entry = self.forms.match(response) if self.forms else None
        if entry is not None:
            return entry.instrument
        return self.resolve(str(response.get("questionnaire", "")))[0]

    def resolve(self, canonical: str) -> tuple[Instrument, str | None]:
        """Resolve ``QuestionnaireResponse.questionnaire`` to an instrument.

        Returns the instrument and a warning when the canonical carries no version (the
        latest known version is used then). The client-facing Questionnaire's canonical
        (:attr:`Instrument.client_canonical`) resolves to its instrument.

        Raises:
            InstrumentError: unknown Questionnaire, or a version we do not have.
        """
        if canonical in self.instruments:
            return self.instruments[canonical], None
        url, _, version = canonical.partition("|")
        same_url = [i for i in self.instruments.values() if url in i.response_urls]
        if not same_url:
            raise InstrumentError(f"unknown Questionnaire '{url}'")
        if version:
            exact = [i for i in same_url if i.version == version]
            if exact:  # the client-facing Questionnaire of this version: the same instrument, the same scoring
                return exact[0], None
            known = ", ".join(sorted(i.version for i in same_url))
            raise InstrumentError(f"unknown version '{version}' of Questionnaire '{url}' (known: {known})")
        latest = max(same_url, key=lambda i: _version_key(i.version))
        return latest, f"questionnaire '{url}' has no version; scored with the latest, {latest.version}"


def load_catalog(extra_dirs: Sequence[Path | str] = (), *, include_shipped: bool = True) -> Catalog:
    """Load the shipped instruments plus those in ``extra_dirs`` and ``$ALLIANCE_FHIR_INSTRUMENTS``.

    Problems (bad files, mismatched pairs) are collected in ``Catalog.problems``; a pair with a
    problem is left out, the rest still load.
    """
    dirs: list[Path] = [data_root()] if include_shipped else []
    env = os.environ.get(INSTRUMENTS_ENV, "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs += [Path(d) for d in extra_dirs]
    catalog = Catalog()
    questionnaires: dict[str, tuple[dict[str, Any], str]] = {}
    mappings: list[tuple[InstrumentMapping, str]] = []
    form_maps: list[tuple[FormMap, str]] = []
    for path, data in _read_json_files(dirs, catalog.problems):
        _classify(path, data, questionnaires, (mappings, form_maps), catalog)
    for mapping, where in mappings:
        _add_instrument(catalog, mapping, where, questionnaires)
    catalog.problems += _check_codes(catalog)
    catalog.problems += _check_client_urls(catalog)
    for form_map, where in form_maps:
        _add_form_map(catalog, form_map, where)
    return catalog


def _add_form_map(catalog: Catalog, form_map: FormMap, where: str) -> None:
    """Check one form map against its instrument and load it, or record why not (one line per problem)."""
    instrument = catalog.instruments.get(form_map.instrument)
    if instrument is None:
        catalog.problems.append(f"{where}: names instrument {form_map.instrument}, which is not loaded")
        return
    problems = check_form_map(form_map, instrument)
    canonical = form_map.vendor_questionnaire.canonical
    if canonical and canonical.partition("|")[0] in {url for inst in catalog for url in inst.response_urls}:
        problems.append(f"its vendor canonical {canonical} is one of our own Questionnaires (no map needed)")
    if problems:
        catalog.problems += [f"{where}: {problem}" for problem in problems]
        return
    items = {item.vendor_link_id: item for item in form_map.items}
    clash = catalog.forms.add(LoadedFormMap(form_map, instrument, where, items, frozenset(form_map.ignore)))
    if clash:
        catalog.problems.append(f"{where}: {clash}")


def _check_client_urls(catalog: Catalog) -> list[str]:
    """No instrument's url may be another one's client-facing url: a response naming it would be ambiguous."""
    clients = {inst.client_url: inst for inst in catalog}
    return [
        f"{inst.canonical}: its url is the client-facing url of {clients[inst.url].canonical}"
        for inst in catalog
        if inst.url in clients
    ]


def _read_json_files(dirs: Iterable[Path], problems: list[str]) -> Iterator[tuple[Path, Any]]:
    for d in dirs:
        if not d.is_dir():
            problems.append(f"{d}: instruments folder does not exist")
            continue
        subdirs = [d / "questionnaires", d / "mappings", d / "form-maps"]
        roots = [s for s in subdirs if s.is_dir()] or [d]
        for root in roots:
            for path in sorted(root.glob("*.json")):
                if path.name.startswith(".") or path.name.endswith(".schema.json"):
                    continue
                try:
                    yield path, json.loads(path.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                    problems.append(f"{path}: not readable JSON ({exc})")


def _classify(
    path: Path,
    data: Any,
    questionnaires: dict[str, tuple[dict[str, Any], str]],
    pending: tuple[list[tuple[InstrumentMapping, str]], list[tuple[FormMap, str]]],
    catalog: Catalog,
) -> None:
    mappings, form_maps = pending
    if not isinstance(data, dict):
        catalog.problems.append(f"{path}: expected a JSON object")
    elif data.get("resourceType") == "Questionnaire":
        problem = _questionnaire_problem(data)
        key = f"{data.get('url')}|{data.get('version')}"
        if problem:
            catalog.problems.append(f"{path}: {problem}")
        elif key in questionnaires:
            catalog.problems.append(f"{path}: Questionnaire {key} is already defined in {questionnaires[key][1]}")
        else:
            questionnaires[key] = (data, str(path))
    elif data.get("resourceType") == "CodeSystem":
        catalog.codesystems.append(data)
    elif "resourceType" in data:
        catalog.problems.append(f"{path}: a {data['resourceType']} is neither a Questionnaire nor a CodeSystem")
    elif "vendor_questionnaire" in data:
        try:
            form_maps.append((FormMap.model_validate(data), str(path)))
        except ValidationError as exc:
            catalog.problems.append(f"{path}: invalid form map: {summarise_validation(exc)}")
    else:
        try:
            mappings.append((InstrumentMapping.model_validate(data), str(path)))
        except ValidationError as exc:
            catalog.problems.append(f"{path}: invalid mapping: {summarise_validation(exc)}")


def _questionnaire_problem(q: dict[str, Any]) -> str | None:
    missing = [k for k in ("url", "version", "status", "copyright", "item") if not q.get(k)]
    if missing:
        return (
            f"Questionnaire lacks {', '.join(missing)} (every instrument must state its canonical, version and terms)"
        )
    return None


def _add_instrument(
    catalog: Catalog,
    mapping: InstrumentMapping,
    where: str,
    questionnaires: dict[str, tuple[dict[str, Any], str]],
) -> None:
    found = questionnaires.get(mapping.questionnaire)
    if found is None:
        known = ", ".join(k for k in questionnaires if k.startswith(mapping.url + "|")) or "none with that url"
        catalog.problems.append(
            f"{where}: names Questionnaire {mapping.questionnaire}, which is not loaded (versions found: {known})"
        )
        return
    if mapping.questionnaire in catalog.instruments:
        catalog.problems.append(f"{where}: a second mapping for {mapping.questionnaire}")
        return
    questionnaire, q_path = found
    problems = check_pair(questionnaire, mapping)
    if problems:
        catalog.problems += [f"{mapping.instrument} ({where}): {p}" for p in problems]
        return
    catalog.instruments[mapping.questionnaire] = _build_instrument(questionnaire, mapping, q_path)


def walk_items(items: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every Questionnaire item, depth first, in document order."""
    for item in items:
        yield item
        yield from walk_items(item.get("item", []))


def check_pair(questionnaire: dict[str, Any], mapping: InstrumentMapping) -> list[str]:
    """Cross-check one Questionnaire against its mapping; return sentences, one per problem."""
    by_link = {}
    problems: list[str] = []
    for item in walk_items(questionnaire.get("item", [])):
        link = item.get("linkId")
        if link in by_link:
            problems.append(f"linkId '{link}' appears twice in the Questionnaire")
        by_link[link] = item
    scored = {link for scale in mapping.scales for link in scale.items}
    for link in sorted(scored, key=_version_key):
        problems += _check_scored_item(link, by_link.get(link), mapping)
    for scale in mapping.scales:
        problems += _check_scale(scale, mapping, by_link)
    return problems


def _check_scored_item(link: str, item: dict[str, Any] | None, mapping: InstrumentMapping) -> list[str]:
    if item is None:
        return [f"scored item '{link}' does not exist in the Questionnaire"]
    lo, hi = mapping.item_scale.min, mapping.item_scale.max
    kind = item.get("type")
    if kind == "choice":
        options = item.get("answerOption") or []
        if not options:
            return [f"item '{link}' is a choice without answerOptions, so it has no numeric value"]
        out = []
        for opt in options:
            weight = _option_weight(opt)
            code = (opt.get("valueCoding") or {}).get("code")
            if code is None:
                out.append(f"item '{link}': an answerOption has no valueCoding")
            elif weight is None:
                out.append(f"item '{link}': answer '{code}' has no numeric value (ordinalValue/itemWeight)")
            elif not lo <= weight <= hi:
                out.append(f"item '{link}': answer '{code}' value {weight} is outside the item scale {lo:g}-{hi:g}")
        return out
    if kind in ("decimal", "integer"):
        bounds = (_ext_value(item, MIN_VALUE), _ext_value(item, MAX_VALUE))
        if bounds != (Decimal(str(lo)), Decimal(str(hi))):
            return [f"item '{link}': minValue/maxValue {bounds} do not match the item scale {lo:g}-{hi:g}"]
        return []
    return [f"item '{link}' has type '{kind}', which has no numeric value to score"]


def _check_scale(scale: ScaleSpec, mapping: InstrumentMapping, by_link: dict[Any, dict[str, Any]]) -> list[str]:
    lo, hi = mapping.item_scale.min, mapping.item_scale.max
    n = len(scale.items)
    expected = (n * lo, n * hi) if scale.aggregation == "sum" else (lo, hi)
    problems = []
    if (scale.range.min, scale.range.max) != expected:
        problems.append(
            f"scale '{scale.id}': declared range {scale.range.min:g}-{scale.range.max:g} does not fit "
            f"{n} items of {lo:g}-{hi:g} ({scale.aggregation}: {expected[0]:g}-{expected[1]:g})"
        )
    for cut in scale.cutoffs:
        if not scale.range.min <= cut.threshold <= scale.range.max:
            problems.append(f"scale '{scale.id}': cutoff '{cut.id}' {cut.threshold:g} lies outside the range")
    for band in scale.bands:
        if not scale.range.min <= band.min <= band.max <= scale.range.max:
            problems.append(f"scale '{scale.id}': band '{band.id}' {band.min:g}-{band.max:g} lies outside the range")
    if scale.questionnaire_item is not None:
        item = by_link.get(scale.questionnaire_item)
        if item is None:
            problems.append(
                f"scale '{scale.id}': score item '{scale.questionnaire_item}' does not exist in the Questionnaire"
            )
        elif not item.get("readOnly") or not any(e.get("url") == CALCULATED for e in item.get("extension", [])):
            problems.append(
                f"scale '{scale.id}': score item '{scale.questionnaire_item}' is not read-only with a calculatedExpression"
            )
    return problems


def _check_codes(catalog: Catalog) -> list[str]:
    """Score codes are unique across instruments and exist in any CodeSystem we ship for them."""
    problems = []
    seen: dict[tuple[str, str], str] = {}
    systems = {
        cs.get("url"): {c.get("code") for c in _walk_concepts(cs.get("concept", []))} for cs in catalog.codesystems
    }
    for inst in catalog:
        for scale in inst.mapping.scales:
            for coding in scale.codes:
                key = (coding.system, coding.code)
                owner = f"{inst.canonical} scale '{scale.id}'"
                if key in seen and not seen[key].startswith(inst.url + "|"):
                    problems.append(f"{owner}: code {coding.system}|{coding.code} is also used by {seen[key]}")
                seen.setdefault(key, owner)
                if coding.system in systems and coding.code not in systems[coding.system]:
                    problems.append(f"{owner}: code '{coding.code}' is not defined in CodeSystem {coding.system}")
        for spec in inst.items.values():
            for system, code in spec.options:
                if system in systems and code not in systems[system]:
                    problems.append(
                        f"{inst.canonical} item '{spec.link_id}': answer code '{code}' is not defined in CodeSystem {system}"
                    )
    return problems


def _walk_concepts(concepts: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for concept in concepts:
        yield concept
        yield from _walk_concepts(concept.get("concept", []))


def _build_instrument(questionnaire: dict[str, Any], mapping: InstrumentMapping, source: str) -> Instrument:
    by_link = {item["linkId"]: item for item in walk_items(questionnaire["item"])}
    scored = {link for scale in mapping.scales for link in scale.items}
    specs = {link: _item_spec(by_link[link], mapping) for link in scored}
    score_links = {s.questionnaire_item for s in mapping.scales if s.questionnaire_item}
    score_links |= {link for link, item in by_link.items() if item.get("readOnly")}
    return Instrument(questionnaire, mapping, specs, frozenset(by_link), frozenset(score_links), source)


def _item_spec(item: dict[str, Any], mapping: InstrumentMapping) -> ItemSpec:
    scale = mapping.item_scale
    if item["type"] == "choice":
        options = {}
        for opt in item["answerOption"]:
            coding = opt["valueCoding"]
            weight = _option_weight(opt)
            if weight is None:  # check_pair refuses such pairs; keep the invariant explicit
                raise InstrumentError(f"item '{item['linkId']}': answer '{coding['code']}' has no numeric value")
            options[(coding.get("system", ""), coding["code"])] = weight
        values = frozenset(options.values())
        return ItemSpec(item["linkId"], "choice", options, values, min(values), max(values), 0)
    decimals = int(_ext_value(item, MAX_DECIMALS) or scale.decimals)
    return ItemSpec(
        item["linkId"], "number", {}, frozenset(), Decimal(str(scale.min)), Decimal(str(scale.max)), decimals
    )


def _option_weight(option: dict[str, Any]) -> Decimal | None:
    for url in WEIGHT_URLS:
        for ext in option.get("extension", []) + (option.get("valueCoding") or {}).get("extension", []):
            if ext.get("url") == url and "valueDecimal" in ext:
                return Decimal(str(ext["valueDecimal"]))
    return None


def _ext_value(item: dict[str, Any], url: str) -> Decimal | None:
    for ext in item.get("extension", []):
        if ext.get("url") == url:
            for key in ("valueDecimal", "valueInteger"):
                if key in ext:
                    return Decimal(str(ext[key]))
    return None


def _version_key(version: str) -> tuple[tuple[int, str], ...]:
    """Sort key that orders '1.10.0' after '1.9.0' and still copes with non-numeric parts."""
    return tuple((int(p), "") if p.isdigit() else (-1, p) for p in version.replace("-", ".").split("."))
