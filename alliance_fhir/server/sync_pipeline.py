"""Sync's per-response pipeline: every response, however it came, is handled here and in this order.

A sync page, a round of serve's notifications, a chunk of a back-fill file and a chunk written
by ``$import`` all go through one :class:`Pipeline`, which has one way in per use:

- :meth:`Pipeline.write_all`: score chunk by chunk, write the Observations (``concurrency``
  batches in flight), settle every write (sync, serve, backfill);
- :meth:`Pipeline.stage` then :meth:`Pipeline.settle`: for a caller that writes the Observations
  itself (``backfill --via import``).

For each chunk, in this order: check (type, id, status, attribution) -> claim -> read the ledger
-> score and build -> write -> record the outcome -> release. The order rules are kept here, not
by the callers:

- A response stays claimed from before its ledger entry is read until its outcome is recorded
  (:meth:`_claim_and_decide` claims, :meth:`settle` records then releases), so two workers on one
  state never write the same response at once, and a worker that dies loses its claims with its
  connection.
- Responses another worker holds are waited for only once ours have landed and their claims are
  gone (:meth:`_wait_for_theirs`), so no two workers wait on each other. ``stage`` is the one
  exception, because its writes land only when the caller's ``$import`` completes; its waits are
  bounded all the same.
- Leaving the pipeline (``with`` or :meth:`close`) releases every claim still held.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from .._closing import Closing
from .._ids import IDENTIFIER_SYSTEM
from .._refs import FHIR_ID_RULE, References, parse_reference, valid_id
from .._text import describe, safe_text
from ..errors import InstrumentError, ScoringError
from ..fhirclient.client import FhirClient
from ..instruments.catalog import Catalog, Instrument
from ..scoring.engine import resource_ref, score_response
from ..scoring.observations import build_observation, observation_identifier_for
from .state import LedgerEntry, ServerPair, StateStore, patient_keys
from .sync_plan import ServerPlan
from .sync_report import SyncFailure, SyncOptions, SyncReport, warn
from .writeback import EhrWriter, Landed
from .writes import PendingWrite, Writer, Written

__all__ = ["SEARCH", "Pipeline"]

# Searched without a status filter (HAPI on H2 takes 45 s a page for questionnaire= with a
# multi-valued status=); the statuses are filtered here instead.
_SYNCED_STATUSES = frozenset({"completed", "amended", "entered-in-error"})
SEARCH = "QuestionnaireResponse search"  # what warnings about the search's answer name
MAX_NAMED = 10  # distinct resource types (and server notes) a run names before it only counts them

Futures = set[Future[list[Written]]]


class Pipeline(Closing):
    """Score, claim, decide, write and record the responses of one run (see the module docstring).

    ``client`` is the source (responses are attributed by its base URL); ``results`` the results
    store, where the Observations are written, verified and looked up (the source when None). The
    ledger and claims are keyed by both (:class:`.state.ServerPair`); the Observations name the
    source's resources absolute on it when the two differ (:class:`~alliance_fhir._refs.References`).
    ``report`` is the caller's: counts add up in it (one report across a back-fill's files).
    ``relabel``: the labels differ from those the last complete sync applied, so every response
    read is rewritten once. Not thread-safe: one thread drives it (its pool only talks HTTP).
    """

    def __init__(
        self,
        client: FhirClient,
        catalog: Catalog,
        store: StateStore,
        options: SyncOptions,
        plan: ServerPlan,
        report: SyncReport,
        *,
        relabel: bool = False,
        on_progress: Callable[[SyncReport], None] | None = None,
        results: FhirClient | None = None,
    ) -> None:
        self._client, self._catalog, self._store, self._options = client, catalog, store, options
        self._results = client if results is None else results
        self._server = ServerPair(client.base_url, self._results.base_url)
        self._references = References.between(self._server.source, self._server.results)
        self._our_ids = plan.our_ids
        self._writer = Writer(self._results, plan.write.mode)
        self.report = report
        report.write_mode, report.write_mode_reason = plan.write.mode, plan.write.reason
        self._ehr: EhrWriter | None = None
        if plan.routes is not None:
            report.writeback = [c.line() for c in plan.routes.choices]
            if plan.routes.writes_to_ehr and not options.dry_run:
                self._ehr = EhrWriter(client, self._results, catalog, store, plan.routes, self._server)
        self._relabel = relabel
        self._on_progress = on_progress or (lambda _report: None)
        self._incomplete = False  # a response of this run did not land (a write failed, an id was refused)
        self._verify_ledger = True  # until a page shows the server still holds what the ledger says
        self._deferred: list[dict[str, Any]] = []  # responses another worker on this state holds right now
        self._held: set[str] = set()  # our claims not yet released
        self._subjects_by_id: dict[str, str] = {}  # responses being handled -> subject (report.subjects)
        self._unexpected: Counter[str] = Counter()  # resources of another type the server returned, by type
        self._closed = False

    # ------------------------------------------------------------ the ways in

    @property
    def all_landed(self) -> bool:
        """Every response of this run that needed a write got it (no write failed, no id was refused)."""
        return not self._incomplete

    def write_all(self, chunks: Iterable[list[dict[str, Any]]]) -> None:
        """Score each chunk of responses and write its Observations, ``concurrency`` batches in flight.

        Returns when every write has settled (landed or recorded as failed).
        """
        self._check_open()
        config = self._results.config
        # Workers only talk HTTP; the ledger and the counts are updated here, on this thread.
        with ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="sync-write") as pool:
            in_flight: Futures = set()
            for responses in chunks:
                in_flight = self._submit(pool, in_flight, self._claim_and_decide(responses))
                if self._deferred:
                    in_flight = self._wait_for_theirs(pool, in_flight)
                self._on_progress(self.report)
            self._settle_done(wait(in_flight)[0])
        self._report_unexpected()

    def stage(self, responses: list[dict[str, Any]]) -> list[PendingWrite]:
        """The Observations to write for ``responses``, each claimed until :meth:`settle` records it.

        For a caller that writes them itself. Responses another worker holds are waited for
        (bounded) while these claims are held: the caller's writes land only later.
        """
        self._check_open()
        writes = self._claim_and_decide(responses)
        if self._deferred:
            writes += self._decide_deferred()
        return writes

    def settle(self, results: list[Written]) -> None:
        """Count and record what the server confirmed (and what it did not), then release those claims.

        With write-back routes, what landed in the results store is then written into the EHR
        (:meth:`_write_back`): a response is recorded as written only when both landed; an EHR
        refusal is a write failure with the EHR's reason (listed by ``failures``, retried next run).
        """
        results = self._write_back(results)
        ledger = []
        changed: set[str] = set()
        for write, error in results:
            subject = self._subjects_by_id.pop(write.response_id, None)
            if error is not None:
                self._incomplete = True
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
                changed.add(subject)
            ledger.append(LedgerEntry(write.response_id, write.version_id, write.outcome, None, write.identifier))
        try:
            self._store.record(self._server, ledger)
            if not self._options.dry_run:  # after the server confirmed: the CDS hook's stored reads are out of date
                self._store.cds_summaries.changed(self._server, patient_keys(changed, self._server))
        finally:
            self._release([write.response_id for write, _ in results])
        self._on_progress(self.report)

    def close(self) -> None:
        """Let go of every claim still held (a run that stopped on an error, writes never settled)."""
        self._closed = True
        self._release(sorted(self._held))
        self._report_unexpected()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this pipeline is closed: its claims are released, open a new one")

    # ------------------------------------------------------------ writing

    def _submit(self, pool: ThreadPoolExecutor, in_flight: Futures, writes: list[PendingWrite]) -> Futures:
        config = self._results.config
        for batch in _batches(writes, config.batch_size):
            while len(in_flight) >= config.concurrency * 2:
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                self._settle_done(done)
            in_flight.add(pool.submit(self._writer.write, batch))
        return in_flight

    def _write_back(self, results: list[Written]) -> list[Written]:
        """Write the landed Observations' routes into the EHR; an EHR failure becomes the write's failure."""
        if self._ehr is None:
            return results
        landed = [
            Landed(w.response_id, w.observation, w.outcome == "retracted") for w, error in results if error is None
        ]
        if not landed:
            return results
        before = self._ehr.written
        failed = self._ehr.write(landed)
        self.report.ehr_written += self._ehr.written - before
        return [(w, failed.get(w.response_id) if error is None else error) for w, error in results]

    def _settle_done(self, done: Iterable[Future[list[Written]]]) -> None:
        for future in done:
            self.settle(future.result())

    def _wait_for_theirs(self, pool: ThreadPoolExecutor, in_flight: Futures) -> Futures:
        """Another worker holds some responses: let ours land first (we then hold no claim, so no
        two workers wait on each other), then wait for theirs and look again."""
        done, _ = wait(in_flight)
        self._settle_done(done)
        return self._submit(pool, set(), self._decide_deferred())

    # ------------------------------------------------------------ deciding

    def _claim_and_decide(self, candidates: list[dict[str, Any]]) -> list[PendingWrite]:
        """Check, claim, and decide: record scoring failures; return the Observations to write."""
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
        claimed = set(ids) if self._options.dry_run else self._store.claim(self._server, ids)
        self._held |= claimed
        self._deferred += [r for r, rid in zip(responses, ids, strict=True) if rid not in claimed]
        return self._decide([r for r, rid in zip(responses, ids, strict=True) if rid in claimed])

    def _decide_deferred(self) -> list[PendingWrite]:
        """The responses another worker held: wait (bounded) until it lets go, then decide again
        (usually: it wrote them, so they are unchanged)."""
        deferred, self._deferred = self._deferred, []
        ids = sorted({str(r.get("id", "")) for r in deferred})  # one order for every worker: no deadlock
        for rid in ids:
            if not self._options.dry_run:
                self._store.wait_claim(self._server, rid, 2 * self._client.config.timeout)
                self._held.add(rid)
        return self._decide(deferred)

    def _decide(self, responses: list[dict[str, Any]]) -> list[PendingWrite]:
        """For claimed responses: skip the unchanged, record failures, return the writes (still claimed)."""
        ids = [str(r.get("id", "")) for r in responses]
        writes: list[PendingWrite] = []
        try:
            seen = self._store.lookup(self._server, ids)
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
            if not self._options.dry_run:
                self._store.record(self._server, ledger)
        except BaseException:
            self._release(ids)
            raise
        pending = {w.response_id for w in writes}
        settled = [rid for rid in ids if rid not in pending]
        self._release(settled)  # the rest when their write settles
        self._forget_subjects(settled)
        return writes

    def _count_unexpected(self, resource: Any) -> None:
        """A resource that is not a QuestionnaireResponse, counted by type (named safely, at most a few types)."""
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        name = safe_text(kind, 40) if isinstance(kind, str) and kind else "(no resourceType)"
        if name not in self._unexpected and len(self._unexpected) >= MAX_NAMED:
            name = "(of other types)"
        self._unexpected[name] += 1

    def _report_unexpected(self) -> None:
        """One warning for the resources of other types the server returned as responses (then forgotten)."""
        if self._unexpected:
            kinds = ", ".join(f"{count} {kind}" for kind, count in self._unexpected.most_common())
            warn(self.report, SEARCH, f"the server returned {kinds} (not QuestionnaireResponses): ignored")
            self._unexpected.clear()

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
        self._incomplete = True
        self.report.write_failures += 1
        self.report.failed += 1
        self.report.failures.append(SyncFailure(resource_ref(response), f"{reason}: refused, nothing written"))

    def _attributed(self, response: dict[str, Any]) -> dict[str, Any] | None:
        """The response with ``questionnaire`` as one of our canonicals, or None if it is not ours.

        A response to a vendor form that a form map claims is ours as it is. A literal reference (``Questionnaire/1005``, or that on our server's base URL) to one of our
        Questionnaires becomes that Questionnaire's url|version.
        """
        reference = response.get("questionnaire")
        if not isinstance(reference, str):
            return response  # scoring names the problem
        if reference.partition("|")[0] in {url for inst in self._catalog for url in inst.response_urls}:
            return response
        if self._catalog.forms and self._catalog.forms.match(response) is not None:
            return response  # a vendor form a form map claims: scoring reads it through the map
        ref = parse_reference(reference)
        if ref is not None and ref.type == "Questionnaire" and ref.on(self._server.source) and ref.id in self._our_ids:
            return {**response, "questionnaire": self._our_ids[ref.id]}
        return None

    def _remember_subject(self, response: dict[str, Any]) -> None:
        """Keep the subject until the response's write settles (``report.subjects`` names it then).

        Only responses still being handled are kept, so a sync of 10^6 responses holds one page and
        the batches in flight here, not an entry per response read.
        """
        subject = response.get("subject")
        reference = subject.get("reference") if isinstance(subject, dict) else None
        if isinstance(reference, str) and reference:
            self._subjects_by_id[str(response.get("id", ""))] = reference

    def _forget_subjects(self, response_ids: Iterable[str]) -> None:
        for rid in response_ids:
            self._subjects_by_id.pop(rid, None)

    def _release(self, response_ids: list[str]) -> None:
        if response_ids and not self._options.dry_run:
            self._store.release(self._server, response_ids)
            self._held.difference_update(response_ids)

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
        if not written or not self._verify_ledger:
            return seen
        values = ",".join(f"{IDENTIFIER_SYSTEM}|{value}" for value in written)
        params = {"identifier": values, "_elements": "identifier", "_count": str(len(written))}
        present = {
            ident.get("value")
            for resource in self._results.search("Observation", params, post=True)
            for ident in resource.get("identifier", []) or []
            if isinstance(ident, dict) and ident.get("system") == IDENTIFIER_SYSTEM
        }
        self._verify_ledger = not set(written) <= present
        return {rid: e for rid, e in seen.items() if e.outcome != "written" or e.observation_identifier in present}

    def _unchanged(self, previous: LedgerEntry, response: dict[str, Any], version: str) -> bool:
        if previous.version_id != version or previous.outcome == "write-failed":  # a failed write is retried every run
            return False
        if previous.outcome != "written":
            return True
        if self._relabel:
            return False
        instrument = self._instrument(response)
        return instrument is None or previous.observation_identifier == observation_identifier_for(
            response, instrument.mapping
        )

    def _instrument(self, response: dict[str, Any]) -> Instrument | None:
        try:
            return self._catalog.instrument_for(response)
        except InstrumentError:
            return None

    # ------------------------------------------------------------ building

    def _prepare(self, response: dict[str, Any], rid: str, version: str) -> PendingWrite | LedgerEntry | None:
        if response.get("status") == "entered-in-error":
            return self._retraction(response, rid, version)
        try:
            result = score_response(response, self._catalog)
        except ScoringError as exc:
            return self._fail(rid, version, str(exc))
        self.report.scored += 1
        for warning in result.warnings:
            self.report.warnings.append(SyncFailure(f"QuestionnaireResponse/{rid}", warning))
        observation = build_observation(result, response, security=self._options.security, references=self._references)
        if self._options.tag:
            observation["meta"] = {**observation.get("meta", {}), "tag": [self._options.tag]}
        identifier = observation["identifier"][0]["value"]
        if self._options.dry_run:
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
        existing = list(self._results.search("Observation", {"identifier": f"{IDENTIFIER_SYSTEM}|{identifier}"}))
        if not existing or existing[0].get("status") == "entered-in-error":
            return LedgerEntry(rid, version, "retracted", "no Observation to retract", identifier)
        observation = {k: v for k, v in existing[0].items() if k not in ("meta", "text")}
        labels = (existing[0].get("meta") or {}).get("security")
        if labels:  # a retraction keeps the labels (servers that replace meta on update would drop them)
            observation["meta"] = {"security": labels}
        observation["status"] = "entered-in-error"
        if self._options.dry_run:
            self.report.retracted += 1
            return None
        return PendingWrite(rid, version, identifier, observation, outcome="retracted")

    def _fail(self, rid: str, version: str, reason: str) -> LedgerEntry:
        self.report.failed += 1
        self.report.failures.append(SyncFailure(f"QuestionnaireResponse/{rid}", reason))
        return LedgerEntry(rid, version, "failed", reason)


def _batches(writes: list[PendingWrite], size: int) -> Iterable[list[PendingWrite]]:
    for start in range(0, len(writes), size):
        yield writes[start : start + size]


def _version(response: dict[str, Any]) -> str:
    meta = response.get("meta")
    if not isinstance(meta, dict):
        return ""
    version = meta.get("versionId") or meta.get("lastUpdated") or ""
    return version if isinstance(version, str) else ""
