"""Sync over a patient list: one QuestionnaireResponse search per patient, for servers that scope the search.

Epic answers QuestionnaireResponse search only per patient (Patient-Entered Questionnaires), so
``sync --patients Group/ID`` (or ``List/ID``, or a file; :mod:`.patient_list`) searches each patient
with ``patient=`` and the same ``questionnaire``/``_lastUpdated`` filters as the server-wide search,
and hands each patient's responses to the same pipeline (scoring, claims, ledger, verified writes).

Checkpoints are per patient (:mod:`.state.read_checkpoints`), not one for the run: each moves to the
server's stamp on that patient's first search page once every write of that patient landed. So a
patient whose search fails keeps its old checkpoint while the others move; a run killed half-way
resumes without re-reading the patients it finished (their searches come back empty); and a patient
added to the Group later is read from the start. One checkpoint for the whole run would hold every
patient back for one failing patient, and re-read all of them after a crash.

Bounded: ``concurrency`` patients' first pages are fetched ahead, in parallel (most patients have
one page, often empty: the search's round trip is the cost); each patient's later pages and writes
follow on this thread, one patient at a time, through its own pipeline (whose writes are bounded by
``concurrency`` too). A patient whose search the server refuses (an error status, a malformed answer)
is one failure line and the rest go on (exit 1); a connection failure or refused credentials (401)
stop the run, as they would stop every patient.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .._time import parse_instant
from ..errors import AuthError, FhirServerError
from ..fhirclient.client import FhirClient, is_match, search_token
from ..instruments.catalog import Catalog
from .patient_list import PatientList
from .state import ServerPair, StateStore
from .sync import bundle_time, covered_instruments, new_report, questionnaire_values, relay_notes, sane_stamp
from .sync_pipeline import Pipeline
from .sync_plan import ServerPlan, plan_server
from .sync_report import SyncFailure, SyncOptions, SyncReport, warn

__all__ = ["run_patient_sync"]

Pages = Iterator[dict[str, Any]]


@dataclass
class _FirstPage:
    """A patient's search, started: its first page and the iterator for the rest, or why it failed."""

    patient: str
    since: str | None
    relabel: bool
    first: dict[str, Any] | None = None
    rest: Pages | None = None
    error: FhirServerError | None = None


def run_patient_sync(
    client: FhirClient,
    catalog: Catalog,
    store: StateStore,
    patients: PatientList,
    options: SyncOptions = SyncOptions(),
    on_progress: Callable[[SyncReport], None] | None = None,
    *,
    results: FhirClient | None = None,
) -> SyncReport:
    """Search each patient of ``patients`` on ``client``'s server, score and write to ``results``.

    Raises:
        FhirTransportError: the source or the results store cannot be reached.
        AuthError: the server refused our credentials (401).
        FhirServerError: the server is not FHIR R4.
    """
    return _PatientSync(client, catalog, store, options, on_progress, results).run(patients)


class _PatientSync:
    def __init__(
        self,
        client: FhirClient,
        catalog: Catalog,
        store: StateStore,
        options: SyncOptions,
        on_progress: Callable[[SyncReport], None] | None,
        results: FhirClient | None,
    ) -> None:
        self.client, self.catalog, self.store, self.options = client, catalog, store, options
        self.results = client if results is None else results
        self.key = ServerPair(client.base_url, self.results.base_url)
        self.instruments = covered_instruments(catalog, options)
        self.report = new_report(self.key, options.dry_run)
        self.on_progress = on_progress or (lambda _report: None)
        self.labels = options.security.fingerprint
        self.notes: set[str] = set()
        self.values: list[str] = []

    def run(self, patients: PatientList) -> SyncReport:
        report = self.report
        report.patients = len(patients.patients)
        for refused in patients.refused:
            report.failures.append(refused)
            report.failed += 1
        if patients.duplicates:
            warn(report, patients.source, f"{patients.duplicates} patient(s) named more than once: each is read once")
        plan = plan_server(self.client, self.instruments, self.options, report, self.results)
        self.values = questionnaire_values(
            self.catalog, self.instruments, plan.questionnaire_values(self.client.base_url), self.client.base_url
        )
        ahead = max(1, self.client.config.concurrency)
        with ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="sync-patient") as fetcher:
            queue: deque[Future[_FirstPage]] = deque()
            waiting = iter(patients.patients)
            for patient in waiting:
                queue.append(fetcher.submit(self._start, patient))
                if len(queue) >= ahead:
                    break
            while queue:
                started = queue.popleft().result()  # AuthError (401) and connection failures stop the run here
                following = next(waiting, None)
                if following is not None:
                    queue.append(fetcher.submit(self._start, following))
                self._finish(plan, started)
        report.outstanding = self.store.outstanding(self.key)
        self.on_progress(report)
        return report

    # ------------------------------------------------------------ one patient

    def _start(self, patient: str) -> _FirstPage:
        """On a fetcher thread: the patient's first page (HTTP only: no state, no report)."""
        checkpoint = self.store.read_checkpoints.get(self.key, patient)
        relabel = checkpoint is not None and checkpoint.labels != self.labels
        since = self.options.since
        if since is None and checkpoint is not None and not relabel:
            overlap = timedelta(seconds=self.client.config.overlap_seconds)
            since = (parse_instant(checkpoint.last_updated) - overlap).isoformat()
        started = _FirstPage(patient, since, relabel)
        pages = self.client.search_pages("QuestionnaireResponse", self._params(patient, since))
        try:
            started.first = next(pages, None)
        except AuthError as exc:
            if exc.status == 401:
                raise
            started.error = exc
        except FhirServerError as exc:
            started.error = exc
        started.rest = pages
        return started

    def _params(self, patient: str, since: str | None) -> dict[str, str]:
        params = {
            "questionnaire": ",".join(self.values),
            "patient": patient,
            "_count": str(self.client.config.page_size),
        }
        if since:
            params["_lastUpdated"] = f"ge{since}"
        if self.options.tag:
            params["_tag"] = search_token(self.options.tag)
        return params

    def _finish(self, plan: ServerPlan, started: _FirstPage) -> None:
        """Score and write one patient's responses; move its checkpoint when all of them landed."""
        if started.error is not None:
            self._fail(started.patient, started.error)
            return
        pipeline = Pipeline(
            self.client,
            self.catalog,
            self.store,
            self.options,
            plan,
            self.report,
            relabel=started.relabel,
            on_progress=self.on_progress,
            results=self.results,
        )
        try:
            with pipeline:
                pipeline.write_all(self._chunks(started))
        except AuthError as exc:
            if exc.status == 401:
                raise
            self._fail(started.patient, exc)
            return
        except FhirServerError as exc:
            self._fail(started.patient, exc)
            return
        self.report.patients_read += 1
        stamp = bundle_time(started.first) if started.first is not None else None
        if (
            stamp is not None
            and pipeline.all_landed
            and not self.options.dry_run
            and not self.options.instruments
            and sane_stamp(self.client, self.report, stamp)
        ):
            self.store.read_checkpoints.move(self.key, started.patient, stamp, self.labels)

    def _chunks(self, started: _FirstPage) -> Iterator[list[dict[str, Any]]]:
        page = started.first
        while page is not None:
            relay_notes(self.report, page, self.notes)
            yield [e["resource"] for e in page.get("entry", []) if is_match(e)]
            page = next(started.rest, None) if started.rest is not None else None

    def _fail(self, patient: str, exc: FhirServerError) -> None:
        """A patient whose search failed: one line, its checkpoint kept (the next run reads it again)."""
        self.report.failed += 1
        self.report.failures.append(SyncFailure(patient, f"QuestionnaireResponse search failed: {exc}"))
