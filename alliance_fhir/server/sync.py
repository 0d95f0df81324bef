"""The sync use case: find completed responses on a server, score them, write Observations.

A run is incremental (from a durable checkpoint, with an overlap window for late commits),
idempotent (deterministic Observation identifiers written by conditional update, a ledger of
response versions already handled), resumable (a killed run leaves the checkpoint where it
was; the ledger and conditional writes make the re-run converge), and streaming (one page
of responses and a bounded number of write batches in memory at a time).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .._ids import IDENTIFIER_SYSTEM
from ..errors import FhirServerError, FhirTransportError, InstrumentError, ScoringError
from ..instruments.catalog import Catalog, Instrument
from ..scoring.engine import resource_ref, score_response
from ..scoring.observations import build_observation, observation_identifier_for
from .client import FhirClient, is_match, search_token
from .state import LedgerEntry, StateStore

__all__ = ["SyncFailure", "SyncOptions", "SyncReport", "run_sync"]

logger = logging.getLogger(__name__)
_SEARCH_STATUSES = "completed,amended,entered-in-error"


@dataclass(frozen=True)
class SyncOptions:
    """What to sync; everything else comes from the client's ServerConfig."""

    since: str | None = None
    patient: str | None = None
    instruments: Sequence[str] = ()
    dry_run: bool = False
    tag: dict[str, str] | None = None  # only responses with this meta.tag; the Observations carry it too


@dataclass(frozen=True, slots=True)
class SyncFailure:
    """One response that could not be scored or written: its reference and the reason."""

    resource: str
    reason: str


@dataclass
class SyncReport:
    """Counts and failures of one run (``--json`` prints this)."""

    server: str
    dry_run: bool
    since: str | None = None
    checkpoint: str | None = None
    found: int = 0
    scored: int = 0
    written: int = 0
    unchanged: int = 0
    retracted: int = 0
    failed: int = 0
    requests: int = 0
    seconds: float = 0.0
    failures: list[SyncFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in vars(self).items() if k != "failures"}
        data["failures"] = [{"resource": f.resource, "reason": f.reason} for f in self.failures]
        return data


@dataclass
class _Write:
    response_id: str
    version_id: str
    identifier: str
    observation: dict[str, Any]
    outcome: str = "written"


_Written = tuple[_Write, str | None]  # the write, and the failure reason (None when it landed)

def run_sync(
    client: FhirClient,
    catalog: Catalog,
    store: StateStore,
    options: SyncOptions = SyncOptions(),
    on_progress: Callable[[SyncReport], None] | None = None,
) -> SyncReport:
    """One sync run against ``client``'s server.

    Raises:
        FhirTransportError, FhirServerError: the search itself failed (nothing is lost: the
            checkpoint does not move).
    """
    started = time.perf_counter()
    requests_before = client.requests_sent
    run = _Run(client, catalog, store, options, on_progress)
    try:
        run.execute()
    finally:
        run.report.requests = client.requests_sent - requests_before
        run.report.seconds = round(time.perf_counter() - started, 3)
    return run.report


class _Run:
    def __init__(
        self,
        client: FhirClient,
        catalog: Catalog,
        store: StateStore,
        options: SyncOptions,
        on_progress: Callable[[SyncReport], None] | None,
    ) -> None:
        self.client, self.catalog, self.store, self.options = client, catalog, store, options
        self.server = client.base_url
        self.report = SyncReport(server=self.server, dry_run=options.dry_run)
        self.instruments = [catalog.get(ref) for ref in options.instruments] if options.instruments else list(catalog)
        self.on_progress = on_progress or (lambda _report: None)
        self.write_failed = False

    def execute(self) -> None:
        since = self._since()
        self.report.since = since
        started_at: str | None = None
        config = self.client.config
        # Workers only talk HTTP; the ledger and the counts are updated here, on this thread.
        with ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="sync-write") as pool:
            in_flight: set[Future[list[_Written]]] = set()
            for page in self.client.search_pages("QuestionnaireResponse", self._params(since)):
                started_at = started_at or _bundle_time(page)
                for batch in _batches(self._handle_page(page), config.batch_size):
                    while len(in_flight) >= config.concurrency * 2:
                        done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                        self._settle(done)
                    in_flight.add(pool.submit(self._write_batch, batch))
                self.on_progress(self.report)
            done, _ = wait(in_flight)
            self._settle(done)
        if not self.options.dry_run and not self.write_failed and started_at:
            self.store.set_checkpoint(self.server, started_at)
            self.report.checkpoint = started_at
        self.on_progress(self.report)

    def _since(self) -> str | None:
        if self.options.since:
            return self.options.since
        checkpoint = self.store.checkpoint(self.server)
        if checkpoint is None:
            return None
        overlap = timedelta(seconds=self.client.config.overlap_seconds)
        return (datetime.fromisoformat(checkpoint.replace("Z", "+00:00")) - overlap).isoformat()

    def _params(self, since: str | None) -> dict[str, str]:
        # A canonical without a version matches every version (FHIR search on canonicals), so the
        # plain urls find versioned and unversioned responses alike, including versions we do not
        # know (reported, not silently missed). On HAPI 8.8 it is also 4x faster than listing
        # `url|version` and `url` side by side (27 s vs 6 s for 2,000 responses).
        urls = dict.fromkeys(inst.url for inst in self.instruments)
        params = {
            "questionnaire": ",".join(urls),
            "status": _SEARCH_STATUSES,
            "_count": str(self.client.config.page_size),
        }
        if since:
            params["_lastUpdated"] = f"ge{since}"
        if self.options.patient:
            params["subject"] = self.options.patient
        if self.options.tag:
            params["_tag"] = search_token(self.options.tag)
        return params

    def _handle_page(self, page: dict[str, Any]) -> list[_Write]:
        responses = [e["resource"] for e in page.get("entry", []) if is_match(e)]
        self.report.found += len(responses)
        seen = self.store.lookup(self.server, [str(r.get("id", "")) for r in responses])
        seen = self._still_on_server(seen)
        writes: list[_Write] = []
        ledger: list[LedgerEntry] = []
        for response in responses:
            rid, version = str(response.get("id", "")), _version(response)
            previous = seen.get(rid)
            if previous is not None and self._unchanged(previous, response, version):
                self.report.unchanged += 1
                continue
            outcome = self._prepare(response, rid, version)
            if isinstance(outcome, _Write):
                writes.append(outcome)
            elif outcome is not None:
                ledger.append(outcome)
        if not self.options.dry_run:
            self.store.record(self.server, ledger)
        return writes

    def _still_on_server(self, seen: dict[str, LedgerEntry]) -> dict[str, LedgerEntry]:
        """Drop ledger entries whose Observation is gone (a reset or cleaned server): rewrite those.

        One search per page, so a no-op re-sync stays a handful of requests.
        """
        written = {e.observation_identifier: rid for rid, e in seen.items() if e.outcome == "written" and e.observation_identifier}
        if not written:
            return seen
        values = ",".join(f"{IDENTIFIER_SYSTEM}|{value}" for value in written)
        params = {"identifier": values, "_elements": "identifier", "_count": str(len(written))}
        present = {
            ident.get("value")
            for resource in self.client.search("Observation", params, post=True)
            for ident in resource.get("identifier", [])
            if ident.get("system") == IDENTIFIER_SYSTEM
        }
        return {rid: e for rid, e in seen.items() if e.outcome != "written" or e.observation_identifier in present}

    def _unchanged(self, previous: LedgerEntry, response: dict[str, Any], version: str) -> bool:
        if previous.version_id != version:
            return False
        if previous.outcome != "written":
            return True
        instrument = self._instrument(response)
        return instrument is None or previous.observation_identifier == observation_identifier_for(response, instrument.mapping)

    def _instrument(self, response: dict[str, Any]) -> Instrument | None:
        try:
            return self.catalog.resolve(str(response.get("questionnaire", "")))[0]
        except InstrumentError:
            return None

    def _prepare(self, response: dict[str, Any], rid: str, version: str) -> _Write | LedgerEntry | None:
        if response.get("status") == "entered-in-error":
            return self._retraction(response, rid, version)
        try:
            result = score_response(response, self.catalog)
        except ScoringError as exc:
            return self._fail(rid, version, str(exc))
        self.report.scored += 1
        observation = build_observation(result, response)
        if self.options.tag:
            observation["meta"] = {"tag": [self.options.tag]}
        identifier = observation["identifier"][0]["value"]
        if self.options.dry_run:
            self.report.written += 1
            return None
        return _Write(rid, version, identifier, observation)

    def _retraction(self, response: dict[str, Any], rid: str, version: str) -> _Write | LedgerEntry | None:
        instrument = self._instrument(response)
        if instrument is None:
            return self._fail(rid, version, f"{resource_ref(response)}: entered-in-error, but its Questionnaire is unknown")
        identifier = observation_identifier_for(response, instrument.mapping)
        existing = list(self.client.search("Observation", {"identifier": f"{IDENTIFIER_SYSTEM}|{identifier}"}))
        if not existing or existing[0].get("status") == "entered-in-error":
            return LedgerEntry(rid, version, "retracted", "no Observation to retract", identifier)
        observation = {k: v for k, v in existing[0].items() if k not in ("meta", "text")}
        observation["status"] = "entered-in-error"
        if self.options.dry_run:
            self.report.retracted += 1
            return None
        return _Write(rid, version, identifier, observation, outcome="retracted")

    def _fail(self, rid: str, version: str, reason: str) -> LedgerEntry:
        self.report.failed += 1
        self.report.failures.append(SyncFailure(f"QuestionnaireResponse/{rid}", reason))
        return LedgerEntry(rid, version, "failed", reason)

    def _write_batch(self, batch: list[_Write]) -> list[_Written]:
        """Runs on a worker thread: HTTP only. A rejected batch is retried one entry at a time."""
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [_entry(w) for w in batch]}
        try:
            self.client.transaction(bundle, idempotent=True)
        except (FhirServerError, FhirTransportError) as exc:
            if len(batch) == 1:
                return [(batch[0], str(exc))]
            logger.warning("transaction of %d Observations failed (%s); writing them one by one", len(batch), exc)
            return [result for write in batch for result in self._write_batch([write])]
        return [(write, None) for write in batch]

    def _settle(self, done: Iterable[Future[list[_Written]]]) -> None:
        ledger = []
        for future in done:
            for write, error in future.result():
                if error is not None:
                    self.write_failed = True
                    self.report.failed += 1
                    self.report.failures.append(SyncFailure(f"QuestionnaireResponse/{write.response_id}", f"write failed: {error}"))
                    continue
                if write.outcome == "retracted":
                    self.report.retracted += 1
                else:
                    self.report.written += 1
                ledger.append(LedgerEntry(write.response_id, write.version_id, write.outcome, None, write.identifier))
        self.store.record(self.server, ledger)
        self.on_progress(self.report)


def _entry(write: _Write) -> dict[str, Any]:
    return {
        "resource": write.observation,
        "request": {"method": "PUT", "url": f"Observation?identifier={IDENTIFIER_SYSTEM}|{write.identifier}"},
    }


def _batches(writes: list[_Write], size: int) -> Iterable[list[_Write]]:
    for start in range(0, len(writes), size):
        yield writes[start : start + size]


def _version(response: dict[str, Any]) -> str:
    meta = response.get("meta") or {}
    return str(meta.get("versionId") or meta.get("lastUpdated") or "")


def _bundle_time(page: dict[str, Any]) -> str:
    """The server's clock at search time (HAPI stamps searchsets), else ours."""
    stamp = (page.get("meta") or {}).get("lastUpdated")
    return str(stamp) if stamp else datetime.now(UTC).isoformat(timespec="milliseconds")
