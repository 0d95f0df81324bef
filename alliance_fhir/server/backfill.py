"""The back-fill use case: score a server's history through FHIR Bulk Data ``$export``.

Kick off an export of QuestionnaireResponses (system, Group or Patient level, one
``_typeFilter`` per instrument canonical and per vendor Questionnaire a form map claims, ``_since``), poll it, then stream each NDJSON file and
hand its responses, a chunk at a time, to sync's own path (:func:`.sync.process_stream`: the
same scoring, verified idempotent writes and ledger), or with ``via="import"`` to
:mod:`.backfill_import` (``$import`` of the Observations).

Resumable: the status URL is stored before the first poll, the manifest once the export is
complete, and each file once every response in it was handled and its writes landed. A killed
back-fill therefore resumes without a new export and skips the files done; inside a half-done
file the ledger turns the responses already written into "unchanged". The export's
``transactionTime`` becomes sync's checkpoint only when every file landed, no unreadable line is
outstanding and the export covered what sync covers (every instrument, no Group or Patient); then
the job is cleared.

Nothing read is forgotten and nothing is unbounded: an unreadable line is an outstanding failure in
the ledger (until a sync or export reads its response, or it is dismissed), a file stops after
``max_bad_lines`` of them, a manifest over ``max_files`` is refused, the download phase has a
deadline, a body cut short stops the run with one error, and a job whose progress stalls is given up.

Servers may ignore ``_typeFilter`` and ``_since`` (the IG lets clients be robust): both are
applied again here, and what does not match is counted as ``ignored``, not reported line by line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from .._json import loads
from .._text import describe, safe_text
from .._time import instant_or_none, parse_instant
from ..errors import (
    AllianceFhirError,
    ConfigError,
    FhirTransportError,
    NotFound,
    UnexpectedResponse,
    summarise_outcome,
)
from ..fhirclient.bulk import (
    ExportFile,
    ExportRequest,
    Manifest,
    cancel_job,
    kick_off,
    parse_manifest,
    poll_job,
    supports_operation,
    type_filters,
)
from ..fhirclient.client import FhirClient, safe_origin, safe_path
from ..instruments.catalog import Catalog
from .backfill_import import import_file
from .state import UNREAD_VERSION, UNREADABLE, LedgerEntry, ServerPair, StateStore
from .sync import ExternalWrites, SyncFailure, SyncOptions, SyncReport, new_report, process_stream

__all__ = ["BackfillOptions", "BackfillReport", "cancel_backfill", "run_backfill"]

logger = logging.getLogger(__name__)
VIA = ("transactions", "import")
GIB = 1024**3
REPORTED_PER_FILE = 100  # unreadable lines of one file reported line by line; the rest are counted
_ROWS_PER_WRITE = 200  # unreadable lines recorded in the ledger per transaction


@dataclass(frozen=True)
class BackfillOptions:
    """What to back-fill and how; server settings come from the client's config (ClientConfig)."""

    since: str | None = None
    instruments: Sequence[str] = ()
    group: str | None = None
    patient: str | None = None
    via: str = "transactions"
    max_wait: float = 3600.0  # seconds of polling before giving up (the job is kept)
    poll_interval: float = 120.0  # the longest wait between polls (Retry-After is honoured up to it)
    max_file_bytes: int = 8 * GIB  # one exported file, after decompression
    file_seconds: float = 3600.0  # wall-clock limit for downloading one file
    import_listen: str = "127.0.0.1:0"  # --via import: where our NDJSON is served (HOST:PORT)
    max_files: int = 10_000  # a bigger manifest is refused (the job is kept)
    max_bad_lines: int = 1000  # unreadable lines after which a file is stopped (it stays not done)
    download_seconds: float = 12 * 3600.0  # the whole download phase; past it the rest stays not done
    stalled_polls: int = 15  # polls with the same X-Progress (and as many minutes) that make a job stalled
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic  # the waits' and the deadlines' clock (tests pass a fake)

    def asked(self) -> dict[str, Any]:
        """The options that define the export (a resumed back-fill must ask for the same)."""
        return {
            "since": self.since,
            "instruments": sorted(self.instruments),
            "group": self.group,
            "patient": self.patient,
            "via": self.via,
        }


@dataclass
class BackfillReport:
    """What one back-fill run did (``--json`` prints ``as_dict``)."""

    server: str
    via: str
    since: str | None = None
    status_url: str = ""
    resumed: bool = False
    transaction_time: str | None = None
    files: int = 0
    files_done: int = 0  # this run
    files_done_before: int = 0  # by an earlier, interrupted run
    lines: int = 0
    ignored: int = 0  # exported but outside what was asked (a server ignoring _typeFilter/_since)
    complete: bool = False
    checkpoint: str | None = None
    checkpoint_note: str = ""
    export_seconds: float = 0.0
    seconds: float = 0.0
    unreadable: int = 0  # lines that could not be read as a QuestionnaireResponse (each in the ledger)
    failures: list[SyncFailure] = field(default_factory=list)  # files and lines (at most 100 lines a file)
    sync: SyncReport = field(default_factory=lambda: SyncReport(server="", dry_run=False))
    # why the download phase stopped early (a body cut short, the deadline): the CLI's error line, exit 2
    stopped: AllianceFhirError | None = None

    @property
    def ok(self) -> bool:
        return not self.failures and self.stopped is None and self.sync.ok

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in vars(self).items() if k not in ("failures", "sync", "status_url", "stopped")}
        data["status_url"] = safe_path(self.status_url) if self.status_url else ""
        data["error"] = str(self.stopped) if self.stopped is not None else None
        data["failures"] = [{"resource": f.resource, "reason": f.reason} for f in self.failures]
        data["responses"] = self.sync.as_dict()
        data["ok"] = self.ok
        return data


ProgressHook = Callable[[str, BackfillReport], None]  # (what is happening, the report so far)


def run_backfill(
    client: FhirClient,
    catalog: Catalog,
    store: StateStore,
    options: BackfillOptions = BackfillOptions(),
    on_progress: ProgressHook | None = None,
    *,
    results: FhirClient | None = None,
) -> BackfillReport:
    """One back-fill run: export (or resume the export in the state), then score and write each file.

    The export is the source's (``client``); the Observations go to ``results`` (the results store;
    the source when None), and the export job, ledger and checkpoint are kept for the two together.

    Raises:
        ConfigError: another back-fill with other options is in progress on this state.
        FhirServerError, FhirTransportError: the kick-off or the polling failed (the job is kept
            unless the server no longer knows it).
    """
    return _Backfill(client, catalog, store, options, on_progress, results).run()


def cancel_backfill(client: FhirClient, store: StateStore, results: str | None = None) -> str | None:
    """DELETE the export job in the state (if any) and forget it; its status path, or None if there was none.

    Raises:
        FhirServerError, FhirTransportError: the server refused the DELETE (the job is kept).
    """
    key = ServerPair(client.base_url, results or client.base_url)  # results: the results store's base URL
    job = store.bulk_job(key)
    if job is None:
        return None
    if not cancel_job(client, job.status_url):
        logger.warning("the server no longer knew the export job (404/410); forgetting it")
    store.bulk_clear(key)
    return safe_path(job.status_url)


class _Backfill:
    def __init__(
        self,
        client: FhirClient,
        catalog: Catalog,
        store: StateStore,
        options: BackfillOptions,
        on_progress: ProgressHook | None,
        results: FhirClient | None = None,
    ) -> None:
        if options.via not in VIA:
            raise ConfigError(f"--via must be one of {', '.join(VIA)}, not {options.via!r}")
        if options.group and options.patient:
            raise ConfigError("--group and --patient exclude each other (one export level)")
        self.client, self.catalog, self.store, self.options = client, catalog, store, options
        self.server = client.base_url
        self.results = client if results is None else results
        self.key = ServerPair(client.base_url, self.results.base_url)
        self.instruments = [catalog.get(ref) for ref in options.instruments] if options.instruments else list(catalog)
        self.urls = {inst.url for inst in self.instruments}
        # The vendor Questionnaires a form map claims for these instruments, searched as sync searches them.
        self.vendor = catalog.forms.search_values(self.urls, self.server)
        self.report = BackfillReport(server=self.server, via=options.via)
        self.report.sync = new_report(self.key, dry_run=False)
        self.notify = on_progress or (lambda _what, _report: None)
        self.sync_options = SyncOptions(instruments=tuple(options.instruments))
        self.since_cut: datetime | None = None
        self.export_failed = False  # the manifest listed errors: the export did not fully land

    # ------------------------------------------------------------ the run

    def run(self) -> BackfillReport:
        started = time.perf_counter()
        requests_before = self._requests_sent()
        try:
            statement = self.client.r4_capabilities()
            if self.key.split:  # the writes' server: R4 too, and the one whose $import counts
                statement = self.results.r4_capabilities()
            if self.options.via == "import" and not supports_operation(statement, "import"):
                raise ConfigError(
                    f"--via import: {self.results.base_url} does not offer $import (no 'import' operation in its "
                    "CapabilityStatement); use --via transactions"
                )
            manifest = self._manifest()
            self.report.transaction_time = manifest.transaction_time
            self.report.export_seconds = round(time.perf_counter() - started, 3)
            self._check_size(manifest)
            self._export_errors(manifest)
            self._files(manifest)
            self._finish(manifest)
        finally:
            self.report.sync.requests = self._requests_sent() - requests_before
            self.report.seconds = round(time.perf_counter() - started, 3)
            self.report.sync.seconds = self.report.seconds
        return self.report

    def _request(self) -> ExportRequest:
        since = self.options.since
        if since is None and (checkpoint := self.store.checkpoint(self.key)) is not None:
            overlap = timedelta(seconds=self.client.config.overlap_seconds)
            since = (parse_instant(checkpoint) - overlap).isoformat().replace("+00:00", "Z")  # sync's own window
        patient = self.options.patient
        if patient and "/" not in patient:
            patient = f"Patient/{patient}"
        return ExportRequest(since, type_filters([*sorted(self.urls), *self.vendor]), self.options.group, patient)

    def _manifest(self) -> Manifest:
        """Resume the stored job (its manifest, or more polling), else kick off a new export."""
        asked = json.dumps(self.options.asked(), sort_keys=True)
        job = self.store.bulk_job(self.key)
        if job is not None:
            stored = json.loads(job.request)
            if json.dumps(stored.get("asked"), sort_keys=True) != asked:
                raise ConfigError(
                    f"a back-fill of {self.server} with other options is in progress (kicked off {job.kicked_off_at}: "
                    f"{_describe(stored.get('asked') or {})}); run it again with those options to resume it, "
                    "or backfill --cancel"
                )
            if stored.get("vendor", []) != self.vendor:  # its export would miss (or add) a vendor's responses
                raise ConfigError(
                    f"a back-fill of {self.server} kicked off {job.kicked_off_at} with other form maps is in progress; "
                    "run it again with the same --instruments folders to resume it, or backfill --cancel"
                )
            self.report.resumed = True
            self.report.status_url = job.status_url
            self.report.since = stored.get("since")
            self._set_since_cut(self.report.since)
            if job.manifest is not None:
                return parse_manifest(loads(job.manifest), safe_path(job.status_url))
            status_url = job.status_url
        else:
            request = self._request()
            self.report.since = request.since
            self._set_since_cut(request.since)
            self.notify("kick-off", self.report)
            status_url = kick_off(self.client, request.path, request.parameters())
            self.report.status_url = status_url
            record = {
                "asked": self.options.asked(),
                "since": request.since,
                "path": request.path,
                "vendor": self.vendor,
            }
            self.store.bulk_start(self.key, json.dumps(record, sort_keys=True), status_url)
        return self._poll(status_url)

    def _poll(self, status_url: str) -> Manifest:
        def progress(text: str, waited: float) -> None:
            self.notify(f"export: {text or 'in progress'} ({waited:.0f} s)", self.report)

        try:
            body = poll_job(
                self.client,
                status_url,
                max_wait=self.options.max_wait,
                max_interval=self.options.poll_interval,
                on_progress=progress,
                sleep=self.options.sleep,
                clock=self.options.clock,
                stalled_polls=self.options.stalled_polls,
            )
        except NotFound:
            self.store.bulk_clear(self.key)
            raise UnexpectedResponse(
                "GET",
                safe_path(status_url),
                404,
                "the export job is gone on the server (expired or deleted); it was forgotten: "
                "the next back-fill starts a new export",
            ) from None
        manifest = parse_manifest(body, safe_path(status_url))
        self.store.bulk_complete(self.key, manifest.transaction_time, json.dumps(body))
        return manifest

    def _set_since_cut(self, since: str | None) -> None:
        self.since_cut = parse_instant(since) if since else None

    # ------------------------------------------------------------ the files

    def _export_errors(self, manifest: Manifest) -> None:
        """The manifest's error files (OperationOutcomes): one line each; they keep the export incomplete."""
        for file in manifest.error:
            self.export_failed = True
            try:
                for line in self.client.download_lines(
                    file.url, max_bytes=self.client.config.max_response_bytes, seconds=self.options.file_seconds
                ):
                    outcome = _json_object(line)
                    text = summarise_outcome(outcome) if outcome else "an unreadable OperationOutcome line"
                    self.fail(safe_path(file.url), f"the server reported an export error: {text}")
            except AllianceFhirError as exc:
                self.fail(safe_path(file.url), f"the export's error file could not be read: {exc}")

    def _check_size(self, manifest: Manifest) -> None:
        """A manifest of more files than ``max_files`` is refused before anything is downloaded (the job
        is kept, so a run with a higher cap resumes it)."""
        count = len(manifest.output) + len(manifest.error)
        if count > self.options.max_files:
            raise UnexpectedResponse(
                "GET",
                safe_path(self.report.status_url),
                200,
                f"the export manifest lists {count} files, more than the limit of {self.options.max_files} "
                "(--max-files); nothing was downloaded and the job is kept: run again with a higher --max-files, "
                "or backfill --cancel",
            )

    def _files(self, manifest: Manifest) -> None:
        done = self.store.bulk_files_done(self.key)
        wanted = [f for f in manifest.output if f.type == "QuestionnaireResponse"]
        for other in {f.type for f in manifest.output} - {"QuestionnaireResponse"}:
            self.report.sync.warnings.append(
                SyncFailure(
                    safe_text(other, 40), "the server exported this type too (not asked for); its files were not read"
                )
            )
        self.report.files = len(wanted)
        self.report.files_done_before = sum(1 for f in wanted if f.url in done)
        self.deadline = self.options.clock() + self.options.download_seconds
        for number, file in enumerate(wanted, 1):
            if file.url in done:
                continue
            if self._seconds_left() <= 0:
                self._stop_at_deadline(file)
                return
            self.notify(f"file {number}/{len(wanted)}", self.report)
            landed = self._import_file(file) if self.options.via == "import" else self._write_file(file)
            if landed:
                self.store.bulk_file_done(self.key, file.url)
                self.report.files_done += 1
            if self.report.stopped is not None:
                return

    def _seconds_left(self) -> float:
        return self.deadline - self.options.clock()

    def _stop_at_deadline(self, file: ExportFile) -> None:
        """The download phase's deadline passed: one error, and the files not done stay not done."""
        done = self.report.files_done + self.report.files_done_before
        self.report.stopped = FhirTransportError(
            "GET",
            _shown(file.url),
            f"not downloaded: the download phase passed its deadline of {self.options.download_seconds:.0f} s "
            f"(--download-deadline); {done} of {self.report.files} files are done, the rest stay not done: "
            "run the same back-fill again to resume",
        )

    def _write_file(self, file: ExportFile) -> bool:
        """Stream one file through sync's path; True when every response in it was handled and written."""
        failed_before = self.report.sync.write_failures
        broken: list[str] = []
        process_stream(
            self.client,
            self.catalog,
            self.store,
            self.chunks(file, broken),
            self.sync_options,
            report=self.report.sync,
            on_progress=lambda _sync: self.notify("write", self.report),
            results=self.results,
        )
        return not broken and self.report.sync.write_failures == failed_before

    def _import_file(self, file: ExportFile) -> bool:
        """The same chunks, scored by sync's path, but written by ``$import`` (:mod:`.backfill_import`)."""
        failed_before = self.report.sync.write_failures  # a response refused for its id did not land either
        broken: list[str] = []
        writes = ExternalWrites(
            self.client, self.catalog, self.store, self.sync_options, self.report.sync, results=self.results
        )
        self.report.sync.write_mode = "import"
        self.report.sync.write_mode_reason = (
            "--via import: the server offers $import; Observations are pulled as NDJSON"
        )
        landed = import_file(
            self.results,
            writes,
            self.chunks(file, broken),
            listen=self.options.import_listen,
            max_wait=self.options.max_wait,
            max_interval=self.options.poll_interval,
            sleep=self.options.sleep,
            clock=self.options.clock,
        )
        self.report.sync.outstanding = self.store.outstanding(self.key)
        return landed and not broken and self.report.sync.write_failures == failed_before

    def _requests_sent(self) -> int:
        """Requests sent to both servers (each once when they are one)."""
        extra = self.results.requests_sent if self.key.split else 0
        return self.client.requests_sent + extra

    def chunks(self, file: ExportFile, broken: list[str]) -> Iterator[list[dict[str, Any]]]:
        """The file's responses that were asked for, ``page_size`` at a time.

        A download that fails ends the file with one line (``broken`` is then non-empty; a body
        cut short or the phase's deadline stops the run: ``report.stopped``). An unreadable line
        is recorded as an outstanding failure (:class:`_Unreadable`) and skipped; after
        ``max_bad_lines`` of them the file is stopped and stays not done.
        """
        size = self.client.config.page_size
        unreadable = _Unreadable(self, file)
        chunk: list[dict[str, Any]] = []
        try:
            seconds = min(self.options.file_seconds, self._seconds_left())
            lines = self.client.download_lines(file.url, max_bytes=self.options.max_file_bytes, seconds=seconds)
            for number, line in enumerate(lines, 1):
                self.report.lines += 1
                response = self._response(line, number, unreadable)
                if response is not None:
                    chunk.append(response)
                if unreadable.too_many():
                    broken.append("too many unreadable lines")
                    break
                if len(chunk) >= size:
                    unreadable.flush()
                    yield chunk
                    chunk = []
        except FhirTransportError as exc:
            broken.append(str(exc))
            self._stop_download(file, exc)
        except AllianceFhirError as exc:
            broken.append(str(exc))
            if self._seconds_left() <= 0:
                self._stop_at_deadline(file)
            else:
                self.fail(safe_path(file.url), f"download failed: {exc}")
        unreadable.close()
        if chunk:
            yield chunk

    def _stop_download(self, file: ExportFile, exc: FhirTransportError) -> None:
        """The connection failed or the body broke off: what was read is written, the file stays not
        done, and the run stops with one error line (exit 2)."""
        reason = str(exc).removeprefix(f"{exc.method} {exc.path}: ")
        self.report.stopped = FhirTransportError(
            exc.method, _shown(file.url), f"{reason}; the file is not done: run the same back-fill again to resume"
        )

    def _response(self, line: bytes, number: int, unreadable: _Unreadable) -> dict[str, Any] | None:
        resource, problem = _read_line(line)
        if resource is None:
            unreadable.add(number, line, problem)
            return None
        if not self._asked_for(resource):
            self.report.ignored += 1
            return None
        return resource

    def _asked_for(self, response: dict[str, Any]) -> bool:
        """Our own filter: the instruments, the patient and ``_since`` (servers may ignore theirs)."""
        reference = response.get("questionnaire")
        literal = isinstance(reference, str) and reference.removeprefix(f"{self.server}/").startswith("Questionnaire/")
        mapped = self.catalog.forms.match(response) if self.catalog.forms else None
        if mapped is not None:  # a vendor's form (canonical, reference or contained): asked for if its instrument is
            if mapped.instrument.url not in self.urls:
                return False
        elif isinstance(reference, str) and not literal and reference.partition("|")[0] not in self.urls:
            return False  # a literal reference to one of our Questionnaires is resolved by sync's path
        patient = self.options.patient
        if patient:
            subject = response.get("subject")
            ref = subject.get("reference") if isinstance(subject, dict) else None
            if not isinstance(ref, str) or ref.split("/_history/")[0].removeprefix(f"{self.server}/") not in (
                patient,
                f"Patient/{patient}",
            ):
                return False
        if self.since_cut is not None:
            meta = response.get("meta")
            stamp = meta.get("lastUpdated") if isinstance(meta, dict) else None
            when = instant_or_none(stamp)
            if when is not None and when < self.since_cut:
                return False
        return True

    def fail(self, where: str, reason: str) -> None:
        logger.warning("%s: %s", where, reason)
        self.report.failures.append(SyncFailure(where, reason))

    # ------------------------------------------------------------ the end

    def _finish(self, manifest: Manifest) -> None:
        """Complete: every file landed and no export error. Then the checkpoint (full scope only) and clear the job."""
        self.report.sync.outstanding = self.store.outstanding(self.key)
        landed = self.report.files_done + self.report.files_done_before == self.report.files
        unread = self.store.unreadable_count(self.key)
        self.report.complete = landed and not self.export_failed and not unread
        if not landed:
            self.report.checkpoint_note = (
                "not moved: the export has not fully landed; the job is kept: run the same back-fill again to resume"
            )
            return
        if self.export_failed or unread:  # resuming cannot fix what the server exported badly
            self.report.checkpoint_note = (
                "not moved: the server reported export errors"
                if self.export_failed
                else f"not moved: {unread} exported line(s) could not be read and are outstanding (failures lists "
                "them) until a sync or back-fill reads them or they are dismissed"
            )
            self.store.bulk_clear(self.key)
            return
        partial = [
            name
            for name, value in (
                ("--instrument", self.options.instruments),
                ("--group", self.options.group),
                ("--patient", self.options.patient),
            )
            if value
        ]
        if partial:
            self.report.checkpoint_note = f"not moved: a partial back-fill ({', '.join(partial)})"
        elif not self._sane(manifest.transaction_time):
            self.report.checkpoint_note = (
                f"not moved: the server's transactionTime {manifest.transaction_time} is ahead of our clock"
            )
        else:
            self.store.set_checkpoint(self.key, manifest.transaction_time)
            self.report.checkpoint = manifest.transaction_time
            self.report.checkpoint_note = "sync continues from the export's transactionTime"
        self.store.bulk_clear(self.key)

    def _sane(self, stamp: str) -> bool:
        ahead = (parse_instant(stamp) - datetime.now(UTC)).total_seconds()
        return ahead <= self.client.config.clock_tolerance_seconds


class _Unreadable:
    """One file's unreadable lines. Each is recorded in the ledger as an outstanding failure, keyed by
    the response's id when the line shows one (the next sync or export that reads the response clears
    it), else by the file and line (until dismissed). Only the first ``REPORTED_PER_FILE`` are reported
    and logged, the rest counted in one line; rows wait in a bounded batch. Memory is flat however
    many bad lines a file holds, and after ``max_bad_lines`` the file is stopped (it stays not done)."""

    def __init__(self, backfill: _Backfill, file: ExportFile) -> None:
        self.backfill = backfill
        self.where = safe_path(file.url)
        self.key = _file_key(file.url)
        self.limit = backfill.options.max_bad_lines
        self.count = 0
        self.rows: list[LedgerEntry] = []

    def add(self, number: int, line: bytes, problem: str) -> None:
        self.count += 1
        self.backfill.report.unreadable += 1
        rid = _recognisable_id(line)
        where = f"{self.where} line {number}"
        detail = f"an unreadable line of an export ({where}): {problem}" if rid else f"{where}: {problem}"
        self.rows.append(LedgerEntry(rid or f"{self.key} line {number}", UNREAD_VERSION, UNREADABLE, detail))
        if self.count <= REPORTED_PER_FILE:
            self.backfill.fail(f"QuestionnaireResponse/{rid}" if rid else where, problem)
        if len(self.rows) >= _ROWS_PER_WRITE:
            self.flush()

    def too_many(self) -> bool:
        return self.count >= self.limit

    def flush(self) -> None:
        self.backfill.store.record(self.backfill.server, self.rows)
        self.rows = []

    def close(self) -> None:
        """Flush; then one line for what was not listed, and one for a file stopped at the limit."""
        if self.count >= self.limit:
            reason = (
                f"stopped after {self.count} unreadable lines (--max-bad-lines {self.limit}); the rest of the file "
                "was not read and it stays not done"
            )
            self.rows.append(LedgerEntry(self.key, UNREAD_VERSION, UNREADABLE, f"{self.where}: {reason}"))
            self.backfill.fail(self.where, reason)
        self.flush()
        if self.count > REPORTED_PER_FILE:
            self.backfill.fail(
                self.where,
                f"{self.count - REPORTED_PER_FILE} more unreadable lines, not listed here (each is an outstanding "
                "failure: failures lists them)",
            )


def _read_line(line: bytes) -> tuple[dict[str, Any] | None, str]:
    """A line as a QuestionnaireResponse, or None and why not (no content of the line is quoted)."""
    try:
        value = loads(line)
    except ValueError:
        return None, "not JSON (broken or truncated)"
    if not isinstance(value, dict):
        return None, f"not a JSON object but {describe(value)}"
    kind = value.get("resourceType")
    if kind == "QuestionnaireResponse":
        return value, ""
    if kind is None:
        return None, "no resourceType: not a QuestionnaireResponse"
    shown = repr(safe_text(kind, 40)) if isinstance(kind, str) else f"resourceType {describe(kind)}"
    return None, f"a {shown} in a QuestionnaireResponse file"


# The id of a QuestionnaireResponse whose line broke after its start (HAPI writes resourceType, then id).
_LINE_ID = re.compile(
    rb'\A\s*\{\s*"resourceType"\s*:\s*"QuestionnaireResponse"\s*,\s*"id"\s*:\s*"([A-Za-z0-9\-.]{1,64})"'
)


def _recognisable_id(line: bytes) -> str | None:
    match = _LINE_ID.match(line[:300])
    return match.group(1).decode() if match else None


def _file_key(url: str) -> str:
    """An exported file as the ledger names it: its path (no query values), made unique by a digest
    of the whole URL when a query tells files apart."""
    shown = safe_path(url)
    if not urlsplit(url).query:
        return shown
    return f"{shown}#{hashlib.blake2b(url.encode(), digest_size=4).hexdigest()}"


def _shown(url: str) -> str:
    return safe_origin(url) + safe_path(url)


def _describe(asked: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in sorted(asked.items()) if v not in (None, [], "")]
    return ", ".join(parts) or "no options"


def _json_object(line: bytes) -> dict[str, Any] | None:
    try:
        value = loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
