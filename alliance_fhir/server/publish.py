"""Publishing our content (Questionnaires, CodeSystems) to a FHIR server, idempotently.

Each resource is matched by ``url`` + ``version`` and written by conditional update, so a
second run changes nothing and versions never overwrite each other (the body carries no
``id``: the server keeps one resource per url|version). Each answer is verified: the server
must be FHIR R4, and a write must come back as the same resourceType, url and version (read
back when the server returns no body). Errors about the server itself (connection,
authentication, a server error, an answer we cannot trust) stop the run and propagate; only a
refusal of one resource (a 4xx about it) is that resource's failure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import AuthError, Conflict, FhirServerError, UnexpectedResponse
from ..fhirclient.client import FhirClient, safe_path
from ..fhirtypes import comparable

__all__ = ["PublishResult", "publish_resources"]


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What happened (or would happen, in a dry run) to one resource."""

    resource_type: str
    canonical: str
    action: str  # created | updated | unchanged | failed
    detail: str = ""


def publish_resources(
    client: FhirClient, resources: Iterable[dict[str, Any]], *, dry_run: bool = False
) -> list[PublishResult]:
    """Create or update each resource by ``url|version``; report one result per resource.

    Raises:
        FhirTransportError, AuthError, UnexpectedResponse, FhirServerError: the server is
            unreachable, refuses our credentials, is not FHIR R4, fails (5xx), or answers
            something other than what was written.
    """
    client.r4_capabilities()
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
            return PublishResult(
                rtype, canonical, "failed", "more than one resource on the server has this url|version"
            )
        body = comparable(resource)
        if existing and comparable(existing[0]) == comparable(body):
            return PublishResult(rtype, canonical, "unchanged")
        action = "updated" if existing else "created"
        if not dry_run:
            response = client.conditional_update(rtype, criteria, body)
            _verify(client, response, rtype, url, version)
        return PublishResult(rtype, canonical, action)
    except Conflict as exc:
        return PublishResult(rtype, canonical, "failed", f"conflict: {exc}")
    except (AuthError, UnexpectedResponse):
        raise
    except FhirServerError as exc:
        if exc.status >= 500:
            raise
        return PublishResult(rtype, canonical, "failed", str(exc))


def _verify(client: FhirClient, response: Any, rtype: str, url: str, version: str) -> None:
    """The server must answer 200/201 with what we wrote (or, with no body, have it on a read-back)."""
    where = safe_path(f"{client.base_url}/{rtype}")
    if response.status_code not in (200, 201):
        raise UnexpectedResponse("PUT", where, response.status_code, f"expected 200 or 201 for {url}|{version}")
    body: Any = None
    if response.content.strip():
        try:
            body = response.json()
        except ValueError:
            raise UnexpectedResponse("PUT", where, response.status_code, "the answer is not JSON") from None
    else:
        found = list(client.search(rtype, {"url": url, "version": version, "_count": "2"}))
        body = found[0] if len(found) == 1 else None
    if not isinstance(body, dict) or (body.get("resourceType"), body.get("url"), body.get("version")) != (
        rtype,
        url,
        version,
    ):
        got = (
            f"{body.get('resourceType')} {body.get('url')}|{body.get('version')}"
            if isinstance(body, dict)
            else "nothing usable"
        )
        raise UnexpectedResponse(
            "PUT", where, response.status_code, f"wrote {rtype} {url}|{version}, the server answered with {got}"
        )
