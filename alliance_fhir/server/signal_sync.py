"""Writing alliance signals to a FHIR server: read score Observations, detect, upsert DetectedIssues.

Idempotent like sync: each DetectedIssue is written by conditional update on its deterministic
identifier and only when its content changed, so a second run writes nothing; an issue the
current scores no longer support is marked entered-in-error (withdrawn), never deleted. Tasks
are created once (conditional create) and then left to the clinician.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .._ids import IDENTIFIER_SYSTEM, SIGNAL_IDENTIFIER_SYSTEM, TASK_IDENTIFIER_SYSTEM
from ..errors import NotFound
from ..fhirtypes import comparable
from ..instruments.catalog import Catalog
from ..signals.resources import signal_resources, withdrawn_issues
from ..signals.rules import Signal, detect_signals
from ..signals.trajectory import Trajectories, build_trajectories, context_from_encounters, unbundle
from .client import FhirClient, search_token

__all__ = ["SignalReport", "fetch_trajectories", "run_signals"]

@dataclass
class SignalReport:
    """What one signals run found and wrote."""

    server: str
    dry_run: bool
    observations: int = 0
    signals: int = 0
    active: int = 0
    written: int = 0
    unchanged: int = 0
    withdrawn: int = 0
    tasks_created: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def fetch_trajectories(
    client: FhirClient, catalog: Catalog, patient: str | None = None, tag: dict[str, str] | None = None
) -> Trajectories:
    """Our score Observations (all statuses) and their Encounters, as per-client series."""
    params = {"identifier": f"{IDENTIFIER_SYSTEM}|", "_include": "Observation:encounter", "_count": "500"}
    if patient:
        params["subject"] = patient
    if tag:
        params["_tag"] = search_token(tag)
    observations, encounters = unbundle(client.search_pages("Observation", params))
    return build_trajectories(observations, catalog, context_from_encounters(encounters))


def run_signals(
    client: FhirClient,
    catalog: Catalog,
    *,
    patient: str | None = None,
    tasks: bool = False,
    dry_run: bool = False,
    tag: dict[str, str] | None = None,
) -> tuple[SignalReport, list[Signal], Trajectories]:
    """Detect signals from the server's scores and write them (unless ``dry_run``).

    With ``tag``, only Observations carrying that meta.tag are read, and the DetectedIssues and
    Tasks written carry it too (the demo uses this to stay within its own data).
    """
    report = SignalReport(server=client.base_url, dry_run=dry_run)
    trajectories = fetch_trajectories(client, catalog, patient, tag)
    report.observations = sum(len(s.points) for s in trajectories.series)
    report.problems = list(trajectories.problems)
    signals = detect_signals(trajectories)
    report.signals, report.active = len(signals), sum(1 for s in signals if s.status == "active")
    resources = signal_resources(signals, tasks=tasks)
    if tag:
        for resource in resources:
            if resource["resourceType"] != "Device":
                resource["meta"] = {"tag": [tag]}
    issues = [r for r in resources if r["resourceType"] == "DetectedIssue"]
    existing = _existing(client, "DetectedIssue", SIGNAL_IDENTIFIER_SYSTEM, patient, tag)
    withdrawn = withdrawn_issues(existing.values(), issues)
    report.withdrawn = len(withdrawn)
    writes = [r for r in resources if r["resourceType"] in ("Device", "DetectedIssue") and _changed(r, existing, client)]
    report.unchanged = len(issues) - sum(1 for r in writes if r["resourceType"] == "DetectedIssue")
    new_tasks = [r for r in resources if r["resourceType"] == "Task"]
    if tasks:
        known = _existing(client, "Task", TASK_IDENTIFIER_SYSTEM, None, tag)
        new_tasks = [t for t in new_tasks if t["identifier"][0]["value"] not in known]
    if not dry_run:
        _write(client, writes, withdrawn, new_tasks)
    report.written = sum(1 for r in writes if r["resourceType"] == "DetectedIssue")
    report.tasks_created = len(new_tasks)
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


def _changed(resource: dict[str, Any], existing: dict[str, dict[str, Any]], client: FhirClient) -> bool:
    if resource["resourceType"] == "Device":
        try:
            current = client.read("Device", resource["id"])
        except NotFound:
            return True
        return comparable(current) != comparable(resource)
    old = existing.get(resource["identifier"][0]["value"])
    return old is None or comparable(old) != comparable(resource)


def _write(client: FhirClient, writes: Iterable[dict[str, Any]], withdrawn: Iterable[dict[str, Any]],
           tasks: Iterable[dict[str, Any]]) -> None:
    entries = []
    for resource in list(writes) + list(withdrawn):
        if resource["resourceType"] == "Device":
            url = f"Device/{resource['id']}"
        else:
            ident = next(i for i in resource["identifier"] if i.get("system") == SIGNAL_IDENTIFIER_SYSTEM)
            url = f"DetectedIssue?identifier={ident['system']}|{ident['value']}"
        body = {k: v for k, v in resource.items() if k != "meta"}
        if "tag" in (resource.get("meta") or {}):
            body["meta"] = {"tag": resource["meta"]["tag"]}
        entries.append({"resource": body, "request": {"method": "PUT", "url": url}})
    for start in range(0, len(entries), 50):
        client.transaction({"resourceType": "Bundle", "type": "transaction", "entry": entries[start : start + 50]}, idempotent=True)
    for task in tasks:  # conditional create: never overwrite a clinician's Task
        ident = task["identifier"][0]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
            "resource": task,
            "request": {"method": "POST", "url": "Task", "ifNoneExist": f"identifier={ident['system']}|{ident['value']}"},
        }]}
        client.transaction(bundle, idempotent=True)

