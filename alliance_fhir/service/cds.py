"""The CDS Hooks 2.0 ``patient-view`` service on ``serve``'s app: discovery, the hook, the report link.

Endpoints:

- ``GET /cds-services``: discovery (one service, :data:`SERVICE_ID`). Open: it names no patient.
- ``POST /cds-services/{id}``: the hook. The JWT is verified first (``cds_auth``; 401 with no
  detail on any failure), then the request is checked (``hook``, ``context.patientId``,
  ``context.userId``). Cards come from the prefetch when the client sent it complete (no FHIR
  round trip), else from our own read of the configured FHIR server with our own credentials
  (the EHR's ``fhirAuthorization`` token is never used or logged). The request's ``fhirServer``
  must be that server: a patient id means nothing on another server, and a card linking to our
  report of "Patient/123" on the wrong server would show another person's scores. Otherwise the
  answer is 412 (CDS Hooks 2.0, "HTTP Status Codes": the service cannot get the FHIR data it
  needs), not an empty card list that would read as "nothing to report"; a log line says why.
- The whole hook (the JWT check with any JWKS fetch, then every FHIR read) answers within
  ``[cds] hook_deadline_seconds`` (3 s by default; EHRs give up after about 5 s, see
  ``docs/cds-hooks.md``): past it, 412 (the data could not be read in time) or 503 (the request
  could not be checked in time), never a late answer nobody waits for any more.
- Malformed requests (a ``context`` that is not an object, a ``userId`` that is not a FHIR
  reference, a prefetch of the wrong shape) are 400 with one line; a prefetch that cannot be
  used is not an error: the server is read instead.
- ``GET /cds-report?token=...``: the patient's report (HTML), the target of each card's link.

Who may see: a ``userId`` of ``Patient/...`` or ``RelatedPerson/...`` gets ``cards: []`` before
any data is read. Alliance ratings are given on the understanding that the therapist, not the
client, reads them (a client who knows they are shown back may rate higher), so the service
never shows them in a patient-facing or proxy session.

The report link: a browser that follows a card's link carries no CDS JWT, so the link itself
carries a short-lived token scoped to one patient and to the report (:mod:`.report_links`). It is
a bearer credential for that one report: it is never logged, the page is sent ``no-store`` and
``no-referrer``, and an expired or altered link gets 401 ("open the chart again").
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.to_thread
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .._ids import IDENTIFIER_SYSTEM, SIGNAL_IDENTIFIER_SYSTEM
from .._refs import References, parse_reference, valid_id
from ..errors import AllianceFhirError, CdsAuthError
from ..fhirclient.client import FhirClient
from ..instruments.catalog import Catalog
from ..server.signal_sync import references_between
from ..server.state import StateStore
from ..signals.cards import alliance_cards
from ..signals.names import Names
from ..signals.prompts import PromptSet, load_prompts
from ..signals.report import render_report
from ..signals.rules import detect_signals
from ..signals.trajectory import Trajectories, build_trajectories, context_from_encounters, unbundle
from .body import RequestRefused, read_json
from .cds_auth import CdsSettings, TokenVerifier
from .cds_read import PatientReader, with_joint_sessions
from .metrics import ServeMetrics
from .report_links import ReportLinks

__all__ = [
    "HIDDEN_FROM",
    "SERVICE_ID",
    "CdsService",
    "CannotServe",
    "cds_routes",
    "discovery_document",
]

logger = logging.getLogger("alliance_fhir.cds")
SERVICE_ID = "alliance-patient-view"
HIDDEN_FROM = ("Patient", "RelatedPerson")
"""User types that never get alliance cards (the client and the client's proxies)."""
_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}
_REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'"  # the page's charts are inline SVG: no images
# /metrics' label of the hook's latency by where the scores came from (a read of either server: fhir-server)
_LATENCY_SOURCE = {"prefetch": "prefetch", "stored read": "stored-read"}


def discovery_document() -> dict[str, Any]:
    """The discovery response: our one ``patient-view`` service and what it wants prefetched."""
    patient = "{{context.patientId}}"
    return {
        "services": [
            {
                "hook": "patient-view",
                "id": SERVICE_ID,
                "title": "Therapeutic alliance signals",
                "description": (
                    "Shows the open alliance signals of a psychotherapy client (rupture, low alliance, early "
                    "warning, split alliance, client-therapist gap) computed from the client's alliance "
                    "measure scores, with a link to the client's alliance report."
                ),
                "prefetch": {
                    "scores": (
                        f"Observation?subject=Patient/{patient}&identifier={IDENTIFIER_SYSTEM}|"
                        "&_include=Observation:encounter&_count=200"
                    ),
                    "issues": f"DetectedIssue?patient=Patient/{patient}&identifier={SIGNAL_IDENTIFIER_SYSTEM}|&_count=100",
                    "patient": f"Patient/{patient}",
                    "user": "{{context.userId}}",
                },
                "usageRequirements": (
                    "For clinicians only: a user of type Patient or RelatedPerson gets no cards. The CDS client must be "
                    "registered with the service (issuer and JWKS) and call it for the FHIR server the service scores."
                ),
            }
        ]
    }


class CannotServe(Exception):
    """A well-formed request this service cannot answer (CDS Hooks: 412); the message is safe to return."""


class _Late(Exception):
    """The hook's deadline passed while the FHIR server was being read."""


@dataclass
class CdsService:
    """What the hook needs: the FHIR servers, the catalog, the verifier and the link signer.

    ``client`` is the source, the EHR that calls the hook (its ``fhirServer``; the people's names
    are read there); ``results`` the results store, where the scores and DetectedIssues are read
    (the source itself when None: the EHR's prefetch can carry only what the EHR holds). Without a
    prefetch, the hook and the report read through ``reader`` (the state's stored reads, else both
    servers: :mod:`.cds_read`; None: every read goes to the servers).
    """

    client: FhirClient
    catalog: Catalog
    verifier: TokenVerifier
    links: ReportLinks
    public_url: str
    metrics: ServeMetrics | None = None
    deadline_seconds: float = 3.0
    on_track_cards: bool = True
    prompts: PromptSet | None = None
    results: FhirClient | None = None
    reader: PatientReader | None = None

    @property
    def store(self) -> FhirClient:
        """Where scores and DetectedIssues are read: the results store, else the source."""
        return self.client if self.results is None else self.results

    @property
    def references(self) -> References:
        """How the store's results name the EHR's resources: the hook's ``Patient/<id>`` is found absolute
        on the EHR in a results store beside it, relative on one server (and in older results)."""
        return references_between(self.store, self.client)

    @classmethod
    def build(
        cls,
        client: FhirClient,
        catalog: Catalog,
        store: StateStore,
        settings: CdsSettings,
        public_url: str,
        metrics: ServeMetrics | None = None,
        results: FhirClient | None = None,
    ) -> CdsService:
        links = ReportLinks.from_store(store, public_url, settings.report_link_minutes)
        verifier = TokenVerifier(settings, store)
        return cls(
            client,
            catalog,
            verifier,
            links,
            public_url.rstrip("/"),
            metrics,
            settings.hook_deadline_seconds,
            settings.on_track_cards,
            _prompt_set(settings),
            results,
            PatientReader(client, catalog, store.cds_summaries, settings.stored_read_max_age_seconds, results),
        )

    def count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.cds_calls.labels(outcome).inc()

    def audience(self, service_id: str) -> str:
        """The ``aud`` a token must carry: the URL of the endpoint called."""
        return f"{self.public_url}/cds-services/{service_id}"

    def answer(self, request: Any, *, deadline: float | None = None) -> dict[str, Any]:
        """The hook response for an authorised request body: ``{"cards": [...]}``.

        ``deadline`` (``time.monotonic()``): past it, the answer is not built any more (the
        caller has already answered the EHR).

        Raises:
            ValueError: not a patient-view request (the message is safe to return).
            CannotServe: the request names another FHIR server than ours, or none.
            AllianceFhirError: the FHIR server could not be read.
        """
        patient_id, user_type = _checked_context(request)
        if user_type in HIDDEN_FROM:
            logger.info("patient-view by a %s user: no alliance cards", user_type)
            self.count("hidden_user")
            return {"cards": []}
        server = request.get("fhirServer")
        if not isinstance(server, str) or server.rstrip("/") != self.client.base_url.rstrip("/"):
            shown = "none named" if not isinstance(server, str) else "host " + _host(server)
            logger.warning("patient-view for another FHIR server than the one configured (%s): 412", shown)
            self.count("other_server")
            raise CannotServe("fhirServer is not the FHIR server this service scores")
        patient = f"Patient/{patient_id}"
        started = time.perf_counter()
        references = self.references
        prefetch = request.get("prefetch")
        from_prefetch = _prefetched(prefetch, patient, references)
        if from_prefetch is not None:
            observations, encounters, issues = from_prefetch
            _on_time(deadline)
            observations, encounters = with_joint_sessions(
                self.client, self.store, observations, encounters, issues, patient
            )
            _on_time(deadline)
            trajectories = build_trajectories(
                observations, self.catalog, context_from_encounters(encounters), references
            )
            names = self._prefetched_names(patient, prefetch)
            where = "prefetch"
        else:
            read, where = self._reader().read(patient)
            _on_time(deadline)
            trajectories, names = read.trajectories(self.catalog, references), Names(read.names)
        _on_time(deadline)
        cards = self.cards(trajectories, patient, str(request.get("hookInstance", "")), names)
        seconds = time.perf_counter() - started
        logger.info("patient-view: %d card(s) from the %s in %.0f ms", len(cards), where, 1000 * seconds)
        if self.metrics is not None:
            self.metrics.cds_latency.labels(_LATENCY_SOURCE.get(where, "fhir-server")).observe(seconds)
        self.count("cards" if cards else "no_cards")
        return {"cards": cards}

    def cards(self, trajectories: Trajectories, patient: str, hook_instance: str, names: Names) -> list[dict[str, Any]]:
        signals = detect_signals(trajectories)
        return alliance_cards(
            signals,
            trajectories,
            patient,
            hook_instance=hook_instance,
            report_link=self.links.url,
            names=names,
            prompts=self.prompts,
            on_track=self.on_track_cards,
        )

    def _prefetched_names(self, patient: str, prefetch: dict[str, Any]) -> Names:
        """The people's names from the prefetch (the client, and the user, who is usually the therapist:
        no extra round trip); a prefetched Patient counts only when it is the patient of the call."""
        people = [r for r in (prefetch.get("patient"), prefetch.get("user")) if isinstance(r, dict)]
        if not _is_patient(people[0] if people else None, patient):
            people = [r for r in people if r.get("resourceType") != "Patient"]
        return Names.from_resources(people)

    def _reader(self) -> PatientReader:
        """The one way the hook and the report read a patient without prefetch (the stored reads, else the servers)."""
        return self.reader or PatientReader(self.client, self.catalog, results=self.results)

    def report(self, token: str, *, as_of: datetime | None = None) -> bytes | None:
        """The HTML report a link token opens; None when the token is not (or no longer) valid.

        The same scores the hook reads, the other members' scores of joint sessions included (so
        the split the card shows is in the report, without the others' names), and the names of
        the client and the therapists. No optional extra: the page draws its own charts.
        ``as_of``: the date the page states (now, unless a test fixes it).

        Raises:
            AllianceFhirError: the FHIR server could not be read.
        """
        patient = self.links.patient(token)
        if patient is None:
            return None
        read, _ = self._reader().read(patient)
        trajectories, names = read.trajectories(self.catalog, self.references), Names(read.names)
        when = as_of or datetime.now(UTC)
        return render_report(
            "html",
            trajectories,
            detect_signals(trajectories),
            subject=patient,
            names=names,
            as_of=when,
            prompts=self.prompts,
        )


def _is_patient(resource: Any, patient: str) -> bool:
    """A prefetched Patient is used only when it is the patient of the call."""
    return isinstance(resource, dict) and f"{resource.get('resourceType')}/{resource.get('id')}" == patient


def _prompt_set(settings: CdsSettings) -> PromptSet:
    """The clinic's prompt set (``[cds] prompts``, already checked when the settings were read), else the shipped one."""
    return load_prompts(settings.prompts)


def _checked_context(request: Any) -> tuple[str, str]:
    """(patientId, the user's resource type) of a patient-view request.

    Raises:
        ValueError: not a patient-view request, or ``patientId``/``userId`` malformed (one line, safe to return).
    """
    context = request.get("context") if isinstance(request, dict) else None
    if not isinstance(request, dict) or request.get("hook") != "patient-view" or not isinstance(context, dict):
        raise ValueError("not a patient-view request")
    patient_id = context.get("patientId")
    if not valid_id(patient_id):
        raise ValueError("context.patientId is missing or not a FHIR id")
    user = parse_reference(context.get("userId"))
    if user is None:
        raise ValueError("context.userId is missing or not a FHIR reference (Type/id)")
    assert isinstance(patient_id, str)  # valid_id said so
    return patient_id, user.type


def _on_time(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise _Late


def cds_routes(service: CdsService, *, max_body_bytes: int) -> list[BaseRoute]:
    """The Starlette routes of the CDS service, to pass as ``build_app(extra_routes=...)``."""

    def discovery(request: Request) -> Response:
        return JSONResponse(discovery_document())

    async def hook(request: Request) -> Response:
        service_id = request.path_params["service_id"]
        if service_id != SERVICE_ID:
            return JSONResponse({"error": "no such CDS service"}, status_code=404)
        phase = ["checking the request"]
        with anyio.move_on_after(service.deadline_seconds):
            return await _hook(request, service_id, phase)
        # the work goes on in its thread until its own bounds end it; nobody waits for it any more
        logger.error(
            "patient-view: no answer within the hook deadline of %g s (still %s)", service.deadline_seconds, phase[0]
        )
        service.count("timeout")
        if phase[0] == "checking the request":
            return JSONResponse({"error": "the request could not be checked in time"}, status_code=503)
        return JSONResponse({"error": "the FHIR server could not be read in time"}, status_code=412)

    async def _hook(request: Request, service_id: str, phase: list[str]) -> Response:
        try:
            await _in_thread(
                service.verifier.verify, request.headers.get("authorization"), service.audience(service_id)
            )
        except CdsAuthError as exc:
            logger.warning("CDS request refused (401): %s", exc)
            service.count("refused")
            return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
        except AllianceFhirError as exc:  # the state database (jti) could not be written
            logger.error("CDS request not checked: %s", exc)
            service.count("error")
            return JSONResponse({"error": "service unavailable"}, status_code=503)
        try:
            body = await read_json(request, max_body_bytes)
        except RequestRefused as exc:
            logger.warning("CDS request refused (%d): %s", exc.status, exc)
            service.count("bad_request")
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        phase[0] = "reading the FHIR server"
        deadline = time.monotonic() + service.deadline_seconds
        try:
            answer = await _in_thread(functools.partial(service.answer, body, deadline=deadline))
        except ValueError as exc:
            logger.warning("CDS request refused (400): %s", exc)
            service.count("bad_request")
            return JSONResponse({"error": str(exc)}, status_code=400)
        except CannotServe as exc:
            return JSONResponse({"error": str(exc)}, status_code=412)
        except _Late:
            return JSONResponse({"error": "the FHIR server could not be read in time"}, status_code=412)
        except AllianceFhirError as exc:
            logger.error("patient-view: could not read the FHIR server: %s", exc)
            service.count("error")
            return JSONResponse({"error": "the FHIR server could not be read"}, status_code=412)
        return JSONResponse(answer)

    async def report(request: Request) -> Response:
        token = request.query_params.get("token", "")
        try:
            page = await run_in_threadpool(service.report, token) if token else None
        except AllianceFhirError as exc:
            logger.error("report link: could not read the FHIR server: %s", exc)
            return _page(503, "The FHIR server could not be read; try again shortly.")
        if page is None:
            logger.warning("report link refused (401): expired, altered or not ours")
            return _page(401, "This link has expired or is not valid. Open the client's chart again for a new link.")
        return HTMLResponse(page, headers={**_NO_STORE, "Content-Security-Policy": _REPORT_CSP})

    return [
        Route("/cds-services", discovery, methods=["GET"]),
        Route("/cds-services/{service_id}", hook, methods=["POST"]),
        Route("/cds-report", report, methods=["GET"]),
    ]


async def _in_thread(call: Callable[..., Any], *args: Any) -> Any:
    """``call`` in a worker thread that the hook's deadline may leave behind (it cannot be interrupted)."""
    return await anyio.to_thread.run_sync(call, *args, abandon_on_cancel=True)


def _prefetched(
    prefetch: Any, patient: str, references: References
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]] | None:
    """(Observations, Encounters, DetectedIssues) of the patient from a complete prefetch, else None.

    Incomplete means: no ``scores`` Bundle (absent or null: the client could not fetch it), or a
    Bundle with a ``next`` link (more pages than the template's page): we then read the server.
    Resources about another patient are dropped (a prefetch is the client's data, not proof).
    """
    if not isinstance(prefetch, dict):
        return None
    scores, issues = prefetch.get("scores"), prefetch.get("issues")
    if not _complete_bundle(scores):
        return None
    observations, encounters = unbundle([scores])
    observations = [o for o in observations if references.local(_subject(o)) == patient]
    issue_list = [r for r in _entries(issues) if r.get("resourceType") == "DetectedIssue"]
    return observations, encounters, issue_list


def _complete_bundle(bundle: Any) -> bool:
    """A Bundle whose ``link`` and ``entry`` are arrays (or absent), without a ``next`` link."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return False
    links, entries = bundle.get("link", []), bundle.get("entry", [])
    if not isinstance(links, list) or not isinstance(entries, list):
        return False
    return not any(isinstance(link, dict) and link.get("relation") == "next" for link in links)


def _subject(resource: dict[str, Any]) -> Any:
    subject = resource.get("subject")
    return subject.get("reference") if isinstance(subject, dict) else None


def _entries(bundle: Any) -> list[dict[str, Any]]:
    if not _complete_bundle(bundle):
        return []
    return [
        e["resource"] for e in bundle.get("entry", []) if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    ]


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or "?"


def _page(status: int, message: str) -> Response:
    html = f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Alliance report</title></head><body><p>{message}</p></body></html>\n'
    return HTMLResponse(html, status_code=status, headers=_NO_STORE)
