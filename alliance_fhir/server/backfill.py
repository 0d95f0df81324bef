"""The back-fill use case: score a server's history through FHIR Bulk Data ``$export``.

Kick off an export of QuestionnaireResponses (system, Group or Patient level, one
``_typeFilter`` per instrument canonical, ``_since``), poll it, then stream each NDJSON file and
hand its responses, a chunk at a time, to sync's own path (:func:`.sync.process_stream`: the
same scoring, verified idempotent writes and ledger), or with ``via="import"`` to
:mod:`.backfill_import` (``$import`` of the Observations).

Resumable: the status URL is stored before the first poll, the manifest once the export is
complete, and each file once every response in it was handled and its writes landed. A killed
back-fill therefore resumes without a new export and skips the files done; inside a half-done
file the ledger turns the responses already written into "unchanged". The export's
``transactionTime`` becomes sync's checkpoint only when every file landed and the export covered
what sync covers (every instrument, no Group or Patient); then the job is cleared.

Servers may ignore ``_typeFilter`` and ``_since`` (the IG lets clients be robust): both are
applied again here, and what does not match is counted as ``ignored``, not reported line by line.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .._json import loads
from ..errors import AllianceFhirError, ConfigError, NotFound, UnexpectedResponse, summarise_outcome
from ..instruments.catalog import Catalog
from .backfill_import import import_file
from .bulk import (
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
from .client import FhirClient, safe_path
from .state import StateStore
from .sync import ExternalWrites, SyncFailure, SyncOptions, SyncReport, process_stream

__all__ = ["BackfillOptions", "BackfillReport", "cancel_backfill", "run_backfill"]

logger = logging.getLogger(__name__)
VIA = ("transactions", "import")
GIB = 1024**3


@dataclass(frozen=True)
class BackfillOptions:
    """What to back-fill and how; server settings come from the client's ServerConfig."""

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
    sleep: Callable[[float], None] = time.sleep

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
    failures: list[SyncFailure] = field(default_factory=list)  # files and lines
    sync: SyncReport = field(default_factory=lambda: SyncReport(server="", dry_run=False))

    @property
    def ok(self) -> bool:
        return not self.failures and self.sync.ok

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in vars(self).items() if k not in ("failures", "sync", "status_url")}
        data["status_url"] = safe_path(self.status_url) if self.status_url else ""
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
) -> BackfillReport:
    """One back-fill run: export (or resume the export in the state), then score and write each file.

    Raises:
        ConfigError: another back-fill with other options is in progress on this state.
        FhirServerError, FhirTransportError: the kick-off or the polling failed (the job is kept
            unless the server no longer knows it).
    """
    return _Backfill(client, catalog, store, options, on_progress).run()


def cancel_backfill(client: FhirClient, store: StateStore) -> str | None:
    """DELETE the export job in the state (if any) and forget it; its status path, or None if there was none.

    Raises:
        FhirServerError, FhirTransportError: the server refused the DELETE (the job is kept).
    """
    job = store.bulk_job(client.base_url)
    if job is None:
        return None
    if not cancel_job(client, job.status_url):
        logger.warning("the server no longer knew the export job (404/410); forgetting it")
    store.bulk_clear(client.base_url)
    return safe_path(job.status_url)


class _Backfill:
    def __init__(
        self,
        client: FhirClient,
        catalog: Catalog,
        store: StateStore,
        options: BackfillOptions,
        on_progress: ProgressHook | None,
    ) -> None:
        if options.via not in VIA:
            raise ConfigError(f"--via must be one of {', '.join(VIA)}, not {options.via!r}")
        if options.group and options.patient:
            raise ConfigError("--group and --patient exclude each other (one export level)")
        self.client, self.catalog, self.store, self.options = client, catalog, store, options
        self.server = client.base_url
        self.instruments = [catalog.get(ref) for ref in options.instruments] if options.instruments else list(catalog)
        self.urls = {inst.url for inst in self.instruments}
        self.report = BackfillReport(server=self.server, via=options.via)
        self.report.sync = SyncReport(server=self.server, dry_run=False)
        self.notify = on_progress or (lambda _what, _report: None)
        self.sync_options = SyncOptions(instruments=tuple(options.instruments))
        self.since_cut: datetime | None = None
        self.export_failed = False  # the manifest listed errors: the export did not fully land

    # ------------------------------------------------------------ the run

    def run(self) -> BackfillReport:
        started = time.perf_counter()
        requests_before = self.client.requests_sent
        try:
            statement = self.client.r4_capabilities()
            if self.options.via == "import" and not supports_operation(statement, "import"):
                raise ConfigError(
                    f"--via import: {self.server} does not offer $import (no 'import' operation in its "
                    "CapabilityStatement); use --via transactions"
                )
            manifest = self._manifest()
            self.report.transaction_time = manifest.transaction_time
            self.report.export_seconds = round(time.perf_counter() - started, 3)
            self._export_errors(manifest)
            self._files(manifest)
            self._finish(manifest)
        finally:
            self.report.sync.requests = self.client.requests_sent - requests_before
            self.report.seconds = round(time.perf_counter() - started, 3)
            self.report.sync.seconds = self.report.seconds
        return self.report

    def _request(self) -> ExportRequest:
        since = self.options.since
        if since is None and (checkpoint := self.store.checkpoint(self.server)) is not None:
            overlap = timedelta(seconds=self.client.config.overlap_seconds)
            since = (_instant(checkpoint) - overlap).isoformat().replace("+00:00", "Z")  # sync's own window
        patient = self.options.patient
        if patient and "/" not in patient:
            patient = f"Patient/{patient}"
        return ExportRequest(since, type_filters(sorted(self.urls)), self.options.group, patient)

    def _manifest(self) -> Manifest:
        """Resume the stored job (its manifest, or more polling), else kick off a new export."""
        asked = json.dumps(self.options.asked(), sort_keys=True)
        job = self.store.bulk_job(self.server)
        if job is not None:
            stored = json.loads(job.request)
            if json.dumps(stored.get("asked"), sort_keys=True) != asked:
                raise ConfigError(
                    f"a back-fill of {self.server} with other options is in progress (kicked off {job.kicked_off_at}: "
                    f"{_describe(stored.get('asked') or {})}); run it again with those options to resume it, "
                    "or backfill --cancel"
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
            record = {"asked": self.options.asked(), "since": request.since, "path": request.path}
            self.store.bulk_start(self.server, json.dumps(record, sort_keys=True), status_url)
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
            )
        except NotFound:
            self.store.bulk_clear(self.server)
            raise UnexpectedResponse(
                "GET",
                safe_path(status_url),
                404,
                "the export job is gone on the server (expired or deleted); it was forgotten: "
                "the next back-fill starts a new export",
            ) from None
        manifest = parse_manifest(body, safe_path(status_url))
        self.store.bulk_complete(self.server, manifest.transaction_time, json.dumps(body))
        return manifest

    def _set_since_cut(self, since: str | None) -> None:
        self.since_cut = _instant(since) if since else None

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
                    self._fail(safe_path(file.url), f"the server reported an export error: {text}")
            except AllianceFhirError as exc:
                self._fail(safe_path(file.url), f"the export's error file could not be read: {exc}")

    def _files(self, manifest: Manifest) -> None:
        done = self.store.bulk_files_done(self.server)
        wanted = [f for f in manifest.output if f.type == "QuestionnaireResponse"]
        for other in {f.type for f in manifest.output} - {"QuestionnaireResponse"}:
            self.report.sync.warnings.append(
                SyncFailure(other, "the server exported this type too (not asked for); its files were not read")
            )
        self.report.files = len(wanted)
        self.report.files_done_before = sum(1 for f in wanted if f.url in done)
        for file in wanted:
            if file.url in done:
                continue
            self.notify(f"file {self._position(file, wanted)}", self.report)
            landed = self._import_file(file) if self.options.via == "import" else self._write_file(file)
            if landed:
                self.store.bulk_file_done(self.server, file.url)
                self.report.files_done += 1

    def _position(self, file: ExportFile, wanted: list[ExportFile]) -> str:
        return f"{wanted.index(file) + 1}/{len(wanted)}"

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
        )
        return not broken and self.report.sync.write_failures == failed_before

    def _import_file(self, file: ExportFile) -> bool:
        """The same chunks, scored by sync's path, but written by ``$import`` (:mod:`.backfill_import`)."""
        failed_before = self.report.sync.write_failures  # a response refused for its id did not land either
        broken: list[str] = []
        writes = ExternalWrites(self.client, self.catalog, self.store, self.sync_options, self.report.sync)
        self.report.sync.write_mode = "import"
        self.report.sync.write_mode_reason = (
            "--via import: the server offers $import; Observations are pulled as NDJSON"
        )
        landed = import_file(
            self.client,
            writes,
            self.chunks(file, broken),
            listen=self.options.import_listen,
            max_wait=self.options.max_wait,
            max_interval=self.options.poll_interval,
            sleep=self.options.sleep,
        )
        self.report.sync.outstanding = self.store.outstanding(self.server)
        return landed and not broken and self.report.sync.write_failures == failed_before

    def chunks(self, file: ExportFile, broken: list[str]) -> Iterator[list[dict[str, Any]]]:
        """The file's responses that were asked for, ``page_size`` at a time. A download that fails
        ends the file with one line (``broken`` is then non-empty); a bad line is one line and skipped."""
        size = self.client.config.page_size
        chunk: list[dict[str, Any]] = []
        where = safe_path(file.url)
        try:
            lines = self.client.download_lines(
                file.url, max_bytes=self.options.max_file_bytes, seconds=self.options.file_seconds
            )
            for number, line in enumerate(lines, 1):
                self.report.lines += 1
                response = self._response(line, f"{where} line {number}")
                if response is not None:
                    chunk.append(response)
                if len(chunk) >= size:
                    yield chunk
                    chunk = []
        except AllianceFhirError as exc:
            broken.append(str(exc))
            self._fail(where, f"download failed: {exc}")
        if chunk:
            yield chunk

    def _response(self, line: bytes, where: str) -> dict[str, Any] | None:
        resource = _json_object(line)
        if resource is None:
            self._fail(where, "not a JSON object")
            return None
        if resource.get("resourceType") != "QuestionnaireResponse":
            self._fail(where, f"a {str(resource.get('resourceType'))[:40]!r} in a QuestionnaireResponse file")
            return None
        if not self._asked_for(resource):
            self.report.ignored += 1
            return None
        return resource

    def _asked_for(self, response: dict[str, Any]) -> bool:
        """Our own filter: the instruments, the patient and ``_since`` (servers may ignore theirs)."""
        reference = response.get("questionnaire")
        literal = isinstance(reference, str) and reference.removeprefix(f"{self.server}/").startswith("Questionnaire/")
        if isinstance(reference, str) and not literal and reference.partition("|")[0] not in self.urls:
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
            when = _instant(stamp) if isinstance(stamp, str) else None
            if when is not None and when < self.since_cut:
                return False
        return True

    def _fail(self, where: str, reason: str) -> None:
        logger.warning("%s: %s", where, reason)
        self.report.failures.append(SyncFailure(where, reason))

    # ------------------------------------------------------------ the end

    def _finish(self, manifest: Manifest) -> None:
        """Complete: every file landed and no export error. Then the checkpoint (full scope only) and clear the job."""
        self.report.sync.outstanding = self.store.outstanding(self.server)
        landed = self.report.files_done + self.report.files_done_before == self.report.files
        self.report.complete = landed and not self.export_failed
        if not landed:
            self.report.checkpoint_note = (
                "not moved: the export has not fully landed; the job is kept: run the same back-fill again to resume"
            )
            return
        if self.export_failed:  # resuming cannot fix what the server failed to export
            self.report.checkpoint_note = "not moved: the server reported export errors"
            self.store.bulk_clear(self.server)
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
            self.store.set_checkpoint(self.server, manifest.transaction_time)
            self.report.checkpoint = manifest.transaction_time
            self.report.checkpoint_note = "sync continues from the export's transactionTime"
        self.store.bulk_clear(self.server)

    def _sane(self, stamp: str) -> bool:
        ahead = (_instant(stamp) - datetime.now(UTC)).total_seconds()
        return ahead <= self.client.config.clock_tolerance_seconds


def _describe(asked: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in sorted(asked.items()) if v not in (None, [], "")]
    return ", ".join(parts) or "no options"


def _json_object(line: bytes) -> dict[str, Any] | None:
    try:
        value = loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _instant(stamp: str) -> datetime:
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)
