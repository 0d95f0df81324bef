"""Writing back into the EHR (the source), after the results store has the scores: idempotent by the ledger.

For each scored form whose Observation landed in the results store, :class:`EhrWriter` builds
what the plan's routes send (:mod:`alliance_fhir.signals.writeback`: a note, a Communication,
flowsheet rows, or the Observation itself) and writes it with the source's client. The rule that
makes this idempotent without conditional writes or a search by our identifier (the EHRs of
``docs/your-ehr.md`` offer neither) is the record in :mod:`.state.ehr_writes`:

1. an entry ``written`` with the same digest: nothing to do (a re-run writes nothing);
2. no entry: commit ``pending`` (the intent), ``POST``, read back ``GET Type/id`` and check it
   says what we sent, then commit ``written`` with the EHR's id;
3. an entry ``written`` with another digest (a changed score, a withdrawn form): ``PUT Type/id``
   (with ``If-Match`` where the EHR does versioned updates); where it offers no update, a note or
   Communication is replaced by a successor (``relatesTo: replaces`` on a note);
4. an entry left ``pending`` (a run killed between the EHR's 201 and our commit): look for it by
   our identifier, else by patient, where the EHR allows either, and adopt what is found; where
   it allows neither, the form is a failure line for the site (the EHR may hold the resource twice).

Every refusal is a failure with the EHR's reason; nothing is dropped in silence.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .._refs import References, valid_id
from ..errors import AllianceFhirError, FhirServerError, summarise_outcome
from ..fhirclient.client import FhirClient
from ..instruments.catalog import Catalog
from ..instruments.models import InstrumentMapping
from ..signals.rules import detect_signals
from ..signals.situations import Situation, apply_levels, current_situations, situation_history
from ..signals.trajectory import ObservationRef, ScorePoint, Trajectories, parse_time
from ..signals.writeback import (
    WRITEBACK_IDENTIFIER_SYSTEM,
    SessionNote,
    build_communication,
    build_flowsheet_rows,
    build_note,
    content_digest,
)
from .signal_sync import fetch_trajectories
from .state import EhrWrite, ServerPair, StateStore
from .writeback_plan import RoutePlan

__all__ = ["EhrTarget", "EhrWriter", "Landed"]


@dataclass(frozen=True)
class Landed:
    """A score Observation the results store confirmed, for one response (``retracted``: withdrawn)."""

    response_id: str
    observation: dict[str, Any]
    retracted: bool = False

    @property
    def identifier(self) -> str:
        return str(self.observation["identifier"][0]["value"])

    @property
    def subject(self) -> str:
        return str((self.observation.get("subject") or {}).get("reference", ""))


@dataclass(frozen=True)
class EhrTarget:
    """One resource to have in the EHR, under one deterministic identifier."""

    identifier: str
    route: str
    resource: dict[str, Any]
    response_id: str

    @property
    def resource_type(self) -> str:
        return str(self.resource["resourceType"])


class EhrWriter:
    """Writes one run's landed forms into the EHR by the plan's routes (see the module docstring)."""

    def __init__(
        self,
        source: FhirClient,
        results: FhirClient,
        catalog: Catalog,
        store: StateStore,
        plan: RoutePlan,
        server: ServerPair,
    ) -> None:
        self._source, self._results, self._catalog = source, results, catalog
        self._store, self._plan, self._server = store, plan, server
        # the results store's Observations name the EHR's patient absolute when split: read them as the EHR does
        self._refs = References.between(server.source, server.results)
        self.written = 0  # resources created or replaced in the EHR this run

    def write(self, landed: Sequence[Landed]) -> dict[str, str]:
        """Write what each landed form's routes send; returns the failures, by response id, with the reason."""
        failures: dict[str, str] = {}
        by_subject: dict[str, list[Landed]] = defaultdict(list)
        for item in landed:
            by_subject[self._refs.local(item.subject) or item.subject].append(item)
        for subject, items in by_subject.items():
            try:
                targets = self._targets(subject, items)
            except AllianceFhirError as exc:
                for item in items:
                    failures[item.response_id] = f"EHR write-back: the session could not be read back: {exc}"
                continue
            for target in targets:
                if target.response_id in failures:
                    continue
                reason = self._write_one(target)
                if reason is not None:
                    failures[target.response_id] = f"EHR {target.route} ({target.resource_type}): {reason}"
        return failures

    # ------------------------------------------------------------ what to write

    def _targets(self, subject: str, items: list[Landed]) -> list[EhrTarget]:
        needs_history = any(not i.retracted for i in items) and (
            self._plan.message_route is not None or self._plan.scores.route == "flowsheet"
        )
        trajectories = (
            fetch_trajectories(
                self._results, self._catalog, subject or None, source=self._source if self._server.split else None
            )
            if needs_history and subject
            else None
        )
        situations = _open_situations(trajectories, subject) if trajectories is not None else []
        targets: list[EhrTarget] = []
        for item in items:
            note = self._note(item, trajectories, situations)
            if note is not None:
                targets += self._routes(item, note)
        return targets

    def _note(self, item: Landed, trajectories: Trajectories | None, situations: list[Situation]) -> SessionNote | None:
        mapping = self._mapping(item.observation)
        if mapping is None:
            return None
        point = _point_of(trajectories, item.identifier) if trajectories is not None else None
        if point is None:
            point = _bare_point(item.observation, mapping, self._refs)
        situation = next((s for s in situations if s.latest.observation.value == item.identifier), None)
        if not self._plan.signals_in_message:
            situation = None
        return SessionNote(item.identifier, point.subject, point.encounter, mapping, point, situation, item.retracted)

    def _routes(self, item: Landed, note: SessionNote) -> list[EhrTarget]:
        plan, found = self._plan, []
        if plan.message_route == "note":
            found.append(build_note(note, note_type=plan.note_type))
        elif plan.message_route == "communication":
            found.append(build_communication(note))
        if plan.scores.route == "flowsheet" and plan.flowsheet is not None:
            found += build_flowsheet_rows(note, plan.flowsheet)
        if plan.scores.route == "observation" and not plan.one_server:
            copy = {k: v for k, v in item.observation.items() if k not in ("id", "meta")}
            copy["identifier"] = [
                *copy.get("identifier", []),
                {"system": WRITEBACK_IDENTIFIER_SYSTEM, "value": item.identifier},
            ]
            found.append(copy)
        return [EhrTarget(_our_identifier(r), _route_of(r, plan), r, item.response_id) for r in found]

    def _mapping(self, observation: dict[str, Any]) -> InstrumentMapping | None:
        codes = {
            str(c.get("code")) for c in (observation.get("code") or {}).get("coding", []) or [] if isinstance(c, dict)
        }
        for inst in self._catalog:
            if inst.mapping.scales[0].codes[0].code in codes:
                return inst.mapping
        return None

    # ------------------------------------------------------------ writing one

    def _write_one(self, target: EhrTarget) -> str | None:
        """Bring the EHR to hold ``target`` (see the module docstring); the failure reason, or None."""
        digest = content_digest(target.resource) + ("|withdrawn" if _withdrawn(target.resource) else "")
        entry = self._store.ehr_writes.lookup(self._server, [target.identifier]).get(target.identifier)
        if entry is not None and entry.status == "written" and entry.digest == digest:
            return None
        try:
            if entry is not None and entry.status == "pending":
                entry, problem = self._recover(target, entry)
                if problem is not None:
                    return problem
                if entry is not None and entry.digest == digest:
                    return None
            if entry is None:
                if _withdrawn(target.resource):
                    return None  # never written into the EHR: nothing to withdraw
                return self._create(target, digest, replaces=None)
            return self._replace(target, entry, digest)
        except FhirServerError as exc:
            return _refusal(exc)
        except AllianceFhirError as exc:
            return str(exc)

    def _create(self, target: EhrTarget, digest: str, replaces: EhrWrite | None) -> str | None:
        resource = dict(target.resource)
        if replaces is not None and replaces.resource_id:
            resource = _successor(resource, replaces.resource_id)
        pending = EhrWrite(
            target.identifier,
            target.route,
            target.resource_type,
            "pending",
            replaces.resource_id if replaces is not None else None,
            None,
            replaces.digest if replaces is not None else None,
            target.response_id,
        )
        self._store.ehr_writes.put(self._server, pending)  # the intent, committed before the create is sent
        answer = self._source.request("POST", target.resource_type, json=resource, idempotent=False)
        new_id = _created_id(answer.headers.get("Location", ""), answer.content, target.resource_type)
        if new_id is None:
            return f"the EHR answered HTTP {answer.status_code} without the id of the {target.resource_type} it created"
        return self._confirm(target, resource, new_id, digest, answer.content)

    def _replace(self, target: EhrTarget, entry: EhrWrite, digest: str) -> str | None:
        caps = self._plan.capabilities
        if not caps.can(target.resource_type, "update") or not entry.resource_id:
            if target.resource_type == "Observation":
                return (
                    f"the EHR offers no Observation update: the row written before ({entry.resource_id}) "
                    "still shows the old value; correct it in the EHR"
                )
            return self._create(target, digest, replaces=entry)
        resource = {**target.resource, "id": entry.resource_id}
        headers = (
            {"If-Match": f'W/"{entry.version_id}"'}
            if caps.versioned_update.get(target.resource_type) and entry.version_id
            else None
        )
        answer = self._source.request(
            "PUT", f"{target.resource_type}/{entry.resource_id}", json=resource, headers=headers
        )
        return self._confirm(target, resource, entry.resource_id, digest, answer.content)

    def _confirm(
        self, target: EhrTarget, sent: dict[str, Any], resource_id: str, digest: str, answered: bytes
    ) -> str | None:
        """Read back what the EHR holds under ``resource_id``; record it only if it says what we sent.

        Where the EHR offers no read of the type (MEDITECH's Communication is create-only), the
        body of its 2xx answer is checked instead, when it returned one.
        """
        if self._plan.capabilities.can(target.resource_type, "read"):
            held = self._source.read(target.resource_type, resource_id)
        else:
            held = _body(answered) or {**sent, "id": resource_id}
        mismatch = _differs(sent, held)
        if mismatch:
            return f"{target.resource_type}/{resource_id} read back differs from what was written ({mismatch})"
        version = (held.get("meta") or {}).get("versionId")
        self._store.ehr_writes.put(
            self._server,
            EhrWrite(
                target.identifier,
                target.route,
                target.resource_type,
                "written",
                resource_id,
                str(version) if version else None,
                digest,
                target.response_id,
            ),
        )
        self.written += 1
        return None

    def _recover(self, target: EhrTarget, entry: EhrWrite) -> tuple[EhrWrite | None, str | None]:
        """A pending entry: a create may have landed unrecorded. Find it where the EHR lets us, else report."""
        caps, kind = self._plan.capabilities, target.resource_type
        token = f"{WRITEBACK_IDENTIFIER_SYSTEM}|{target.identifier}"
        if caps.searches_by(kind, "identifier"):
            found = list(self._source.search(kind, {"identifier": token}))
        else:
            param = next((p for p in ("patient", "subject") if caps.searches_by(kind, p)), None)
            subject = str((target.resource.get("subject") or {}).get("reference", ""))
            if param is None or not subject:
                return None, (
                    "a previous run stopped after sending this resource and before recording it, and the EHR "
                    f"offers no {kind} search by identifier or patient: it may hold it twice. Check the chart, "
                    "then dismiss this failure"
                )
            found = [r for r in self._source.search(kind, {param: subject}) if _has_identifier(r, target.identifier)]
        found = [r for r in found if r.get("id") != entry.resource_id or entry.resource_id is None]
        if not found:
            previous = (
                replace(entry, status="written") if entry.resource_id else None
            )  # the successor never landed: the one it replaces stands
            return previous, None
        if len(found) > 1:
            ids = ", ".join(str(r.get("id")) for r in found[:5])
            return (
                None,
                f"the EHR holds {len(found)} {kind} resources with our identifier ({ids}): remove the extra ones",
            )
        held = found[0]
        version = (held.get("meta") or {}).get("versionId")
        adopted = EhrWrite(
            target.identifier,
            target.route,
            kind,
            "written",
            str(held["id"]),
            str(version) if version else None,
            content_digest(held) + ("|withdrawn" if _withdrawn(held) else ""),
            target.response_id,
        )
        self._store.ehr_writes.put(self._server, adopted)
        return adopted, None


# ---------------------------------------------------------------- helpers


def _open_situations(trajectories: Trajectories, subject: str) -> list[Situation]:
    signals = detect_signals(trajectories)
    situations = situation_history(signals, trajectories)
    signals = apply_levels(signals, situations)
    return current_situations(signals, trajectories, subject, on_track=False)


def _point_of(trajectories: Trajectories, identifier: str) -> ScorePoint | None:
    return next(
        (p for s in trajectories.series for p in s.points if p.observation.value == identifier),
        None,
    )


def _bare_point(observation: dict[str, Any], mapping: InstrumentMapping, refs: References) -> ScorePoint:
    """A score known only from its Observation (a withdrawn one is in no series): no session number."""
    when_text = observation.get("effectiveDateTime")
    when = parse_time(when_text) if isinstance(when_text, str) else datetime(1970, 1, 1, tzinfo=UTC)
    value = (observation.get("valueQuantity") or {}).get("value", 0)
    identifier = str(observation["identifier"][0]["value"])
    return ScorePoint(
        instrument=mapping.instrument,
        subject=refs.local((observation.get("subject") or {}).get("reference")) or "",
        focus=None,
        episode=None,
        session=None,
        encounter=(observation.get("encounter") or {}).get("reference"),
        time=when,
        value=Decimal(str(value)),
        subscales=(),
        observation=ObservationRef(identifier, observation.get("id"), None, identifier),
        status=str(observation.get("status", "")),
        authored=when,
    )


def _our_identifier(resource: dict[str, Any]) -> str:
    return next(
        str(i["value"]) for i in resource.get("identifier", []) if i.get("system") == WRITEBACK_IDENTIFIER_SYSTEM
    )


def _route_of(resource: dict[str, Any], plan: RoutePlan) -> str:
    kind = resource["resourceType"]
    if kind == "DocumentReference":
        return "note"
    if kind == "Communication":
        return "communication"
    return plan.scores.route


def _withdrawn(resource: dict[str, Any]) -> bool:
    return resource.get("status") == "entered-in-error"


def _has_identifier(resource: dict[str, Any], value: str) -> bool:
    return any(
        isinstance(i, dict) and i.get("system") == WRITEBACK_IDENTIFIER_SYSTEM and i.get("value") == value
        for i in resource.get("identifier", []) or []
    )


def _successor(resource: dict[str, Any], replaced: str) -> dict[str, Any]:
    """What replaces a resource the EHR cannot update: a note that says so, a message marked as a correction."""
    if resource["resourceType"] == "DocumentReference":
        return {
            **resource,
            "status": "current",
            "relatesTo": [{"code": "replaces", "target": {"reference": f"DocumentReference/{replaced}"}}],
        }
    if resource["resourceType"] == "Communication":
        payload = resource.get("payload") or [{}]
        text = "Correction of an earlier message about this session.\n" + str(payload[0].get("contentString", ""))
        return {**resource, "status": "completed", "payload": [{"contentString": text}]}
    return resource


def _body(content: bytes) -> dict[str, Any] | None:
    try:
        found = json.loads(content or b"null")
    except ValueError:
        return None
    return found if isinstance(found, dict) and found.get("resourceType") else None


def _created_id(location: str, body: bytes, resource_type: str) -> str | None:
    """The id the EHR gave a create: from ``Location`` (``.../Type/id/_history/1``), else the body."""
    parts = [p for p in location.split("?")[0].split("/") if p]
    if resource_type in parts:
        candidate = parts[parts.index(resource_type) + 1] if parts.index(resource_type) + 1 < len(parts) else None
        if valid_id(candidate):
            return candidate
    try:
        found = json.loads(body or b"{}").get("id")
    except (ValueError, AttributeError):
        return None
    return found if valid_id(found) else None


def _differs(sent: dict[str, Any], held: dict[str, Any]) -> str | None:
    """The first element we sent that the EHR's copy does not hold as sent (None: it holds all of it)."""
    if held.get("resourceType") != sent.get("resourceType"):
        return "another resource type"
    for key in ("identifier", "status", "subject", "content", "payload", "valueQuantity", "code", "relatesTo"):
        if key in sent and not _holds(sent[key], held.get(key)):
            return key
    return None


def _holds(sent: Any, held: Any) -> bool:
    if isinstance(sent, dict):
        return isinstance(held, dict) and all(_holds(v, held.get(k)) for k, v in sent.items())
    if isinstance(sent, list):
        return (
            isinstance(held, list)
            and len(held) >= len(sent)
            and all(_holds(s, h) for s, h in zip(sent, held, strict=False))
        )
    if isinstance(sent, float | int) and isinstance(held, float | int):
        return float(sent) == float(held)
    return bool(sent == held)


def _refusal(exc: FhirServerError) -> str:
    """The EHR's refusal in one line: its status and its OperationOutcome's words."""
    outcome = getattr(exc, "outcome", None)
    said = summarise_outcome(outcome) if isinstance(outcome, dict) else ""
    return f"refused: HTTP {exc.status}{': ' + said if said else ''}"


def landed_of(items: Iterable[tuple[str, dict[str, Any], bool]]) -> list[Landed]:
    """Landed forms from (response id, Observation, withdrawn) triples (the pipeline's)."""
    return [Landed(rid, obs, retracted) for rid, obs, retracted in items]
