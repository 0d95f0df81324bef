"""Publishing our content (Questionnaires, CodeSystems) to a FHIR server, idempotently.

Each resource is matched by ``url`` + ``version`` and written by conditional update, so a
second run changes nothing and versions never overwrite each other (the body carries no
``id``: the server keeps one resource per url|version).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import AllianceFhirError, Conflict
from .client import FhirClient

__all__ = ["PublishResult", "comparable", "publish_resources"]

_IGNORED = ("id", "meta", "text")


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What happened (or would happen, in a dry run) to one resource."""

    resource_type: str
    canonical: str
    action: str  # created | updated | unchanged | failed
    detail: str = ""


def publish_resources(client: FhirClient, resources: Iterable[dict[str, Any]], *, dry_run: bool = False) -> list[PublishResult]:
    """Create or update each resource by ``url|version``; report one result per resource."""
    return [_publish_with_one_retry(client, resource, dry_run) for resource in resources]


def _publish_with_one_retry(client: FhirClient, resource: dict[str, Any], dry_run: bool) -> PublishResult:
    """Two publishers at once make HAPI refuse one conditional write (409); the second look settles it."""
    result = _publish_one(client, resource, dry_run)
    if result.action == "failed" and result.detail.startswith("conflict:"):
        result = _publish_one(client, resource, dry_run)
    return result


def _publish_one(client: FhirClient, resource: dict[str, Any], dry_run: bool) -> PublishResult:
    rtype, url, version = resource["resourceType"], resource["url"], resource.get("version", "")
    canonical = f"{url}|{version}"
    criteria = {"url": url, "version": version}
    try:
        existing = list(client.search(rtype, {**criteria, "_count": "2"}))
        if len(existing) > 1:
            return PublishResult(rtype, canonical, "failed", "more than one resource on the server has this url|version")
        body = comparable(resource)
        if existing and comparable(existing[0]) == comparable(body):
            return PublishResult(rtype, canonical, "unchanged")
        action = "updated" if existing else "created"
        if not dry_run:
            client.conditional_update(rtype, criteria, body)
        return PublishResult(rtype, canonical, action)
    except Conflict as exc:
        return PublishResult(rtype, canonical, "failed", f"conflict: {exc}")
    except AllianceFhirError as exc:
        return PublishResult(rtype, canonical, "failed", str(exc))


def comparable(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource without what the server manages (id, meta, narrative): equal means nothing to write."""
    return {k: v for k, v in resource.items() if k not in _IGNORED}
