"""The sync use case: find completed responses on a server, score them, write Observations.

A run is incremental (from a durable checkpoint, with an overlap window for late commits),
idempotent (deterministic Observation identifiers written by conditional update, a ledger of
response versions already handled), resumable (a killed run leaves the checkpoint where it
was; the ledger and conditional writes make the re-run converge), and streaming (one page
of responses and a bounded number of write batches in memory at a time).

Nothing is reported that did not happen: the server must say it is FHIR R4, every page must be
a searchset, every write is verified entry by entry (:mod:`.writes`), and the checkpoint moves
only when every write of the run landed and the server's clock is sane. Failures stay in the
ledger, and every run lists those still outstanding.

Clock rules: the checkpoint is the server's own stamp on the first search page
(``Bundle.meta.lastUpdated``), so the two clocks are never compared for the search itself; our
clock is used only when the server sends no stamp. A stamp more than
``clock_tolerance_seconds`` (default 300) ahead of our clock is refused with a warning and the
previous checkpoint is kept (a stamp in 2099 would otherwise hide every later response).
Responses committed while a run reads are caught by the overlap window (``overlap_seconds``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .._ids import IDENTIFIER_SYSTEM
from .._refs import FHIR_ID_RULE, parse_reference, valid_id
from .._security import NO_LABELS, SecurityLabels
from .._text import describe, safe_text
from ..errors import FhirServerError, InstrumentError, ScoringError, UnexpectedResponse, summarise_outcome
from ..instruments.catalog import Catalog, Instrument
from ..scoring.engine import resource_ref, score_response
from ..scoring.observations import build_observation, observation_identifier_for
from .client import FhirClient, is_match, search_token
from .state import LedgerEntry, OutstandingFailure, StateStore
from .writes import PendingWrite, Writer, Written, choose_write_mode

__all__ = [
    "ExternalWrites",
    "SyncFailure",
    "SyncOptions",
    "SyncReport",
    "process_response",
    "process_responses",
    "process_stream",
    "run_sync",
]

logger = logging.getLogger(__name__)
# Searched without a status filter (HAPI on H2 takes 45 s a page for questionnaire= with a
# multi-valued status=); the statuses are filtered here instead.
_SYNCED_STATUSES = frozenset({"completed", "amended", "entered-in-error"})
_END = object()
_SEARCH = "QuestionnaireResponse search"  # what warnings about the search's answer name
_MAX_NAMED = 10  # distinct resource types (and server notes) a run names before it only counts them


@dataclass(frozen=True)
class SyncOptions:
    """What to sync; everything else comes from the client's ServerConfig."""

    since: str | None = None
    patient: str | None = None
    instruments: Sequence[str] = ()
    dry_run: bool = False
    tag: dict[str, str] | None = None  # only responses with this meta.tag; the Observations carry it too
    write_mode: str | None = None  # auto | transaction | batch | single | search; None: the config's
    security: SecurityLabels = NO_LABELS  # meta.security of every Observation written (docs/hiding-results.md)


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
    skipped: int = 0  # responses returned in another status (in-progress, stopped); other resources are warned about
    requests: int = 0
    seconds: float = 0.0
    write_mode: str = ""
    write_mode_reason: str = ""
    failures: list[SyncFailure] = field(default_factory=list)
    warnings: list[SyncFailure] = field(default_factory=list)
    unattributed: list[SyncFailure] = field(default_factory=list)
    outstanding: list[OutstandingFailure] = field(default_factory=list)
    # subjects whose score Observations changed this run (serve refreshes their signals; not in as_dict)
    subjects: set[str] = field(default_factory=set, repr=False)
    # responses whose Observation did not land: a write failed, or the id was refused (backfill keeps the file open)
    write_failures: int = field(default=0, repr=False)

    @property
    def ok(self) -> bool:
        """No failure this run and none outstanding from earlier runs."""
        return self.failed == 0 and not self.outstanding

    def as_dict(self) -> dict[str, Any]:
        lists = ("failures", "warnings", "unattributed", "outstanding")
        data = {k: v for k, v in vars(self).items() if k not in lists and k not in ("subjects", "write_failures")}
        for name in lists[:3]:
            data[name] = [{"resource": f.resource, "reason": f.reason} for f in getattr(self, name)]
        data["outstanding_count"] = len(self.outstanding)
        data["outstanding"] = [
            {
                "response": f.resource,
                "reason": f.reason,
                "since": f.since,
                "outcome": f.outcome,
            }
            for f in self.outstanding
        ]
        return data


def run_sync(
    client: FhirClient,
    catalog: Catalog,
    store: StateStore,
    options: SyncOptions = SyncOptions(),
    on_progress: Callable[[SyncReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SyncReport:
    """One sync run against ``client``'s server.

    ``should_stop`` is asked before each page: once it says yes (serve is stopping), no further
    page is read, the writes in flight settle, and the checkpoint stays where it was (the next run
    reads what this one did not). A long catch-up thus never holds a stopping service.

    Raises:
        FhirTransportError, FhirServerError: the search itself failed (nothing is lost: the
            checkpoint does not move).
    """
    started = time.perf_counter()
    requests_before = client.requests_sent
    run = _Run(client, catalog, store, options, on_progress, should_stop)
    try:
        run.execute()
    finally:
        run.release_all()
        run.report.requests = client.requests_sent - requests_before
        run.report.seconds = round(time.perf_counter() - started, 3)
    return run.report


def process_response(
    client: FhirClient,
    catalog: Catalog,
    store: StateStore,
    response: dict[str, Any],
    options: SyncOptions = SyncOptions(),
) -> SyncReport:
    """Sync's path for one response (e.g. delivered by a Subscription): score it, write its
    Observation with verification, record the ledger. The report counts this one response and
    lists the server's outstanding failures.

    Raises:
        FhirTransportError, FhirServerError: the server is unreachable or not FHIR R4.
    """
    return process_responses(client, catalog, store, [response], options)


def process_responses(
    client: FhirClient,
    catalog: Catalog,
    store: StateStore,
    responses: Sequence[dict[str, Any]],
    options: SyncOptions = SyncOptions(),
) -> SyncReport:
    """:func:`process_response` for several responses at once (``serve`` drains its inbox in rounds)."""
    run = _Run(client, catalog, store, options, None)
    run.prepare_writer()
    try:
        writes = run.handle_responses(list(responses))
        if run.deferred:  # another worker (a replica) is handling it right now: wait for it, then re-check
            writes += run.handle_deferred()
        run.write(writes)
    finally:
        run.release_all()
    run.report_unexpected()
    run.report.outstanding = store.outstanding(run.server)
    return run.report


def process_stream(
    client: FhirClient,
    catalog: Catalog,
    store: StateStore,
    chunks: Iterable[list[dict[str, Any]]],
    options: SyncOptions = SyncOptions(),
    report: SyncReport | None = None,
    on_progress: Callable[[SyncReport], None] | None = None,
) -> SyncReport:
    """Sync's path for responses from elsewhere (``backfill``'s exported files), chunk by chunk in
    constant memory: the same scoring, verified writes and ledger as :func:`run_sync`, without the
    search and without moving the checkpoint. Counts add up in ``report`` when one is given (one
    report across several files); ``report.write_failures`` counts the writes that did not land.

    Raises:
        FhirTransportError, FhirServerError: the server is unreachable or not FHIR R4.
    """
    run = _Run(client, catalog, store, options, on_progress)
    if report is not None:
        run.report = report
    try:
        run.prepare_writer()
        run.drain(chunks)
    finally:
        run.release_all()
    run.report.outstanding = store.outstanding(run.server)
    return run.report


class ExternalWrites:
    """Sync's scoring, claims and ledger for Observations written another way (``backfill --via
    import``): :meth:`pending` scores a chunk and returns the writes to make (claimed until
    settled), :meth:`settle` records what the server confirmed, :meth:`close` lets go of the rest.

    Raises (constructor):
        FhirTransportError, FhirServerError: the server is unreachable or not FHIR R4.
    """

    def __init__(
        self, client: FhirClient, catalog: Catalog, store: StateStore, options: SyncOptions, report: SyncReport
    ) -> None:
        self._run = _Run(client, catalog, store, options, None)
        self._run.report = report
        self._run.prepare_writer()

    def pending(self, responses: list[dict[str, Any]]) -> list[PendingWrite]:
        writes = self._run.handle_responses(responses)
        if self._run.deferred:  # another worker holds these: wait for it (bounded), then decide again
            writes += self._run.handle_deferred()
        return writes

    def settle(self, results: list[Written]) -> None:
        self._run.settle(results)

    def close(self) -> None:
        self._run.release_all()
        self._run.report_unexpected()


class _Run:
    def __init__(
        self,
        client: FhirClient,
        catalog: Catalog,
        store: StateStore,
        options: SyncOptions,
        on_progress: Callable[[SyncReport], None] | None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.client, self.catalog, self.store, self.options = client, catalog, store, options
        self.should_stop = should_stop or (lambda: False)
        self.server = client.base_url
        self.report = SyncReport(server=self.server, dry_run=options.dry_run)
        self.instruments = [catalog.get(ref) for ref in options.instruments] if options.instruments else list(catalog)
        self.on_progress = on_progress or (lambda _report: None)
        self.incomplete = False  # a response of this run did not land (a write failed, an id was refused)
        self.writer = Writer(client, "transaction")
        self.our_ids: dict[str, str] = {}  # server id of one of our Questionnaires -> its url|version
        self.verify_ledger = True  # until a page shows the server still holds what the ledger says
        self.deferred: list[dict[str, Any]] = []  # responses another worker on this state holds right now
        self.held: set[str] = set()  # our claims not yet released
        self.subjects_by_id: dict[str, str] = {}  # responses being handled -> subject (report.subjects)
        self.relabel = False  # the labels differ from those the last complete run applied: rewrite everything once
        self.unexpected: Counter[str] = Counter()  # resources of another type the server returned, by type
        self.notes: set[str] = set()  # the server's notes on the search (search.mode outcome), relayed once

    def prepare_writer(self) -> None:
        """Refuse a server that is not FHIR R4; choose the write mode; learn our Questionnaires' ids."""
        # /metadata and the Questionnaire lookup travel together (one batch): a no-op re-sync then
        # costs 2 requests + 1 per page (this lookup, the first page's ledger check, the pages).
        urls = dict.fromkeys(url for inst in self.instruments for url in inst.response_urls)  # and the client forms'
        lookup = {"url": ",".join(urls), "_elements": "url,version", "_count": "200"}
        statement, ours = self.client.r4_capabilities_and_search("Questionnaire", lookup)
        plan = choose_write_mode(statement, self.options.write_mode or self.client.config.write_mode)
        self.writer = Writer(self.client, plan.mode)
        self.report.write_mode, self.report.write_mode_reason = plan.mode, plan.reason
        self.our_ids = self._questionnaire_ids(lookup, ours)

    def execute(self) -> None:
        self.prepare_writer()
        applied = self._check_labels()
        since = self._since()
        self.report.since = since
        stamps: list[str] = []

        def chunks() -> Iterator[list[dict[str, Any]]]:
            for page in _prefetched(self.client.search_pages("QuestionnaireResponse", self._params(since))):
                if self.should_stop():
                    self.incomplete = True  # the checkpoint stays: the next run reads what this one did not
                    self._warn(
                        "sync", "stopped before the last page (the service is stopping); the checkpoint was not moved"
                    )
                    return
                if not stamps:
                    stamps.append(_bundle_time(page))
                self._relay_notes(page)
                yield [e["resource"] for e in page.get("entry", []) if is_match(e)]

        self.drain(chunks())
        started_at = stamps[0] if stamps else None
        if not self.options.dry_run and not self.incomplete and started_at and self._sane(started_at):
            self.store.set_checkpoint(self.server, started_at)
            self.report.checkpoint = started_at
            if self.relabel and self._whole_server():
                self.store.set_setting(_labels_setting(self.server, self.options.tag), applied)
        self.report.outstanding = self.store.outstanding(self.server)
        self.on_progress(self.report)

    def drain(self, chunks: Iterable[list[dict[str, Any]]]) -> None:
        """Score each chunk of responses and write its Observations, ``concurrency`` batches in flight.

        Returns when every write has settled (landed or recorded as failed).
        """
        config = self.client.config
        # Workers only talk HTTP; the ledger and the counts are updated here, on this thread.
        with ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="sync-write") as pool:
            in_flight: set[Future[list[Written]]] = set()
            for responses in chunks:
                in_flight = self._submit(pool, in_flight, self.handle_responses(responses))
                if self.deferred:
                    # Another worker holds these: let ours land first (we then hold no claim, so no
                    # two workers wait on each other), then wait for theirs and look again.
                    done, in_flight = wait(in_flight)
                    self._settle_futures(done)
                    in_flight = self._submit(pool, in_flight, self.handle_deferred())
                self.on_progress(self.report)
            done, _ = wait(in_flight)
            self._settle_futures(done)
        self.report_unexpected()

    def _relay_notes(self, page: dict[str, Any]) -> None:
        """A searchset's OperationOutcome entries (``search.mode`` outcome: the server's warnings
        about the search, as HAPI writes them) become warnings, each distinct one once a run; the
        resources it added as ``include`` are not responses and are not used."""
        for entry in page.get("entry", []):
            resource = entry["resource"]
            if (entry.get("search") or {}).get("mode") != "outcome" or resource.get(
                "resourceType"
            ) != "OperationOutcome":
                continue
            note = safe_text(summarise_outcome(resource), 300)
            if note not in self.notes and len(self.notes) < _MAX_NAMED:
                self.notes.add(note)
                self._warn(_SEARCH, f"the server notes (search.mode outcome): {note}")

    def report_unexpected(self) -> None:
        """One warning for the resources of other types the server returned as responses (then forgotten)."""
        if self.unexpected:
            kinds = ", ".join(f"{count} {kind}" for kind, count in self.unexpected.most_common())
            self._warn(_SEARCH, f"the server returned {kinds} (not QuestionnaireResponses): ignored")
            self.unexpected.clear()

    def _sane(self, stamp: str) -> bool:
        """A server stamp may be behind our clock, but not far ahead of it (see the module's clock rules)."""
        tolerance = self.client.config.clock_tolerance_seconds
        try:
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            if when.tzinfo is None:
                raise ValueError("no time zone")
        except ValueError:
            self._warn(
                "checkpoint", f"the server's search stamp {stamp!r} is not an instant; the checkpoint was not moved"
            )
            return False
        ahead = (when - datetime.now(UTC)).total_seconds()
        if ahead > tolerance:
            self._warn(
                "checkpoint",
                f"the server's clock ({stamp}) is {ahead:.0f} s ahead of ours (tolerance {tolerance:.0f} s); "
                "the checkpoint was not moved",
            )
            return False
        return True

    def _warn(self, resource: str, text: str) -> None:
        logger.warning("%s: %s", resource, text)
        self.report.warnings.append(SyncFailure(resource, text))

    def _check_labels(self) -> str:
        """Compare the labels asked for with those the last complete run applied (the state's
        setting); when they differ, this run re-reads every response and rewrites its Observation
        once. Returns the labels' fingerprint, stored when such a run completes."""
        wanted = self.options.security.fingerprint
        applied = self.store.setting(_labels_setting(self.server, self.options.tag)) or ""
        self.relabel = wanted != applied
        if self.relabel:
            logger.info(
                "security labels %s -> %s: every response is re-read once to relabel its Observation",
                applied or "none",
                wanted or "none",
            )
            dropped = set(applied.split("+")) - set(wanted.split("+")) - {""}
            if dropped:
                self._warn(
                    "meta.security",
                    f"labels {', '.join(sorted(dropped))} are no longer asked for, but servers keep security "
                    "labels across updates (HAPI does): existing resources still carry them until removed "
                    "with $meta-delete",
                )
        return wanted

    def _whole_server(self) -> bool:
        """Whether this run read every response of ours (no --since, --patient or --instrument)."""
        return not (self.options.since or self.options.patient or self.options.instruments)

    def _since(self) -> str | None:
        if self.options.since:
            return self.options.since
        if self.relabel:
            return None
        checkpoint = self.store.checkpoint(self.server)
        if checkpoint is None:
            return None
        overlap = timedelta(seconds=self.client.config.overlap_seconds)
        return (datetime.fromisoformat(checkpoint.replace("Z", "+00:00")) - overlap).isoformat()

    def _questionnaire_ids(self, params: dict[str, str], found_already: list[dict[str, Any]] | None) -> dict[str, str]:
        """Server ids of our Questionnaires (as ``publish`` put them there), for literal references.

        ``found_already``: the lookup's matches when they came with /metadata; else it is searched here.
        """
        known = {c for inst in self.instruments for c in (inst.canonical, inst.client_canonical)}
        ids: dict[str, str] = {}
        try:
            matches = found_already if found_already is not None else self.client.search("Questionnaire", params)
            for found in matches:
                canonical = f"{found.get('url')}|{found.get('version')}"
                if isinstance(found.get("id"), str) and canonical in known:
                    ids[found["id"]] = canonical
        except FhirServerError as exc:
            if isinstance(exc, UnexpectedResponse):
                raise
            self._warn(
                "Questionnaire",
                f"our Questionnaires could not be looked up ({exc}); "
                "responses referring to them by id are not searched",
            )
        return ids

    def _params(self, since: str | None) -> dict[str, str]:
        # A canonical without a version matches every version (FHIR search on canonicals), so the
        # plain urls find versioned and unversioned responses alike, including versions we do not
        # know (reported, not silently missed). On HAPI 8.8 it is also 4x faster than listing
        # `url|version` and `url` side by side (27 s vs 6 s for 2,000 responses). Literal
        # references to our Questionnaires' server ids are searched in the same list.
        # Each instrument's url and its client-facing Questionnaire's (a client portal's responses name that one).
        values = list(dict.fromkeys(url for inst in self.instruments for url in inst.response_urls))
        values += [f"Questionnaire/{rid}" for rid in sorted(self.our_ids)]
        values += [
            f"{self.server}/Questionnaire/{rid}" for rid in sorted(self.our_ids)
        ]  # for servers that index them as written
        params = {"questionnaire": ",".join(values), "_count": str(self.client.config.page_size)}
        if since:
            params["_lastUpdated"] = f"ge{since}"
        if self.options.patient:
            params["subject"] = self.options.patient
        if self.options.tag:
            params["_tag"] = search_token(self.options.tag)
        return params

    def _attributed(self, response: dict[str, Any]) -> dict[str, Any] | None:
        """The response with ``questionnaire`` as one of our canonicals, or None if it is not ours.

        A literal reference (``Questionnaire/1005``, or that on our server's base URL) to one of our
        Questionnaires becomes that Questionnaire's url|version.
        """
        reference = response.get("questionnaire")
        if not isinstance(reference, str):
            return response  # scoring names the problem
        if reference.partition("|")[0] in {url for inst in self.catalog for url in inst.response_urls}:
            return response
        ref = parse_reference(reference)
        if ref is not None and ref.type == "Questionnaire" and ref.on(self.server) and ref.id in self.our_ids:
            return {**response, "questionnaire": self.our_ids[ref.id]}
        return None

    def _submit(
        self, pool: ThreadPoolExecutor, in_flight: set[Future[list[Written]]], writes: list[PendingWrite]
    ) -> set[Future[list[Written]]]:
        config = self.client.config
        for batch in _batches(writes, config.batch_size):
            while len(in_flight) >= config.concurrency * 2:
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                self._settle_futures(done)
            in_flight.add(pool.submit(self.writer.write, batch))
        return in_flight

    def write(self, writes: list[PendingWrite]) -> None:
        """Write and settle ``writes`` as a sync page's are: batches of ``batch_size``, ``concurrency`` in flight."""
        if len(writes) <= self.client.config.batch_size:  # the usual single notification: no pool needed
            if writes:
                self.settle(self.writer.write(writes))
            return
        with ThreadPoolExecutor(max_workers=self.client.config.concurrency, thread_name_prefix="sync-write") as pool:
            done, _ = wait(self._submit(pool, set(), writes))
            self._settle_futures(done)

    def handle_responses(self, candidates: list[dict[str, Any]]) -> list[PendingWrite]:
        """Score what changed; record scoring failures; return the Observations to write."""
        responses = []
        for response in candidates:
            if not isinstance(response, dict) or response.get("resourceType") != "QuestionnaireResponse":
                self._count_unexpected(response)
                continue
            if not valid_id(response.get("id")):
                self._refuse_id(response)
                continue
            if response.get("status") not in _SYNCED_STATUSES:
                self.report.skipped += 1
                continue
            attributed = self._attributed(response)
            if attributed is None:
                self.report.unattributed.append(
                    SyncFailure(
                        resource_ref(response),
                        "its questionnaire "
                        f"{str(response.get('questionnaire'))[:200]!r} is none of ours on this server",
                    )
                )
                continue
            responses.append(attributed)
            self._remember_subject(response)
        self.report.found += len(responses)
        ids = [str(r.get("id", "")) for r in responses]
        claimed = set(ids) if self.options.dry_run else self.store.claim(self.server, ids)
        self.held |= claimed
        self.deferred += [r for r, rid in zip(responses, ids, strict=True) if rid not in claimed]
        return self._decide([r for r, rid in zip(responses, ids, strict=True) if rid in claimed])

    def _count_unexpected(self, resource: Any) -> None:
        """A resource that is not a QuestionnaireResponse, counted by type (named safely, at most a few types)."""
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        name = safe_text(kind, 40) if isinstance(kind, str) and kind else "(no resourceType)"
        if name not in self.unexpected and len(self.unexpected) >= _MAX_NAMED:
            name = "(of other types)"
        self.unexpected[name] += 1

    def _refuse_id(self, response: dict[str, Any]) -> None:
        """A response without a usable id cannot be keyed in the ledger, nor referred to: it fails
        this run (nothing scored or written), and the checkpoint stays so every run reads it again
        until the server gives it a FHIR id. The line shows the id escaped and cut (see ``resource_ref``)."""
        rid = response.get("id")
        reason = (
            "no id, so it cannot be told apart from other responses"
            if rid is None
            else f"id is {describe(rid)}, not a FHIR id ({FHIR_ID_RULE})"
        )
        self.incomplete = True
        self.report.write_failures += 1
        self.report.failed += 1
        self.report.failures.append(SyncFailure(resource_ref(response), f"{reason}: refused, nothing written"))

    def handle_deferred(self) -> list[PendingWrite]:
        """The responses another worker held: wait (bounded) until it lets go, then decide again
        (usually: it wrote them, so they are unchanged). Call with no claim of our own held."""
        deferred, self.deferred = self.deferred, []
        ids = sorted({str(r.get("id", "")) for r in deferred})  # one order for every worker: no deadlock
        for rid in ids:
            if not self.options.dry_run:
                self.store.wait_claim(self.server, rid, 2 * self.client.config.timeout)
                self.held.add(rid)
        return self._decide(deferred)

    def _decide(self, responses: list[dict[str, Any]]) -> list[PendingWrite]:
        """For claimed responses: skip the unchanged, record failures, return the writes.

        A response stays claimed from before its ledger entry is read until its outcome is
        recorded (``settle`` releases the written ones), so two workers on one state never write
        the same response at once, and a worker that dies loses its claims with its connection.
        """
        ids = [str(r.get("id", "")) for r in responses]
        writes: list[PendingWrite] = []
        try:
            seen = self.store.lookup(self.server, ids)
            seen = self._still_on_server(seen)
            ledger: list[LedgerEntry] = []
            for response, rid in zip(responses, ids, strict=True):
                version = _version(response)
                previous = seen.get(rid)
                if previous is not None and self._unchanged(previous, response, version):
                    self.report.unchanged += 1
                    continue
                outcome = self._prepare(response, rid, version)
                if isinstance(outcome, PendingWrite):
                    writes.append(outcome)
                elif outcome is not None:
                    ledger.append(outcome)
            if not self.options.dry_run:
                self.store.record(self.server, ledger)
        except BaseException:
            self._release(ids)
            raise
        pending = {w.response_id for w in writes}
        settled = [rid for rid in ids if rid not in pending]
        self._release(settled)  # the rest when their write settles
        self._forget_subjects(settled)
        return writes

    def _remember_subject(self, response: dict[str, Any]) -> None:
        """Keep the subject until the response's write settles (``report.subjects`` names it then).

        Only responses still being handled are kept, so a sync of 10^6 responses holds one page and
        the batches in flight here, not an entry per response read.
        """
        subject = response.get("subject")
        reference = subject.get("reference") if isinstance(subject, dict) else None
        if isinstance(reference, str) and reference:
            self.subjects_by_id[str(response.get("id", ""))] = reference

    def _forget_subjects(self, response_ids: Iterable[str]) -> None:
        for rid in response_ids:
            self.subjects_by_id.pop(rid, None)

    def _release(self, response_ids: list[str]) -> None:
        if response_ids and not self.options.dry_run:
            self.store.release(self.server, response_ids)
            self.held.difference_update(response_ids)

    def release_all(self) -> None:
        """Let go of every claim this run still holds (a run that stopped on an error)."""
        self._release(sorted(self.held))

    def _still_on_server(self, seen: dict[str, LedgerEntry]) -> dict[str, LedgerEntry]:
        """Drop ledger entries whose Observation is gone (a reset or cleaned server): rewrite those.

        One search for the first page the ledger knows; only if something was gone there, one per
        page after it. A reset server shows on its first page, and a no-op re-sync costs one
        request per page plus one (it was two per page).
        """
        written = {
            e.observation_identifier: rid
            for rid, e in seen.items()
            if e.outcome == "written" and e.observation_identifier
        }
        if not written or not self.verify_ledger:
            return seen
        values = ",".join(f"{IDENTIFIER_SYSTEM}|{value}" for value in written)
        params = {"identifier": values, "_elements": "identifier", "_count": str(len(written))}
        present = {
            ident.get("value")
            for resource in self.client.search("Observation", params, post=True)
            for ident in resource.get("identifier", []) or []
            if isinstance(ident, dict) and ident.get("system") == IDENTIFIER_SYSTEM
        }
        self.verify_ledger = not set(written) <= present
        return {rid: e for rid, e in seen.items() if e.outcome != "written" or e.observation_identifier in present}

    def _unchanged(self, previous: LedgerEntry, response: dict[str, Any], version: str) -> bool:
        if previous.version_id != version or previous.outcome == "write-failed":  # a failed write is retried every run
            return False
        if previous.outcome != "written":
            return True
        if self.relabel:
            return False
        instrument = self._instrument(response)
        return instrument is None or previous.observation_identifier == observation_identifier_for(
            response, instrument.mapping
        )

    def _instrument(self, response: dict[str, Any]) -> Instrument | None:
        try:
            return self.catalog.resolve(str(response.get("questionnaire", "")))[0]
        except InstrumentError:
            return None

    def _prepare(self, response: dict[str, Any], rid: str, version: str) -> PendingWrite | LedgerEntry | None:
        if response.get("status") == "entered-in-error":
            return self._retraction(response, rid, version)
        try:
            result = score_response(response, self.catalog)
        except ScoringError as exc:
            return self._fail(rid, version, str(exc))
        self.report.scored += 1
        for warning in result.warnings:
            self.report.warnings.append(SyncFailure(f"QuestionnaireResponse/{rid}", warning))
        observation = build_observation(result, response, security=self.options.security)
        if self.options.tag:
            observation["meta"] = {**observation.get("meta", {}), "tag": [self.options.tag]}
        identifier = observation["identifier"][0]["value"]
        if self.options.dry_run:
            self.report.written += 1
            return None
        return PendingWrite(rid, version, identifier, observation)

    def _retraction(self, response: dict[str, Any], rid: str, version: str) -> PendingWrite | LedgerEntry | None:
        instrument = self._instrument(response)
        if instrument is None:
            return self._fail(
                rid, version, f"{resource_ref(response)}: entered-in-error, but its Questionnaire is unknown"
            )
        identifier = observation_identifier_for(response, instrument.mapping)
        existing = list(self.client.search("Observation", {"identifier": f"{IDENTIFIER_SYSTEM}|{identifier}"}))
        if not existing or existing[0].get("status") == "entered-in-error":
            return LedgerEntry(rid, version, "retracted", "no Observation to retract", identifier)
        observation = {k: v for k, v in existing[0].items() if k not in ("meta", "text")}
        labels = (existing[0].get("meta") or {}).get("security")
        if labels:  # a retraction keeps the labels (servers that replace meta on update would drop them)
            observation["meta"] = {"security": labels}
        observation["status"] = "entered-in-error"
        if self.options.dry_run:
            self.report.retracted += 1
            return None
        return PendingWrite(rid, version, identifier, observation, outcome="retracted")

    def _fail(self, rid: str, version: str, reason: str) -> LedgerEntry:
        self.report.failed += 1
        self.report.failures.append(SyncFailure(f"QuestionnaireResponse/{rid}", reason))
        return LedgerEntry(rid, version, "failed", reason)

    def _settle_futures(self, done: Iterable[Future[list[Written]]]) -> None:
        for future in done:
            self.settle(future.result())

    def settle(self, results: list[Written]) -> None:
        """Count and record what the server confirmed (and what it did not)."""
        ledger = []
        for write, error in results:
            subject = self.subjects_by_id.pop(write.response_id, None)
            if error is not None:
                self.incomplete = True
                self.report.write_failures += 1
                self.report.failed += 1
                reason = f"write failed: {error}"
                self.report.failures.append(SyncFailure(f"QuestionnaireResponse/{write.response_id}", reason))
                ledger.append(
                    LedgerEntry(write.response_id, write.version_id, "write-failed", reason, write.identifier)
                )
                continue
            if write.outcome == "retracted":
                self.report.retracted += 1
            else:
                self.report.written += 1
            if subject is not None:
                self.report.subjects.add(subject)
            ledger.append(LedgerEntry(write.response_id, write.version_id, write.outcome, None, write.identifier))
        try:
            self.store.record(self.server, ledger)
        finally:
            self._release([write.response_id for write, _ in results])
        self.on_progress(self.report)


def _labels_setting(server: str, tag: dict[str, str] | None) -> str:
    """The state setting that remembers which labels the last complete run applied on ``server``
    (per demo-style ``tag`` scope: a tagged run covers only its own data)."""
    scope = f"|{tag.get('system', '')}|{tag.get('code', '')}" if tag else ""
    return f"security-labels|{server}{scope}"


def _prefetched(pages: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Fetch the next page while the caller works on this one (two pages in memory at most).

    The generator is only ever advanced by one thread at a time (the next fetch is submitted
    after the previous one returned), so the paging state stays consistent; errors surface
    where the page would have been.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-page") as fetcher:
        ahead = fetcher.submit(next, pages, _END)
        while True:
            page = ahead.result()
            if page is _END:
                return
            ahead = fetcher.submit(next, pages, _END)
            yield page  # type: ignore[misc]


def _batches(writes: list[PendingWrite], size: int) -> Iterable[list[PendingWrite]]:
    for start in range(0, len(writes), size):
        yield writes[start : start + size]


def _version(response: dict[str, Any]) -> str:
    meta = response.get("meta")
    if not isinstance(meta, dict):
        return ""
    version = meta.get("versionId") or meta.get("lastUpdated") or ""
    return version if isinstance(version, str) else ""


def _bundle_time(page: dict[str, Any]) -> str:
    """The server's clock at search time (HAPI stamps searchsets), else ours."""
    stamp = (page.get("meta") or {}).get("lastUpdated")
    return str(stamp) if stamp else datetime.now(UTC).isoformat(timespec="milliseconds")
