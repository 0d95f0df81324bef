"""Score Observations -> per-client, per-instrument, per-therapist, per-episode time series.

Signals and the report never read FHIR JSON themselves: they read the :class:`Series` built
here, so the rules about which Observation counts live in one place:

- only ``final``, ``amended`` and ``corrected`` Observations count; ``entered-in-error`` (and
  anything not yet final) is skipped;
- versions of one score share its deterministic ``identifier``: the latest version wins
  (``meta.lastUpdated``, then ``meta.versionId``, then status), so an amendment replaces the
  score and a later ``entered-in-error`` withdraws it;
- a session is ordered by its Encounter's ``period.start`` when the caller supplies Encounters
  (:func:`context_from_encounters`), otherwise by ``effectiveDateTime`` (the response's
  ``authored``); ties are broken by encounter and identifier, so the order is always the same;
- a form filled twice in one Encounter counts once: the later ``authored`` counts, whether or not
  Encounters are supplied (the same score, so the same signals, either way); at equal
  ``authored`` the lower score counts, so a tie can never hide a low alliance; the replaced form
  is named in ``Trajectories.problems``;
- series are kept apart by subject, instrument, focus (the therapist the alliance is with) and
  episode of care, because a drop from one therapist's score to another's is not a rupture;
- the subject, encounter and therapist are read as the source names them (``Patient/1``): a score
  in a results store names them absolute on the source (``https://ehr/fhir/Patient/1``), one
  written on the source itself (or before results stores) relative, and both are the same client
  in the same series, so the signals' identifiers do not depend on where the scores are kept;
- sessions of the episode without a score are kept (``Series.missing``) and counted in
  ``ScorePoint.session_number``, so "the first three sessions" means sessions, not scores.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .._ids import INSTANTIATES
from .._refs import ONE_SERVER, References
from .._time import instant_or_none, parse_instant
from ..errors import AllianceFhirError, InputError
from ..instruments.catalog import Catalog
from ..instruments.models import InstrumentMapping

__all__ = [
    "EncounterInfo",
    "MissingSession",
    "ObservationRef",
    "ScorePoint",
    "Series",
    "SessionContext",
    "Trajectories",
    "build_trajectories",
    "context_from_encounters",
    "parse_time",
    "unbundle",
]

_COUNTED = {"final": 0, "amended": 1, "corrected": 1}
_STATUS_RANK = {
    "registered": -2,
    "preliminary": -1,
    "final": 0,
    "amended": 1,
    "corrected": 1,
    "cancelled": 2,
    "entered-in-error": 3,
}
_EPOCH = datetime(1, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ObservationRef:
    """How a signal points back to a score Observation: server id when known, identifier always when present."""

    key: str
    id: str | None = None
    system: str | None = None
    value: str | None = None

    def reference(self) -> dict[str, Any]:
        """A FHIR Reference: literal (``Observation/id``) when known, plus the logical identifier."""
        ref: dict[str, Any] = {}
        if self.id:
            ref["reference"] = f"Observation/{self.id}"
        if self.value:
            ref["type"] = "Observation"
            ref["identifier"] = {"system": self.system, "value": self.value} if self.system else {"value": self.value}
        return ref or {"display": self.key}


@dataclass(frozen=True, slots=True)
class ScorePoint:
    """One counted score of one session."""

    instrument: str
    subject: str
    focus: str | None
    episode: str | None
    session: str | None
    encounter: str | None
    time: datetime
    value: Decimal
    subscales: tuple[tuple[str, Decimal], ...]
    observation: ObservationRef
    status: str
    session_number: int = 0
    missed_before: int = 0
    authored: datetime | None = None  # the form's own time (effectiveDateTime), even when ``time`` is the Encounter's

    def scale(self, scale_id: str) -> Decimal | None:
        """The value of a scale: ``total`` or a subscale id; None when the Observation lacks it."""
        if scale_id == "total":
            return self.value
        return dict(self.subscales).get(scale_id)


@dataclass(frozen=True, slots=True)
class MissingSession:
    """A session of the episode that has no counted score for this series."""

    encounter: str
    time: datetime
    session_number: int


@dataclass(frozen=True, slots=True)
class Series:
    """The time-ordered scores of one client, on one instrument, with one therapist, in one episode."""

    subject: str
    instrument: str
    focus: str | None
    episode: str | None
    mapping: InstrumentMapping
    points: tuple[ScorePoint, ...]
    missing: tuple[MissingSession, ...] = ()

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.subject, self.instrument, self.focus or "", self.episode or "")


@dataclass(frozen=True, slots=True)
class Trajectories:
    """Every series found, plus one sentence per Observation that could not be used."""

    series: tuple[Series, ...]
    problems: tuple[str, ...] = ()

    def for_subject(self, subject: str) -> list[Series]:
        return [s for s in self.series if s.subject == subject]

    def subjects(self) -> list[str]:
        return sorted({s.subject for s in self.series})


@dataclass(frozen=True, slots=True)
class EncounterInfo:
    """What ordering and grouping need from an Encounter."""

    reference: str
    subject: str | None = None
    start: datetime | None = None
    episode: str | None = None
    part_of: str | None = None
    participants: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SessionContext:
    """Encounters by reference; empty when the caller has only Observations."""

    encounters: Mapping[str, EncounterInfo] = field(default_factory=dict)


def parse_time(text: str) -> datetime:
    """A FHIR dateTime (possibly partial) as an aware datetime; naive times are taken as UTC.

    Raises:
        InputError: not a FHIR date or dateTime.
    """
    try:
        return parse_instant(text, partial=True)
    except ValueError as exc:
        raise InputError(text, "not a FHIR dateTime") from exc


def unbundle(resources: Iterable[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(Observations, Encounters) from resources and Bundles of them (nested Bundles too), in order."""
    observations: list[dict[str, Any]] = []
    encounters: list[dict[str, Any]] = []
    for resource in resources:
        if not isinstance(resource, dict):
            continue
        if resource.get("resourceType") == "Bundle":
            entries = resource.get("entry")
            inner = (
                unbundle(e.get("resource") for e in entries if isinstance(e, dict))
                if isinstance(entries, list)
                else ([], [])
            )
            observations += inner[0]
            encounters += inner[1]
        elif resource.get("resourceType") == "Observation":
            observations.append(resource)
        elif resource.get("resourceType") == "Encounter":
            encounters.append(resource)
    return observations, encounters


def context_from_encounters(encounters: Iterable[dict[str, Any]]) -> SessionContext:
    """Read period.start, episodeOfCare, partOf (a shared couple/group session) and participants."""
    found: dict[str, EncounterInfo] = {}
    for enc in encounters:
        if enc.get("resourceType") != "Encounter" or not enc.get("id"):
            continue
        ref = f"Encounter/{enc['id']}"
        start = (enc.get("period") or {}).get("start")
        episodes = [e.get("reference") for e in enc.get("episodeOfCare") or [] if isinstance(e, dict)]
        people = [
            (p.get("individual") or {}).get("reference") for p in enc.get("participant") or [] if isinstance(p, dict)
        ]
        found[ref] = EncounterInfo(
            reference=ref,
            subject=(enc.get("subject") or {}).get("reference"),
            start=_maybe_time(start),
            episode=next((e for e in episodes if e), None),
            part_of=(enc.get("partOf") or {}).get("reference"),
            participants=tuple(p for p in people if p),
        )
    return SessionContext(found)


def build_trajectories(
    observations: Iterable[dict[str, Any]],
    catalog: Catalog,
    context: SessionContext | None = None,
    references: References = ONE_SERVER,
) -> Trajectories:
    """Group counted score Observations into series, ordered by session.

    Observations that are not score Observations of a loaded instrument, or that lack a
    subject, a value or a time, are left out with a sentence in ``Trajectories.problems``.
    ``references`` knows the source's base URL: references absolute on it read as relative ones.
    """
    context = context or SessionContext()
    problems: list[str] = []
    latest = _latest_versions(observations)
    groups: dict[tuple[str, str, str, str], list[ScorePoint]] = defaultdict(list)
    mappings: dict[str, InstrumentMapping] = {}
    for key, obs in latest.items():
        if obs.get("status") not in _COUNTED:
            continue
        try:
            mapping = _mapping_of(obs, key, catalog)
            point = _point(obs, key, mapping, context, references)
        except InputError as exc:
            problems.append(str(exc))
            continue
        mappings[mapping.instrument] = mapping
        groups[(point.subject, point.instrument, point.focus or "", point.episode or "")].append(point)
    series = [_series(points, mappings[k[1]], context, problems) for k, points in sorted(groups.items())]
    return Trajectories(tuple(series), tuple(problems))


def _maybe_time(text: Any) -> datetime | None:
    """A FHIR dateTime that may be absent or malformed: None for those."""
    return instant_or_none(text, partial=True)


def _identity(obs: dict[str, Any], index: int) -> str:
    for ident in obs.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("value"):
            return f"{ident.get('system', '')}|{ident['value']}"
    if obs.get("id"):
        return f"Observation/{obs['id']}"
    return f"Observation #{index + 1} (no id or identifier)"


def _version_rank(obs: dict[str, Any]) -> tuple[datetime, int, int]:
    meta = obs.get("meta") or {}
    version = str(meta.get("versionId", ""))
    return (
        _maybe_time(meta.get("lastUpdated")) or _EPOCH,
        int(version) if version.isdigit() else 0,
        _STATUS_RANK.get(obs.get("status", ""), -3),
    )


def _latest_versions(observations: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One Observation per identity: the latest version (so amendments replace, withdrawals remove)."""
    latest: dict[str, dict[str, Any]] = {}
    for index, obs in enumerate(observations):
        if not isinstance(obs, dict) or obs.get("resourceType") != "Observation":
            continue
        key = _identity(obs, index)
        if key not in latest or _version_rank(obs) >= _version_rank(latest[key]):
            latest[key] = obs
    return latest


def _mapping_of(obs: dict[str, Any], key: str, catalog: Catalog) -> InstrumentMapping:
    for ext in obs.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == INSTANTIATES and isinstance(ext.get("valueCanonical"), str):
            try:
                return catalog.resolve(ext["valueCanonical"])[0].mapping
            except AllianceFhirError:
                break
    codes = {
        (c.get("system"), c.get("code")) for c in (obs.get("code") or {}).get("coding") or [] if isinstance(c, dict)
    }
    for inst in catalog:
        if any((c.system, c.code) in codes for c in inst.mapping.total.codes):
            return inst.mapping
    raise InputError(key, "not a score Observation of a loaded instrument")


def _point(
    obs: dict[str, Any], key: str, mapping: InstrumentMapping, context: SessionContext, refs: References
) -> ScorePoint:
    subject = refs.local((obs.get("subject") or {}).get("reference"))
    if not isinstance(subject, str):
        raise InputError(key, "no subject reference")
    value = _decimal((obs.get("valueQuantity") or {}).get("value"))
    if value is None:
        raise InputError(key, "no numeric valueQuantity")
    encounter = refs.local((obs.get("encounter") or {}).get("reference"))
    info = context.encounters.get(encounter) if isinstance(encounter, str) else None
    time = (info.start if info else None) or _maybe_time(obs.get("effectiveDateTime"))
    time = time or _maybe_time((obs.get("effectivePeriod") or {}).get("start"))
    if time is None:
        raise InputError(key, "no session time (no effectiveDateTime and no known Encounter start)")
    encounter = encounter if isinstance(encounter, str) else None
    return ScorePoint(
        instrument=mapping.instrument,
        subject=subject,
        focus=refs.local(_dyad(obs, mapping)),
        episode=info.episode if info else None,
        session=(info.part_of or encounter) if info else encounter,
        encounter=encounter,
        time=time,
        value=value,
        subscales=_subscales(obs, mapping),
        observation=ObservationRef(key, obs.get("id"), *_identifier(obs)),
        status=str(obs["status"]),
        authored=_maybe_time(obs.get("effectiveDateTime")),
    )


def _identifier(obs: dict[str, Any]) -> tuple[str | None, str | None]:
    for ident in obs.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("value"):
            return ident.get("system"), ident["value"]
    return None, None


def _dyad(obs: dict[str, Any], mapping: InstrumentMapping) -> str | None:
    """The therapist of the dyad: ``focus``; on a therapist's own form, its performer when focus is absent."""
    refs = [f.get("reference") for f in obs.get("focus") or [] if isinstance(f, dict)]
    if mapping.respondent == "therapist" and not any(refs):
        refs = [p.get("reference") for p in obs.get("performer") or [] if isinstance(p, dict)]
    return next((r for r in refs if isinstance(r, str)), None)


def _subscales(obs: dict[str, Any], mapping: InstrumentMapping) -> tuple[tuple[str, Decimal], ...]:
    by_code = {(c.system, c.code): s.id for s in mapping.subscales for c in s.codes}
    found = []
    for comp in obs.get("component") or []:
        codes = [(c.get("system"), c.get("code")) for c in (comp.get("code") or {}).get("coding") or []]
        scale = next((by_code[c] for c in codes if c in by_code), None)
        value = _decimal((comp.get("valueQuantity") or {}).get("value"))
        if scale and value is not None:
            found.append((scale, value))
    return tuple(found)


def _decimal(value: Any) -> Decimal | None:
    # str() first: 35.1 must stay 35.1, not the binary float's 35.10000000000000142...
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


def _order(point: ScorePoint) -> tuple[datetime, str, str]:
    return (point.time, point.encounter or "", point.observation.key)


def _series(
    points: list[ScorePoint], mapping: InstrumentMapping, context: SessionContext, problems: list[str]
) -> Series:
    points = _one_per_session(sorted(points, key=_order), problems)
    first = points[0]
    timeline = _timeline(points, first, context)
    numbered: list[ScorePoint] = []
    missing: list[MissingSession] = []
    missed = 0
    by_encounter = {p.encounter: p for p in points if p.encounter}
    for number, (time, encounter, own) in enumerate(timeline, start=1):
        point = own or by_encounter.get(encounter or "")
        if point is None:
            missing.append(MissingSession(encounter or "", time, number))
            missed += 1
            continue
        numbered.append(replace(point, session_number=number, missed_before=missed))
        missed = 0
    return Series(first.subject, first.instrument, first.focus, first.episode, mapping, tuple(numbered), tuple(missing))


def _one_per_session(points: list[ScorePoint], problems: list[str]) -> list[ScorePoint]:
    """Two scores for one encounter (a form filled twice): the later ``authored`` counts, the other is reported.

    The choice never depends on the input order, the identifiers or whether Encounters are known.
    At equal ``authored`` (two forms stamped the same second) the lower score counts: a tie is
    ambiguous, and the cautious reading never hides a low alliance or a drop.
    """
    groups: dict[str, list[ScorePoint]] = {}
    for point in points:
        if point.encounter:
            groups.setdefault(point.encounter, []).append(point)
    replaced: set[int] = set()
    for encounter, group in groups.items():
        if len(group) < 2:
            continue
        kept = max(group, key=_counts_first)
        for other in sorted((p for p in group if p is not kept), key=_counts_first):
            replaced.add(id(other))
            tie = (other.authored or other.time) == (kept.authored or kept.time)
            why = (
                "a form authored at the same time with a lower score (ties: the lower score counts)"
                if tie
                else "a later form"
            )
            problems.append(f"{other.observation.key}: {why} for {encounter} replaces it ({kept.observation.key})")
    return [p for p in points if id(p) not in replaced]


def _counts_first(point: ScorePoint) -> tuple[datetime, Decimal, str]:
    """Which of one encounter's forms counts: the latest authored, then the lowest score, then the identifier."""
    return (point.authored or point.time, -point.value, point.observation.key)


def _timeline(
    points: list[ScorePoint], first: ScorePoint, context: SessionContext
) -> list[tuple[datetime, str | None, ScorePoint | None]]:
    """Every session of the series' episode: scored ones plus known Encounters without a score."""
    rows: list[tuple[datetime, str | None, ScorePoint | None]] = [
        (p.time, p.encounter, p) for p in points if not p.encounter
    ]
    seen = set()
    for point in points:
        if point.encounter:
            rows.append((point.time, point.encounter, None))
            seen.add(point.encounter)
    for info in context.encounters.values():
        if (
            info.reference in seen
            or info.start is None
            or info.subject != first.subject
            or info.episode != first.episode
        ):
            continue
        if first.focus and info.participants and first.focus not in info.participants:
            continue
        rows.append((info.start, info.reference, None))
    rows.sort(key=lambda r: (r[0], r[1] or "", r[2].observation.key if r[2] else ""))
    return rows
