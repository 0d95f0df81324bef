"""The service's worker: drain the inbox, run catch-up and safety-net syncs, refresh signals.

One worker thread does every score write, so the ledger and the conditional writes never race
each other (a sync and a drained hint for the same response are serialised). Per round it takes up to ``batch_size`` hints from the inbox, re-reads those
responses from the configured server in one search by ``_id``, hands them to its
:class:`..server.sync.SyncSession` (sync's own per-response path: status filter, attribution
to our Questionnaires, verified writes in batches with several in flight, ledger), and only then
removes the hints. The session keeps what the last catch-up sync learnt of the server (the write
mode, our Questionnaires' ids), so a round of one response costs two requests: the re-read and
the write. A crash anywhere in between leaves the hints in the inbox; the ledger and the
conditional writes make the retry write nothing twice.

A second thread recomputes the signals of each patient whose scores changed (one patient at a
time, so two updates of one patient's DetectedIssues never race): the scores of a burst are not
held up by the signals, and a patient whose responses arrive in many rounds gets one
recomputation per pass of that thread, not one per round (it re-reads the patient's whole series).

The catch-up sync runs on a third thread (hints are not held up by a long sync): once the inbox
is drained at start, on an empty rest-hook POST (a
Subscription without payload names no resource), when a Backport notification shows missed
events, and every ``safety_net_minutes``: HAPI gives up on a receiver after about a minute and
never delivers deletes or some status changes, so sync stays the guarantee.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from ..errors import AllianceFhirError
from ..fhirclient.client import FhirClient
from ..instruments.catalog import Catalog
from ..server.signal_sync import run_signals
from ..server.state import InboxItem, ServerPair, StateStore, patient_keys
from ..server.sync import SyncOptions, SyncReport, SyncSession
from .hints import Hint
from .metrics import ServeMetrics
from .settings import ServeSettings

__all__ = ["Worker"]

logger = logging.getLogger("alliance_fhir.serve")
_PROBE_SECONDS = 10.0
_COUNT_SECONDS = 5.0  # outstanding failures are counted from the ledger at most this often
_SIGNALS_MARGIN_SECONDS = 3.0  # the signals thread takes no new patient this close to the shutdown deadline


class Worker:
    """The single writer of ``serve`` (thread-safe entry points: ``record``, ``request_sync``, ``health``)."""

    def __init__(
        self,
        client: FhirClient,
        catalog: Catalog,
        store: StateStore,
        settings: ServeSettings,
        *,
        options: SyncOptions | None = None,
        prepare: Callable[[], None] | None = None,
        results: FhirClient | None = None,
    ) -> None:
        self.client, self.catalog, self.store, self.settings = client, catalog, store, settings
        # the results store (Observations, DetectedIssues, Tasks); the source itself when None
        self.results = client if results is None else results
        self.options = options or SyncOptions()
        self.server = client.base_url  # the source: notifications name its responses
        self.key = ServerPair(client.base_url, self.results.base_url)  # what the inbox and ledger are keyed by
        # the catch-up syncs and the rounds share what was learnt of the server (write mode, our Questionnaires)
        self._session = SyncSession(client, catalog, store, self.options, results=self.results)
        # what must succeed once before the service is ready (the R4 check; serve adds its Subscription)
        self._prepare = prepare or self._check_r4
        self._prepared = threading.Event()
        self._start_error: str | None = None
        self._outstanding: tuple[float, int | None] = (0.0, None)
        self.metrics = ServeMetrics(lambda: float(self.store.inbox_depth(self.key)), self._outstanding_failures)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._signals_stop_by: float | None = None  # set by stop(): when the signals thread takes no more patients
        self._lock = threading.Lock()
        self._sync_reason: str | None = "start"
        self._next_safety_net = time.monotonic() + settings.safety_net_minutes * 60
        self._thread: threading.Thread | None = None
        self._last_progress = time.monotonic()
        self._last_failure: float | None = None
        self._probe: tuple[float, bool] = (0.0, False)
        self._results_probe: tuple[float, bool] = (0.0, False)
        self.last_sync: dict[str, Any] | None = None
        self._topic_events: dict[str, int] = {}
        self._signals_pending: set[str] = set()  # patients whose scores changed since their signals ran
        self._signals_wake = threading.Event()
        self._signals_thread: threading.Thread | None = None
        self._sync_wake = threading.Event()
        self._sync_thread: threading.Thread | None = None
        self._first_drain = threading.Event()  # the inbox as found at start has been drained

    # ------------------------------------------------------------ called from request threads

    def record(self, hints: Iterable[Hint], channel: str) -> int:
        """Record hints durably (before the notification is acknowledged) and wake the worker."""
        rows = [(h.response_id, h.version_id) for h in hints]
        self.store.inbox_add(self.key, rows)
        self.metrics.received.labels(channel).inc()
        self._wake.set()
        return len(rows)

    def request_sync(self, reason: str) -> None:
        """Ask for an incremental sync soon (several requests before it runs make one sync)."""
        with self._lock:
            self._sync_reason = self._sync_reason or reason
        self._sync_wake.set()

    def topic_events(self, subscription: str, events_since_start: int | None, hints: int) -> None:
        """Track a Backport Subscription's event counter; a jump means HAPI dropped notifications."""
        if events_since_start is None:
            return
        with self._lock:
            previous = self._topic_events.get(subscription)
            self._topic_events[subscription] = max(events_since_start, previous or 0)
        if previous is not None and events_since_start > previous + max(hints, 1):
            logger.warning(
                "topic notifications were missed (event %d after %d); running a catch-up sync",
                events_since_start,
                previous,
            )
            self.request_sync("missed-events")

    def liveness(self) -> dict[str, Any]:
        """livez: the worker's threads run. Never asks the FHIR server: an outage is not a reason to restart us."""
        alive = self._alive()
        return {"status": "ok" if alive else "unavailable", "worker_running": alive}

    def health(self) -> dict[str, Any]:
        """readyz (and healthz): started against the server, the server answers, the worker runs, the inbox drains.

        Outstanding failures (responses that could not be scored) are counted here but do not
        make the service unready: a form that cannot be scored is not an outage, and a 503 would
        have an orchestrator or load balancer route notifications away from the one service
        that records them. ``/metrics`` (``alliance_fhir_outstanding_failures``) is what to alert on.
        """
        depth = self.store.inbox_depth(self.key)
        alive = self._alive()
        stalled = depth > 0 and time.monotonic() - self._last_progress > self.settings.stall_seconds
        reachable = self._reachable()
        store_reachable = self._results_reachable() if self.key.split else reachable
        started = self._prepared.is_set()
        both = {"results_store_reachable": store_reachable} if self.key.split else {}
        return {
            "status": "ok" if started and reachable and store_reachable and alive and not stalled else "unavailable",
            "started": started,
            "start_error": None if started else self._start_error,
            "server_reachable": reachable,
            **both,
            "worker_running": alive,
            "inbox_depth": depth,
            "inbox_draining": not stalled,
            "signals_pending": len(self._signals_pending),
            "outstanding_failures": self._outstanding_count(),
            "last_sync": self.last_sync,
        }

    def _alive(self) -> bool:
        return all(t is not None and t.is_alive() for t in self._threads())

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        threads = [
            threading.Thread(target=target, name=f"serve-{name}", daemon=True)
            for target, name in ((self._loop, "worker"), (self._sync_loop, "sync"), (self._signals_loop, "signals"))
        ]
        self._thread, self._sync_thread, self._signals_thread = threads
        for thread in threads:
            thread.start()

    def _threads(self) -> tuple[threading.Thread | None, ...]:
        return self._thread, self._sync_thread, self._signals_thread

    def stop(self, timeout: float) -> bool:
        """Finish the round in progress and the signals it queued (bounded by ``timeout``); True when stopped.

        A catch-up sync in progress stops before its next page (its writes in flight settle) and
        leaves the checkpoint where it was, so the next one reads what it did not.
        """
        self._stop.set()
        self._wake.set()
        self._sync_wake.set()
        self._first_drain.set()
        deadline = time.monotonic() + timeout
        # the signals thread stops taking patients a little before the deadline, so it is done by then
        self._signals_stop_by = deadline - min(_SIGNALS_MARGIN_SECONDS, timeout / 4)
        for thread in self._threads():  # the writes first, then the signals they changed
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
                self._signals_wake.set()
        return not any(t is not None and t.is_alive() for t in self._threads())

    # ------------------------------------------------------------ the worker thread

    def _loop(self) -> None:
        logger.info("worker started; %d notifications waiting in the inbox", self.store.inbox_depth(self.key))
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.drain()
            except AllianceFhirError as exc:  # the state database; anything else is a bug and ends the thread loudly
                logger.error("worker round failed: %s", exc)
                self._stop.wait(5.0)
            finally:
                self._first_drain.set()
            self._wake.wait(self._sleep_seconds())
        logger.info("worker stopped")

    # ------------------------------------------------------------ the catch-up thread

    def _sync_loop(self) -> None:
        """Catch-up and safety-net syncs, beside the drain: hints are not held up by a long sync.

        First the start: the server check and the Subscription (``prepare``), retried with a
        bounded backoff until the server answers, so that an outage at start is handled like one
        later (the service runs and says it is not ready). A sync that fails is retried the same
        way. A sync and a round that meet on one response are serialised by the state's claims
        (the same that keep two replicas apart): one writes it, the other finds it unchanged.
        """
        self._until_prepared()
        self._first_drain.wait()  # on start: the inbox first, then the sync from the checkpoint
        failures = 0
        while not self._stop.is_set():
            self._sync_wake.clear()
            reason = self._due_sync()
            if reason:
                try:
                    ok = self.catch_up(reason) is not None
                except AllianceFhirError as exc:  # the state database
                    logger.error("%s sync failed: %s", reason, exc)
                    ok = False
                failures = 0 if ok else failures + 1
                if not ok:
                    self._stop.wait(self._backoff(failures))
                    self.request_sync(reason)
                continue
            self._sync_wake.wait(max(0.05, min(3600.0, self._next_safety_net - time.monotonic())))

    def _until_prepared(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            try:
                self._prepare()
            except AllianceFhirError as exc:
                self._start_error = str(exc)
                wait = self._backoff(attempt)
                logger.warning("not ready: %s; trying again in %.0f s (attempt %d)", exc, wait, attempt)
                self._stop.wait(wait)
                continue
            self._start_error = None
            self._prepared.set()
            if attempt > 1:
                logger.info("ready after %d attempts: the FHIR server answers", attempt)
            return

    def _backoff(self, failures: int) -> float:
        """1, 2, 4, ... seconds, at most ``start_retry_max_seconds``."""
        return float(min(self.settings.start_retry_max_seconds, 2.0 ** min(failures - 1, 16)))

    def _check_r4(self) -> None:
        self.client.r4_capabilities()

    def _due_sync(self) -> str | None:
        with self._lock:
            reason, self._sync_reason = self._sync_reason, None
        if reason is None and time.monotonic() >= self._next_safety_net:
            reason = "safety-net"
        return reason

    def _sleep_seconds(self) -> float:
        if self.store.inbox_depth(self.key) and self._last_failure is None:
            return 0.0
        return 5.0 if self._last_failure is not None else 3600.0

    def drain(self) -> int:
        """Handle inbox rounds until it is empty, stopping, or the server fails; hints handled."""
        handled = 0
        while not self._stop.is_set():
            items = self.store.inbox_batch(self.key, self.settings.batch_size)
            if not items:
                self._last_progress = time.monotonic()
                break
            if not self._round(items):
                break
            handled += len(items)
        return handled

    def _round(self, items: list[InboxItem]) -> bool:
        ids = list(dict.fromkeys(i.response_id for i in items))
        try:
            params = {"_id": ",".join(ids), "_count": str(len(ids))}
            responses = list(self.client.search("QuestionnaireResponse", params, post=True))
            # a hint is never widened by the server either
            responses = [r for r in responses if r.get("id") in set(ids)]
            report = self._session.process(responses)
        except AllianceFhirError as exc:
            self._failed_round(items, exc)
            return False
        self._last_failure = None
        self._count(report)
        if len(responses) < len(ids):
            logger.info("%d notified responses are no longer on the server (deleted)", len(ids) - len(responses))
        self._queue_signals(report.subjects)
        self.store.inbox_done(self.key, items)
        now = datetime.now(UTC)
        for item in items:
            if item.received_at:
                self.metrics.latency.observe(max(0.0, (now - datetime.fromisoformat(item.received_at)).total_seconds()))
        self._last_progress = time.monotonic()
        return True

    def _failed_round(self, items: list[InboxItem], exc: AllianceFhirError) -> None:
        self._last_failure = time.monotonic()
        logger.warning("could not handle %d notified responses: %s; retrying", len(items), exc)
        given_up = [i for i in items if i.attempts + 1 >= self.settings.max_attempts]
        if given_up:
            logger.warning(
                "%d notifications failed %d times; left to the next sync", len(given_up), self.settings.max_attempts
            )
            self.store.inbox_done(self.key, given_up)
            self.request_sync("given-up")
        self.store.inbox_retry(self.key, [i for i in items if i not in given_up])

    def catch_up(self, reason: str) -> SyncReport | None:
        """One incremental sync from the checkpoint (the same ``run_sync`` as the command); the
        rounds then use what it learnt of the server."""
        self._next_safety_net = time.monotonic() + self.settings.safety_net_minutes * 60
        try:
            report = self._session.sync(should_stop=self._stop.is_set)
        except AllianceFhirError as exc:
            self.metrics.catch_up.labels(reason, "error").inc()
            logger.warning("%s sync failed: %s", reason, exc)
            self._last_failure = time.monotonic()
            return None
        self.metrics.catch_up.labels(reason, "ok" if report.ok else "failures").inc()
        self._count(report)
        self.last_sync = {
            "reason": reason,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "found": report.found,
            "written": report.written,
            "retracted": report.retracted,
            "failed": report.failed,
        }
        logger.info(
            "%s sync: found %d, written %d, retracted %d, unchanged %d, failed %d",
            reason,
            report.found,
            report.written,
            report.retracted,
            report.unchanged,
            report.failed,
        )
        self._queue_signals(report.subjects)
        return report

    def _count(self, report: SyncReport) -> None:
        self.metrics.scored.inc(report.scored)
        self.metrics.written.inc(report.written + report.retracted)
        self.metrics.failed.inc(report.failed)
        for failure in report.failures:  # the resource, the item and the reason: never an answer or patient data
            reason = (
                failure.reason
                if failure.reason.startswith(failure.resource)
                else f"{failure.resource}: {failure.reason}"
            )
            logger.warning(
                "failed: %s (outstanding until fixed or dismissed; `alliance-fhir failures` with this --server and --state lists it)",
                reason,
            )
        if report.failures:
            self._outstanding = (0.0, None)  # counted again at the next look

    # ------------------------------------------------------------ the signals thread

    def _queue_signals(self, subjects: Iterable[str]) -> None:
        subjects = set(subjects)
        if subjects:
            with self._lock:
                self._signals_pending |= subjects
            self._signals_wake.set()

    def _signals_loop(self) -> None:
        """Recompute the signals of each patient whose scores changed, apart from the writes.

        Scores are written first, so a burst is not slowed by the signals; while one recomputation
        runs, further rounds for the same patient only queue it again, so a patient's signals run
        once for many rounds (they re-read the patient's whole series). The thread finishes what is
        queued when the service stops, as far as the shutdown grace allows: what is left then is
        counted in one log line (``alliance-fhir signals`` recomputes it), never waited for beyond it.
        """
        while True:
            self._signals_wake.wait(3600.0)
            self._signals_wake.clear()
            with self._lock:
                subjects, self._signals_pending = sorted(self._signals_pending), set()
            for done, subject in enumerate(subjects):
                if self._signals_stop_by is not None and time.monotonic() > self._signals_stop_by:
                    self._signals_left(len(subjects) - done)
                    return
                self._signals_of(subject)
            if self._stop.is_set() and not (self._thread and self._thread.is_alive()) and not self._signals_pending:
                return

    def _signals_left(self, count: int) -> None:
        with self._lock:
            count += len(self._signals_pending)
        logger.warning(
            "stopping: the signals of %d patient(s) were not recomputed within the shutdown grace; "
            "`alliance-fhir signals --server %s` recomputes them",
            count,
            self.server,
        )

    def _signals_of(self, subject: str) -> None:
        try:
            if self.key.split:  # the sessions' Encounters from the source, when results are kept apart from it
                report, _, _ = run_signals(
                    self.results,
                    self.catalog,
                    patient=subject,
                    tag=self.options.tag,
                    security=self.options.security,
                    source=self.client,
                )
            else:
                report, _, _ = run_signals(
                    self.client, self.catalog, patient=subject, tag=self.options.tag, security=self.options.security
                )
            if report.written or report.withdrawn:  # the CDS hook's stored read of this patient is out of date
                self.store.cds_summaries.changed(self.key, patient_keys([subject], self.key))
        except AllianceFhirError as exc:
            self.metrics.signals.labels("error").inc()
            logger.warning("signals of one patient could not be updated: %s", exc)
            return
        self.metrics.signals.labels("ok").inc()

    def _outstanding_count(self) -> int | None:
        """Outstanding failures in the ledger (None when the state database cannot say)."""
        counted_at, count = self._outstanding
        if count is not None and time.monotonic() - counted_at < _COUNT_SECONDS:
            return count
        try:
            count = len(self.store.outstanding(self.key))
        except AllianceFhirError as exc:
            logger.warning("could not count outstanding failures: %s", exc)
            return None
        self._outstanding = (time.monotonic(), count)
        return count

    def _outstanding_failures(self) -> float:
        count = self._outstanding_count()
        return float("nan") if count is None else float(count)

    def _reachable(self) -> bool:
        """The source answers (checked at most every few seconds)."""
        self._probe = _probed(self.client, self._probe)
        return self._probe[1]

    def _results_reachable(self) -> bool:
        """The results store answers (two servers only; checked at most every few seconds)."""
        self._results_probe = _probed(self.results, self._results_probe)
        return self._results_probe[1]


def _probed(client: FhirClient, last: tuple[float, bool]) -> tuple[float, bool]:
    """(when, whether ``client``'s server answered /metadata): ``last`` while it is fresh, else asked once now."""
    checked_at, ok = last
    if time.monotonic() - checked_at < _PROBE_SECONDS:
        return last
    try:
        # one attempt: healthz answers now, a monitor asks again (retries would hold the request for minutes)
        client.request("GET", "metadata", idempotent=False)
        ok = True
    except AllianceFhirError:
        ok = False
    return (time.monotonic(), ok)
