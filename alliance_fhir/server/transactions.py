"""Loading resources that carry their own ids: transaction Bundles of ``PUT Type/id``.

A PUT to a fixed id is idempotent (the second run updates the same resource), so these Bundles
may be retried. Used by the demo caseload, the integration tests and the sync benchmark, which
all load client-assigned ids into a server.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ..fhirclient.client import FhirClient

__all__ = ["put_by_id", "put_by_id_bundles"]


def put_by_id_bundles(resources: Sequence[dict[str, Any]], batch: int) -> Iterator[dict[str, Any]]:
    """Transaction Bundles of at most ``batch`` entries, each ``PUT <resourceType>/<id>``, in order."""
    for start in range(0, len(resources), batch):
        entries = [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in resources[start : start + batch]
        ]
        yield {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def put_by_id(client: FhirClient, resources: Sequence[dict[str, Any]], batch: int = 50) -> int:
    """PUT every resource by id, ``batch`` per transaction, one transaction at a time; returns the count.

    Raises:
        FhirServerError, FhirTransportError: a transaction failed (earlier ones have landed).
    """
    for bundle in put_by_id_bundles(resources, batch):
        client.transaction(bundle, idempotent=True)
    return len(resources)
