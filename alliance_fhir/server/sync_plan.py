"""What a run learns about the server before its first response: how to write, which Questionnaires are ours.

The write mode comes from the CapabilityStatement (:func:`.writes.choose_write_mode`), and the
server ids of our Questionnaires (as ``publish`` put them there) let a response that refers to
``Questionnaire/1005`` be attributed to our canonical. Both come in one request when the
client has not read /metadata yet (:meth:`FhirClient.r4_capabilities_and_search`).

A plan can be kept: serve's worker keeps the last one (:class:`.sync.SyncSession`), refreshed by
each catch-up sync, so a round of notifications costs the re-read and the write, not a
Questionnaire lookup as well. A Questionnaire published since is then attributed by the next
catch-up sync (which reads every response changed since its checkpoint).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import FhirServerError, UnexpectedResponse
from ..fhirclient.client import FhirClient
from ..instruments.catalog import Instrument
from .sync_report import SyncOptions, SyncReport, warn
from .writes import WritePlan, choose_write_mode

__all__ = ["ServerPlan", "plan_server"]


@dataclass(frozen=True)
class ServerPlan:
    """How to write to one server and which of its Questionnaire ids are ours."""

    write: WritePlan
    our_ids: Mapping[str, str]  # server id of one of our Questionnaires -> its url|version
    looked_up: bool  # False: the Questionnaire lookup failed (the run warned); a kept plan is not worth keeping

    def questionnaire_values(self, server: str) -> list[str]:
        """Our Questionnaires by literal reference, relative and on ``server``'s base URL (for the search)."""
        ids = sorted(self.our_ids)
        # absolute ones too, for servers that index references as written
        return [f"Questionnaire/{rid}" for rid in ids] + [f"{server}/Questionnaire/{rid}" for rid in ids]


def plan_server(
    client: FhirClient,
    instruments: Sequence[Instrument],
    options: SyncOptions,
    report: SyncReport,
    results: FhirClient | None = None,
) -> ServerPlan:
    """Refuse a server that is not FHIR R4; choose the write mode; learn our Questionnaires' ids.

    ``client`` is the source (our Questionnaires' ids are its own: its responses refer to them);
    the write mode is the results store's (``results``; the source itself when None), read from
    its own CapabilityStatement, which must be R4 too.

    A lookup that fails for a server reason is a warning in ``report`` (responses referring to
    our Questionnaires by id are then not searched), not a failed run.

    Raises:
        FhirTransportError, FhirServerError: the server is unreachable or not FHIR R4.
    """
    # /metadata and the Questionnaire lookup travel together (one batch): a no-op re-sync then
    # costs 2 requests + 1 per page (this lookup, the first page's ledger check, the pages).
    urls = dict.fromkeys(url for inst in instruments for url in inst.response_urls)  # and the client forms'
    lookup = {"url": ",".join(urls), "_elements": "url,version", "_count": "200"}
    statement, ours = client.r4_capabilities_and_search("Questionnaire", lookup)
    store = client if results is None else results
    if store is not client:
        statement = store.r4_capabilities()
    write = choose_write_mode(statement, options.write_mode or store.config.write_mode)
    known = {c for inst in instruments for c in (inst.canonical, inst.client_canonical)}
    ids: dict[str, str] = {}
    try:
        matches = ours if ours is not None else client.search("Questionnaire", lookup)
        for found in matches:
            canonical = f"{found.get('url')}|{found.get('version')}"
            if isinstance(found.get("id"), str) and canonical in known:
                ids[found["id"]] = canonical
    except FhirServerError as exc:
        if isinstance(exc, UnexpectedResponse):
            raise
        warn(
            report,
            "Questionnaire",
            f"our Questionnaires could not be looked up ({exc}); responses referring to them by id are not searched",
        )
        return ServerPlan(write, ids, looked_up=False)
    return ServerPlan(write, ids, looked_up=True)
