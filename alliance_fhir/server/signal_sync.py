"""Writing alliance signals to a FHIR server: read score Observations, detect, upsert DetectedIssues.

Idempotent like sync: each DetectedIssue is written by conditional update on its deterministic
identifier and only when its content changed, so a second run writes nothing; an issue the
current scores no longer support is marked entered-in-error (withdrawn), never deleted. Tasks
are created once (conditional create) and then follow their signal without taking the
clinician's place: a withdrawn signal's open Task is cancelled, a resolved signal's open Task
gets a note and stays open (``signals.resources.task_follow_ups``). Each update is a PUT by id
with ``If-Match`` on the version read, so a clinician's concurrent edit is never overwritten.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .._ids import IDENTIFIER_SYSTEM, SIGNAL_IDENTIFIER_SYSTEM, TASK_IDENTIFIER_SYSTEM
from .._refs import References, parse_reference
from .._security import NO_LABELS, SecurityLabels, carries_labels
from ..errors import NotFound
from ..fhirclient.client import FhirClient, search_token
from ..fhirtypes import comparable
from ..instruments.catalog import Catalog
from ..signals.prompts import PromptSet
from ..signals.resources import signal_resources, task_follow_ups, withdrawn_issues
from ..signals.rules import SPLIT, Signal, detect_signals
from ..signals.situations import apply_levels, situation_history
from ..signals.trajectory import Trajectories, build_trajectories, context_from_encounters, unbundle

__all__ = [
    "ENCOUNTERS_PER_SEARCH",
    "SignalReport",
    "fetch_encounters",
    "fetch_scores",
    "fetch_trajectories",
    "references_between",
    "run_signals",
]

# Encounter ids per search on the source (a POSTed _search, so the list never makes a long URL).
ENCOUNTERS_PER_SEARCH = 100


@dataclass
class SignalReport:
    """What one signals run found and wrote."""

    server: str  # the results store: where scores are read and DetectedIssues and Tasks written
    dry_run: bool
    observations: int = 0
    signals: int = 0
    active: int = 0
    written: int = 0
    unchanged: int = 0
    withdrawn: int = 0
    tasks_created: int = 0
    tasks_cancelled: int = 0
    tasks_noted: int = 0
    problems: list[str] = field(default_factory=list)
    issue_ids: dict[str, str] = field(default_factory=dict)  # signal key -> DetectedIssue id on the server
    withdrawn_issues: list[dict[str, Any]] = field(default_factory=list)  # the issues marked entered-in-error

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k not in ("issue_ids", "withdrawn_issues")}


def references_between(client: FhirClient, source: FhirClient | None) -> References:
    """How results in ``client`` (the results store) name the resources of ``source`` (None: the store itself)."""
    return References.between((source or client).base_url, client.base_url)


def fetch_scores(
    client: FhirClient,
    patient: str | None = None,
    tag: dict[str, str] | None = None,
    *,
    source: FhirClient | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Our score Observations (all statuses) and their Encounters, as read (the CDS hook adds to them).

    ``client`` is the results store (where the Observations are). The Encounters are where the
    sessions are: on the store itself (``_include``, one request per page), or with a separate
    ``source`` (the EHR) read from there by id (:func:`fetch_encounters`). ``patient`` is named as
    the source names it (``Patient/1``); the store is searched for it absolute on the source too.
    """
    split = source is not None and source is not client
    params = {"identifier": f"{IDENTIFIER_SYSTEM}|", "_count": "500"}
    if not split:
        params["_include"] = "Observation:encounter"
    if patient:
        params["subject"] = references_between(client, source).search(patient)
    if tag:
        params["_tag"] = search_token(tag)
    observations, encounters = unbundle(client.search_pages("Observation", params))
    if split and source is not None:
        encounters += fetch_encounters(source, observations)
    return observations, encounters


def fetch_encounters(source: FhirClient, observations: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Encounters the Observations name, read from the source by id (:data:`ENCOUNTERS_PER_SEARCH` a search).

    References to another server than the source are left out (their sessions are unknown, as an
    ``_include`` that finds nothing would leave them).

    Raises:
        FhirTransportError, FhirServerError: the source could not be read.
    """
    ids = sorted(
        {
            ref.id
            for obs in observations
            if (ref := parse_reference((obs.get("encounter") or {}).get("reference"))) is not None
            and ref.type == "Encounter"
            and ref.on(source.base_url)
        }
    )
    found: list[dict[str, Any]] = []
    for start in range(0, len(ids), ENCOUNTERS_PER_SEARCH):
        chunk = ids[start : start + ENCOUNTERS_PER_SEARCH]
        params = {"_id": ",".join(chunk), "_count": str(len(chunk))}
        found += [r for r in source.search("Encounter", params, post=True) if r.get("resourceType") == "Encounter"]
    return found


def fetch_trajectories(
    client: FhirClient,
    catalog: Catalog,
    patient: str | None = None,
    tag: dict[str, str] | None = None,
    *,
    source: FhirClient | None = None,
) -> Trajectories:
    """Our score Observations (all statuses) and their Encounters, as per-client series (see :func:`fetch_scores`)."""
    observations, encounters = fetch_scores(client, patient, tag, source=source)
    return build_trajectories(
        observations, catalog, context_from_encounters(encounters), references_between(client, source)
    )


def run_signals(
    client: FhirClient,
    catalog: Catalog,
    *,
    patient: str | None = None,
    tasks: bool = False,
    dry_run: bool = False,
    tag: dict[str, str] | None = None,
    security: SecurityLabels = NO_LABELS,
    prompts: PromptSet | None = None,
    source: FhirClient | None = None,
) -> tuple[SignalReport, list[Signal], Trajectories]:
    """Detect signals from the server's scores and write them (unless ``dry_run``).

    ``client`` is the results store: scores are read from it and DetectedIssues and Tasks written
    to it. ``source``, when it is another server (the EHR), is where the sessions' Encounters are read.

    With ``patient``, only that client's scores are read, so a split alliance (which compares the
    members of a joint session) cannot be judged: its DetectedIssues are left as they are, never
    withdrawn (``serve`` runs signals per patient; before this it withdrew every split it saw).
    With ``tag``, only Observations carrying that meta.tag are read, and the DetectedIssues and
    Tasks written carry it too (the demo uses this to stay within its own data). With ``tasks``,
    one Task per open situation (:mod:`~alliance_fhir.signals.situations`), its description
    carrying the ``prompts`` set's question. ``security``
    labels the DetectedIssues and new Tasks; an issue whose content is unchanged but which lacks
    a label is written once more to carry it.
    """
    report = SignalReport(server=client.base_url, dry_run=dry_run)
    references = references_between(client, source)
    trajectories = fetch_trajectories(client, catalog, patient, tag, source=source)
    report.observations = sum(len(s.points) for s in trajectories.series)
    report.problems = list(trajectories.problems)
    signals = detect_signals(trajectories)
    report.signals, report.active = len(signals), sum(1 for s in signals if s.status == "active")
    situations = situation_history(signals, trajectories)
    signals = apply_levels(signals, situations)
    resources = signal_resources(
        signals, situations=situations, tasks=tasks, prompts=prompts, security=security, references=references
    )
    if tag:
        for resource in resources:
            if resource["resourceType"] != "Device":
                resource["meta"] = {**(resource.get("meta") or {}), "tag": [tag]}
    issues = [r for r in resources if r["resourceType"] == "DetectedIssue"]
    searched = references.search(patient) if patient else None
    existing = _existing(client, "DetectedIssue", SIGNAL_IDENTIFIER_SYSTEM, searched, tag)
    withdrawn = withdrawn_issues(existing.values(), issues)
    if patient:  # one client's scores cannot show a split (it compares a joint session's members): keep those
        withdrawn = [w for w in withdrawn if not _is_kind(w, SPLIT)]
    report.withdrawn = len(withdrawn)
    writes = [
        r for r in resources if r["resourceType"] in ("Device", "DetectedIssue") and _changed(r, existing, client)
    ]
    report.unchanged = len(issues) - sum(1 for r in writes if r["resourceType"] == "DetectedIssue")
    new_tasks = [r for r in resources if r["resourceType"] == "Task"]
    known = _existing(client, "Task", TASK_IDENTIFIER_SYSTEM, searched, tag)  # always: Tasks follow their signal
    new_tasks = [t for t in new_tasks if t["identifier"][0]["value"] not in known]
    cancelled, noted = task_follow_ups(known, situations, withdrawn, signals)
    report.issue_ids = {key: str(r["id"]) for key, r in existing.items() if r.get("id")}
    report.withdrawn_issues = withdrawn
    if not dry_run:
        report.issue_ids.update(_write(client, writes, withdrawn, new_tasks))
        _update_tasks(client, cancelled + noted)
    report.written = sum(1 for r in writes if r["resourceType"] == "DetectedIssue")
    report.tasks_created = len(new_tasks)
    report.tasks_cancelled, report.tasks_noted = len(cancelled), len(noted)
    return report, signals, trajectories


def _existing(
    client: FhirClient, rtype: str, system: str, patient: str | None, tag: dict[str, str] | None
) -> dict[str, dict[str, Any]]:
    params = {"identifier": f"{system}|", "_count": "500"}
    if patient:
        params["patient" if rtype == "DetectedIssue" else "subject"] = patient
    if tag:
        params["_tag"] = search_token(tag)
    found = {}
    for resource in client.search(rtype, params):
        for ident in resource.get("identifier", []):
            if ident.get("system") == system:
                found[str(ident.get("value"))] = resource
    return found


def _is_kind(issue: dict[str, Any], kind: str) -> bool:
    return any(c.get("code") == kind for c in (issue.get("code") or {}).get("coding") or [] if isinstance(c, dict))


def _changed(resource: dict[str, Any], existing: dict[str, dict[str, Any]], client: FhirClient) -> bool:
    if resource["resourceType"] == "Device":
        try:
            current = client.read("Device", resource["id"])
        except NotFound:
            return True
        return comparable(current) != comparable(resource)
    old = existing.get(resource["identifier"][0]["value"])
    # comparable() leaves meta out (the server's); our labels are in meta, so they are compared apart
    return old is None or comparable(old) != comparable(resource) or not carries_labels(old, resource)


def _write(
    client: FhirClient,
    writes: Iterable[dict[str, Any]],
    withdrawn: Iterable[dict[str, Any]],
    tasks: Iterable[dict[str, Any]],
) -> dict[str, str]:
    """Write the issues (and create the Tasks); returns the server id of each DetectedIssue written, by signal key."""
    ids: dict[str, str] = {}
    entries = []
    for resource in list(writes) + list(withdrawn):
        if resource["resourceType"] == "Device":
            url = f"Device/{resource['id']}"
        else:
            ident = next(i for i in resource["identifier"] if i.get("system") == SIGNAL_IDENTIFIER_SYSTEM)
            url = f"DetectedIssue?identifier={ident['system']}|{ident['value']}"
        body = {k: v for k, v in resource.items() if k != "meta"} | _our_meta(resource)
        entries.append({"resource": body, "request": {"method": "PUT", "url": url}})
    for start in range(0, len(entries), 50):
        batch = entries[start : start + 50]
        answer = client.transaction({"resourceType": "Bundle", "type": "transaction", "entry": batch}, idempotent=True)
        ids.update(_written_ids(batch, answer))
    for task in tasks:  # conditional create: never overwrite a clinician's Task
        ident = task["identifier"][0]
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": task,
                    "request": {
                        "method": "POST",
                        "url": "Task",
                        "ifNoneExist": f"identifier={ident['system']}|{ident['value']}",
                    },
                }
            ],
        }
        client.transaction(bundle, idempotent=True)
    return ids


def _written_ids(entries: list[dict[str, Any]], answer: dict[str, Any]) -> dict[str, str]:
    """Signal key -> DetectedIssue id, from a transaction-response's ``location`` of each entry (same order)."""
    ids: dict[str, str] = {}
    for entry, result in zip(entries, answer.get("entry") or [], strict=False):
        resource = entry["resource"]
        location = ((result or {}).get("response") or {}).get("location") if isinstance(result, dict) else None
        if resource["resourceType"] != "DetectedIssue" or not isinstance(location, str):
            continue
        written = parse_reference(location)
        if written is not None and written.type == "DetectedIssue":
            ids[resource["identifier"][0]["value"]] = written.id
    return ids


def _update_tasks(client: FhirClient, updated: list[dict[str, Any]]) -> None:
    """PUT each Task by id with If-Match on the version read: a clinician's edit in between wins (412)."""
    entries = []
    for task in updated:
        request: dict[str, str] = {"method": "PUT", "url": f"Task/{task['id']}"}
        version = (task.get("meta") or {}).get("versionId")
        if version:
            request["ifMatch"] = f'W/"{version}"'
        entries.append(
            {"resource": {k: v for k, v in task.items() if k != "meta"} | _our_meta(task), "request": request}
        )
    # not retried: a retry could meet its own first write as a version conflict
    for start in range(0, len(entries), 50):
        client.transaction(
            {"resourceType": "Bundle", "type": "transaction", "entry": entries[start : start + 50]}, idempotent=False
        )


def _our_meta(resource: dict[str, Any]) -> dict[str, Any]:
    """The parts of ``meta`` we write (tags and security labels); the server manages the rest."""
    meta = resource.get("meta") or {}
    kept = {key: meta[key] for key in ("security", "tag") if meta.get(key)}
    return {"meta": kept} if kept else {}
