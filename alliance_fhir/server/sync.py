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

The run is cut by job: what the server is and which Questionnaires are ours (:mod:`.sync_plan`),
the per-response pipeline every way in shares, with its order rules (:mod:`.sync_pipeline`),
the options and the report (:mod:`.sync_report`); this module keeps the search, the checkpoint
and the labels, and the ways in: :func:`run_sync`, :class:`SyncSession` (serve's worker),
:func:`process_stream` (backfill) and :class:`ExternalWrites` (backfill's ``$import``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from .._text import safe_text
from .._time import parse_instant, zoned_instant
from ..errors import summarise_outcome
from ..fhirclient.client import FhirClient, is_match, search_token
from ..instruments.catalog import Catalog, Instrument
from .state import ServerPair, StateStore
from .sync_pipeline import MAX_NAMED, SEARCH, Pipeline
from .sync_plan import ServerPlan, plan_server
from .sync_report import SyncFailure, SyncOptions, SyncReport, warn
from .writes import PendingWrite, Written

__all__ = [
    "ExternalWrites",
    "SyncFailure",
    "SyncOptions",
    "SyncReport",
    "SyncSession",
    "new_report",
    "process_response",
    "process_responses",
    "process_stream",
    "run_sync",
]

logger = logging.getLogger(__name__)
_END = object()


def run_sync(
    client: FhirClient,
    catalog: Catalog,
    store: StateStore,
    options: SyncOptions = SyncOptions(),
    on_progress: Callable[[SyncReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    results: FhirClient | None = None,
) -> SyncReport:
    """One sync run: responses read from ``client``'s server (the source), Observations written to
    ``results`` (the results store; the source itself when None).

    ``should_stop`` is asked before each page: once it says yes (serve is stopping), no further
    page is read, the writes in flight settle, and the checkpoint stays where it was (the next run
    reads what this one did not). A long catch-up thus never holds a stopping service.

    Raises:
        FhirTransportError, FhirServerError: the search itself failed (nothing is lost: the
            checkpoint does not move).
    """
    return SyncSession(client, catalog, store, options, results=results).sync(on_progress, should_stop)


def process_response(
    client: FhirClient,
    catalog: Catalog,
    store: StateStore,
    response: dict[str, Any],
    options: SyncOptions = SyncOptions(),
    *,
    results: FhirClient | None = None,
) -> SyncReport:
    """Sync's path for one response (e.g. delivered by a Subscription): score it, write its
    Observation with verification, record the ledger. The report counts this one response and
    lists the server's outstanding failures.

    Raises:
        FhirTransportError, FhirServerError: the server is unreachable or not FHIR R4.
    """
    return process_responses(client, catalog, store, [response], options, results=results)


def process_responses(
    client: FhirClient,
    catalog: Catalog,
    store: StateStore,
    responses: Sequence[dict[str, Any]],
    options: SyncOptions = SyncOptions(),
    *,
    results: FhirClient | None = None,
) -> SyncReport:
    """:func:`process_response` for several responses at once (a :class:`SyncSession` keeps what
    it learnt of the server between rounds; this learns it afresh)."""
    return SyncSession(client, catalog, store, options, results=results).process(responses)


class SyncSession:
    """Sync against one server, kept across runs: what it learnt of the server (:class:`.ServerPlan`).

    serve's worker holds one: :meth:`sync` (its catch-up and safety-net syncs) learns the plan
    afresh, and :meth:`process` (a round of notifications) reuses the last one, so a round costs
    the responses' re-read and the write, not a Questionnaire lookup too. A plan whose lookup
    failed is not kept. The two may run on different threads: the plan is replaced whole.
    """

    def __init__(
        self,
        client: FhirClient,
        catalog: Catalog,
        store: StateStore,
        options: SyncOptions,
        *,
        results: FhirClient | None = None,
    ) -> None:
        self._client, self._catalog, self._store, self._options = client, catalog, store, options
        self._results = client if results is None else results
        self._key = ServerPair(client.base_url, self._results.base_url)
        self._instruments = covered_instruments(catalog, options)
        self._plan: ServerPlan | None = None

    def sync(
        self,
        on_progress: Callable[[SyncReport], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> SyncReport:
        """One sync run (:func:`run_sync`, whose ``should_stop`` this takes); its plan is kept for :meth:`process`.

        Raises:
            FhirTransportError, FhirServerError: the search itself failed (nothing is lost: the
                checkpoint does not move).
        """
        started, requests_before = time.perf_counter(), self._requests_sent()
        report = self._report()
        try:
            plan = self._learn(report)
            _Search(self, report, on_progress, should_stop).run(plan)
        finally:
            report.requests = self._requests_sent() - requests_before
            report.seconds = round(time.perf_counter() - started, 3)
        return report

    def process(self, responses: Sequence[dict[str, Any]]) -> SyncReport:
        """Sync's path for responses read elsewhere (serve's rounds): scored, written, verified,
        recorded; the report counts these and lists the server's outstanding failures.

        Raises:
            FhirTransportError, FhirServerError: the server is unreachable or not FHIR R4.
        """
        report = self._report()
        plan = self._plan or self._learn(report)
        with Pipeline(
            self._client, self._catalog, self._store, self._options, plan, report, results=self._results
        ) as pipeline:
            pipeline.write_all([list(responses)])
        report.outstanding = self._store.outstanding(self._key)
        return report

    def _report(self) -> SyncReport:
        """An empty report naming the source, and the results store when it is another server."""
        return new_report(self._key, self._options.dry_run)

    def _requests_sent(self) -> int:
        """Requests sent to both servers (each once when they are one)."""
        sent = self._client.requests_sent
        return sent + (self._results.requests_sent if self._results is not self._client else 0)

    def _learn(self, report: SyncReport) -> ServerPlan:
        plan = plan_server(self._client, self._instruments, self._options, report, self._results)
        self._plan = plan if plan.looked_up else None
        return plan


def process_stream(
    client: FhirClient,
    catalog: Catalog,
    store: StateStore,
    chunks: Iterable[list[dict[str, Any]]],
    options: SyncOptions = SyncOptions(),
    report: SyncReport | None = None,
    on_progress: Callable[[SyncReport], None] | None = None,
    *,
    results: FhirClient | None = None,
) -> SyncReport:
    """Sync's path for responses from elsewhere (``backfill``'s exported files), chunk by chunk in
    constant memory: the same scoring, verified writes and ledger as :func:`run_sync`, without the
    search and without moving the checkpoint. Counts add up in ``report`` when one is given (one
    report across several files); ``report.write_failures`` counts the writes that did not land.

    Raises:
        FhirTransportError, FhirServerError: the server is unreachable or not FHIR R4.
    """
    key = ServerPair(client.base_url, (results or client).base_url)
    report = report if report is not None else new_report(key, options.dry_run)
    plan = plan_server(client, covered_instruments(catalog, options), options, report, results)
    with Pipeline(client, catalog, store, options, plan, report, on_progress=on_progress, results=results) as pipeline:
        pipeline.write_all(chunks)
    report.outstanding = store.outstanding(key)
    return report


def new_report(key: ServerPair, dry_run: bool) -> SyncReport:
    """An empty run report naming the source, and the results store when it is another server."""
    return SyncReport(server=key.source, dry_run=dry_run, results_server=key.results if key.split else None)


class ExternalWrites:
    """Sync's scoring, claims and ledger for Observations written another way (``backfill --via
    import``): :meth:`pending` scores a chunk and returns the writes to make (claimed until
    settled), :meth:`settle` records what the server confirmed, :meth:`close` lets go of the rest.

    Raises (constructor):
        FhirTransportError, FhirServerError: the server is unreachable or not FHIR R4.
    """

    def __init__(
        self,
        client: FhirClient,
        catalog: Catalog,
        store: StateStore,
        options: SyncOptions,
        report: SyncReport,
        *,
        results: FhirClient | None = None,
    ) -> None:
        plan = plan_server(client, covered_instruments(catalog, options), options, report, results)
        self._pipeline = Pipeline(client, catalog, store, options, plan, report, results=results)

    def pending(self, responses: list[dict[str, Any]]) -> list[PendingWrite]:
        return self._pipeline.stage(responses)

    def settle(self, results: list[Written]) -> None:
        self._pipeline.settle(results)

    def close(self) -> None:
        self._pipeline.close()


class _Search:
    """A sync run's own part: the labels check, the search from the checkpoint, the checkpoint."""

    def __init__(
        self,
        session: SyncSession,
        report: SyncReport,
        on_progress: Callable[[SyncReport], None] | None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        # a search is one run of its session: the same client, catalog, state, options and instruments
        self.client, self.catalog, self.store = session._client, session._catalog, session._store
        self.options, self.instruments, self.report = session._options, session._instruments, report
        self.results, self.key = session._results, session._key
        self.server = self.client.base_url
        self.on_progress = on_progress or (lambda _report: None)
        self.should_stop = should_stop or (lambda: False)
        self.stopped = False  # asked to stop before the last page: the checkpoint stays
        self.questionnaires: list[str] = []  # literal references to our Questionnaires, searched too (the plan's)
        self.relabel = False  # the labels differ from those the last complete run applied: rewrite everything once
        self.notes: set[str] = set()  # the server's notes on the search (search.mode outcome), relayed once

    def run(self, plan: ServerPlan) -> None:
        self.questionnaires = plan.questionnaire_values(self.server)
        applied = self._check_labels()
        since = self._since()
        self.report.since = since
        stamps: list[str] = []

        def chunks() -> Iterator[list[dict[str, Any]]]:
            for page in _prefetched(self.client.search_pages("QuestionnaireResponse", self._params(since))):
                if self.should_stop():
                    self.stopped = True  # the checkpoint stays: the next run reads what this one did not
                    warn(
                        self.report,
                        "sync",
                        "stopped before the last page (the service is stopping); the checkpoint was not moved",
                    )
                    return
                if not stamps:
                    stamps.append(bundle_time(page))
                self._relay_notes(page)
                yield [e["resource"] for e in page.get("entry", []) if is_match(e)]

        pipeline = Pipeline(
            self.client,
            self.catalog,
            self.store,
            self.options,
            plan,
            self.report,
            relabel=self.relabel,
            on_progress=self.on_progress,
            results=self.results,
        )
        with pipeline:
            pipeline.write_all(chunks())
        started_at = stamps[0] if stamps else None
        if (
            not self.options.dry_run
            and not self.stopped
            and pipeline.all_landed
            and started_at
            and self._sane(started_at)
        ):
            self.store.set_checkpoint(self.key, started_at)
            self.report.checkpoint = started_at
            if self.relabel and self._whole_server():
                self.store.set_setting(_labels_setting(self.key.scope, self.options.tag), applied)
        self.report.outstanding = self.store.outstanding(self.key)
        self.on_progress(self.report)

    def _relay_notes(self, page: dict[str, Any]) -> None:
        relay_notes(self.report, page, self.notes)

    def _sane(self, stamp: str) -> bool:
        return sane_stamp(self.client, self.report, stamp)

    def _check_labels(self) -> str:
        """Compare the labels asked for with those the last complete run applied (the state's
        setting); when they differ, this run re-reads every response and rewrites its Observation
        once. Returns the labels' fingerprint, stored when such a run completes."""
        wanted = self.options.security.fingerprint
        applied = self.store.setting(_labels_setting(self.key.scope, self.options.tag)) or ""
        self.relabel = wanted != applied
        if self.relabel:
            logger.info(
                "security labels %s -> %s: every response is re-read once to relabel its Observation",
                applied or "none",
                wanted or "none",
            )
            dropped = set(applied.split("+")) - set(wanted.split("+")) - {""}
            if dropped:
                warn(
                    self.report,
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
        checkpoint = self.store.checkpoint(self.key)
        if checkpoint is None:
            return None
        overlap = timedelta(seconds=self.client.config.overlap_seconds)
        return (parse_instant(checkpoint) - overlap).isoformat()

    def _params(self, since: str | None) -> dict[str, str]:
        # A canonical without a version matches every version (FHIR search on canonicals), so the
        # plain urls find versioned and unversioned responses alike, including versions we do not
        # know (reported, not silently missed). On HAPI 8.8 it is also 4x faster than listing
        # `url|version` and `url` side by side (27 s vs 6 s for 2,000 responses). Literal
        # references to our Questionnaires' server ids are searched in the same list.
        # Each instrument's url and its client-facing Questionnaire's (a client portal's responses name that one).
        values = questionnaire_values(self.catalog, self.instruments, self.questionnaires, self.server)
        params = {"questionnaire": ",".join(values), "_count": str(self.client.config.page_size)}
        if since:
            params["_lastUpdated"] = f"ge{since}"
        if self.options.patient:
            params["subject"] = self.options.patient
        if self.options.tag:
            params["_tag"] = search_token(self.options.tag)
        return params


def questionnaire_values(
    catalog: Catalog, instruments: Sequence[Instrument], literal: Sequence[str], server: str
) -> list[str]:
    """The ``questionnaire=`` values a response search sends: each instrument's url and its
    client-facing Questionnaire's, ``literal`` references to our Questionnaires' server ids (the
    plan's), and the vendor forms a form map claims for these instruments."""
    values = list(dict.fromkeys(url for inst in instruments for url in inst.response_urls))
    values += literal
    values += catalog.forms.search_values({inst.url for inst in instruments}, server)
    return values


def relay_notes(report: SyncReport, page: dict[str, Any], seen: set[str]) -> None:
    """A searchset's OperationOutcome entries (``search.mode`` outcome: the server's warnings
    about the search, as HAPI writes them) become warnings, each distinct one once a run (``seen``);
    the resources it added as ``include`` are not responses and are not used."""
    for entry in page.get("entry", []):
        resource = entry["resource"]
        if (entry.get("search") or {}).get("mode") != "outcome" or resource.get("resourceType") != "OperationOutcome":
            continue
        note = safe_text(summarise_outcome(resource), 300)
        if note not in seen and len(seen) < MAX_NAMED:
            seen.add(note)
            warn(report, SEARCH, f"the server notes (search.mode outcome): {note}")


def sane_stamp(client: FhirClient, report: SyncReport, stamp: str) -> bool:
    """A server stamp may be behind our clock, but not far ahead of it (see the module's clock rules);
    a refused one is a warning in ``report`` saying the checkpoint was not moved."""
    tolerance = client.config.clock_tolerance_seconds
    when = zoned_instant(stamp)
    if when is None:
        warn(
            report, "checkpoint", f"the server's search stamp {stamp!r} is not an instant; the checkpoint was not moved"
        )
        return False
    ahead = (when - datetime.now(UTC)).total_seconds()
    if ahead > tolerance:
        warn(
            report,
            "checkpoint",
            f"the server's clock ({stamp}) is {ahead:.0f} s ahead of ours (tolerance {tolerance:.0f} s); "
            "the checkpoint was not moved",
        )
        return False
    return True


def covered_instruments(catalog: Catalog, options: SyncOptions) -> list[Instrument]:
    """The instruments a run covers: those asked for, else the whole catalog."""
    return [catalog.get(ref) for ref in options.instruments] if options.instruments else list(catalog)


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


def bundle_time(page: dict[str, Any]) -> str:
    """The server's clock at search time (HAPI stamps searchsets), else ours."""
    stamp = (page.get("meta") or {}).get("lastUpdated")
    return str(stamp) if stamp else datetime.now(UTC).isoformat(timespec="milliseconds")
