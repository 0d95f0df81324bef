"""The CDS Hooks 2.0 ``patient-view`` service on ``serve``'s app: discovery, the hook, the report link.

Endpoints:

- ``GET /cds-services``: discovery (one service, :data:`SERVICE_ID`). Open: it names no patient.
- ``POST /cds-services/{id}``: the hook. The JWT is verified first (``cds_auth``; 401 with no
  detail on any failure), then the request is checked (``hook``, ``context.patientId``,
  ``context.userId``). Cards come from the prefetch when the client sent it complete (no FHIR
  round trip), else from our own read of the configured FHIR server with our own credentials
  (the EHR's ``fhirAuthorization`` token is never used or logged). The request's ``fhirServer``
  must be that server: a patient id means nothing on another server, and a card linking to our
  report of "Patient/123" on the wrong server would show another person's scores. Otherwise:
  no cards, and a log line saying why.
- ``GET /cds-report?token=...``: the patient's report (HTML), the target of each card's link.

Who may see: a ``userId`` of ``Patient/...`` or ``RelatedPerson/...`` gets ``cards: []`` before
any data is read. Alliance ratings are given on the understanding that the therapist, not the
client, reads them (a client who knows they are shown back may rate higher), so the service
never shows them in a patient-facing or proxy session.

The report link: a browser that follows a card's link carries no CDS JWT, so the link itself
carries a short-lived token scoped to one patient and to the report, valid ``report_link_minutes``
(the patient and the expiry sealed with AES-GCM under a key generated once into the state
database, so the URL is opaque: it does not name the patient even encoded). It is a bearer
credential for that one report: it is never logged, the page is sent ``no-store`` and
``no-referrer``, and an expired or altered link gets 401 ("open the chart again").
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .._ids import CDS_REPORT_LINK_SCOPE, IDENTIFIER_SYSTEM, SIGNAL_IDENTIFIER_SYSTEM
from ..errors import AllianceFhirError, CdsAuthError
from ..instruments.catalog import Catalog
from ..server.client import FhirClient
from ..server.signal_sync import fetch_trajectories
from ..server.state import StateStore
from ..signals.cards import alliance_cards
from ..signals.rules import detect_signals
from ..signals.trajectory import Trajectories, build_trajectories, context_from_encounters, unbundle
from .cds_auth import CdsSettings, TokenVerifier
from .metrics import ServeMetrics

__all__ = ["HIDDEN_FROM", "SERVICE_ID", "CdsService", "ReportLinks", "cds_routes", "discovery_document"]

logger = logging.getLogger("alliance_fhir.cds")
SERVICE_ID = "alliance-patient-view"
HIDDEN_FROM = ("Patient", "RelatedPerson")
"""User types that never get alliance cards (the client and the client's proxies)."""
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_LINK_KEY_SETTING = "cds_report_link_key"
_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}
_REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


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
                },
                "usageRequirements": (
                    "For clinicians only: a user of type Patient or RelatedPerson gets no cards. The CDS client must be "
                    "registered with the service (issuer and JWKS) and call it for the FHIR server the service scores."
                ),
            }
        ]
    }


class ReportLinks:
    """Short-lived links to one patient's report: the patient and expiry sealed with AES-GCM.

    Sealed, not just signed: a signed JWT's payload is readable by anyone who sees the URL (an
    EHR's log, a browser history), and it would name the patient. AES-GCM (from ``cryptography``,
    already installed for PyJWT's RS384/ES384) gives an opaque token that also cannot be altered.
    No server-side state: replicas sharing the state database share the key and so the links.
    """

    def __init__(self, key: str, public_url: str, minutes: int, *, now: Callable[[], float] = time.time) -> None:
        self._cipher = AESGCM(hashlib.sha256(key.encode()).digest())
        self._minutes, self._now = minutes, now
        self._base = public_url.rstrip("/")
        self._aad = f"{CDS_REPORT_LINK_SCOPE}|{self._base}".encode()

    @classmethod
    def from_store(cls, store: StateStore, public_url: str, minutes: int) -> ReportLinks:
        """The key is generated once and kept in the state database (replicas on PostgreSQL share it)."""
        return cls(store.setting_once(_LINK_KEY_SETTING, secrets.token_urlsafe(32)), public_url, minutes)

    def url(self, patient: str) -> str:
        return f"{self._base}/cds-report?token={self.token(patient)}"

    def token(self, patient: str) -> str:
        sealed = json.dumps({"sub": patient, "exp": int(self._now()) + 60 * self._minutes}).encode()
        nonce = secrets.token_bytes(12)
        return base64.urlsafe_b64encode(nonce + self._cipher.encrypt(nonce, sealed, self._aad)).decode().rstrip("=")

    def patient(self, token: str) -> str | None:
        """The patient a link token names, or None when it is expired, altered or not ours."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            claims = json.loads(self._cipher.decrypt(raw[:12], raw[12:], self._aad))
        except (ValueError, InvalidTag):
            return None
        subject, expires = claims.get("sub"), claims.get("exp")
        if not isinstance(expires, int) or expires <= self._now():
            return None
        return subject if isinstance(subject, str) and subject.startswith("Patient/") else None


@dataclass
class CdsService:
    """What the hook needs: the FHIR server we score, the catalog, the verifier and the link signer."""

    client: FhirClient
    catalog: Catalog
    verifier: TokenVerifier
    links: ReportLinks
    public_url: str
    metrics: ServeMetrics | None = None

    @classmethod
    def build(
        cls,
        client: FhirClient,
        catalog: Catalog,
        store: StateStore,
        settings: CdsSettings,
        public_url: str,
        metrics: ServeMetrics | None = None,
    ) -> CdsService:
        links = ReportLinks.from_store(store, public_url, settings.report_link_minutes)
        return cls(client, catalog, TokenVerifier(settings, store), links, public_url.rstrip("/"), metrics)

    def count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.cds_calls.labels(outcome).inc()

    def audience(self, service_id: str) -> str:
        """The ``aud`` a token must carry: the URL of the endpoint called."""
        return f"{self.public_url}/cds-services/{service_id}"

    def answer(self, request: Any) -> dict[str, Any]:
        """The hook response for an authorised request body: ``{"cards": [...]}``.

        Raises:
            ValueError: not a patient-view request (the message is safe to return).
            AllianceFhirError: the FHIR server could not be read.
        """
        context = request.get("context") if isinstance(request, dict) else None
        if not isinstance(request, dict) or request.get("hook") != "patient-view" or not isinstance(context, dict):
            raise ValueError("not a patient-view request")
        patient_id, user = context.get("patientId"), context.get("userId")
        if not isinstance(patient_id, str) or not _FHIR_ID.match(patient_id):
            raise ValueError("context.patientId is missing or not a FHIR id")
        if not isinstance(user, str) or "/" not in user:
            raise ValueError("context.userId is missing or not a reference")
        if user.rstrip("/").split("/")[-2] in HIDDEN_FROM:
            logger.info("patient-view by a %s user: no alliance cards", user.rstrip("/").split("/")[-2])
            self.count("hidden_user")
            return {"cards": []}
        server = request.get("fhirServer")
        if not isinstance(server, str) or server.rstrip("/") != self.client.base_url.rstrip("/"):
            logger.warning(
                "patient-view for another FHIR server than the one configured (%s): no cards",
                "none named" if not isinstance(server, str) else "host " + _host(server),
            )
            self.count("other_server")
            return {"cards": []}
        patient = f"Patient/{patient_id}"
        started = time.perf_counter()
        from_prefetch = _prefetched(request.get("prefetch"), patient)
        if from_prefetch is not None:
            observations, encounters, issues = from_prefetch
            trajectories = build_trajectories(observations, self.catalog, context_from_encounters(encounters))
            where = "prefetch"
        else:
            # the two reads at once: the hook's latency is the slower of them, not their sum
            with ThreadPoolExecutor(max_workers=1) as pool:
                pending = pool.submit(self._issues, patient)
                trajectories = fetch_trajectories(self.client, self.catalog, patient)
                issues = pending.result()
            where = "FHIR server"
        cards = self.cards(trajectories, patient, str(request.get("hookInstance", "")), issues)
        seconds = time.perf_counter() - started
        logger.info("patient-view: %d card(s) from the %s in %.0f ms", len(cards), where, 1000 * seconds)
        if self.metrics is not None:
            self.metrics.cds_latency.labels("prefetch" if from_prefetch is not None else "fhir-server").observe(seconds)
        self.count("cards" if cards else "no_cards")
        return {"cards": cards}

    def cards(
        self, trajectories: Trajectories, patient: str, hook_instance: str, issues: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        signals = detect_signals(trajectories)
        return alliance_cards(
            signals,
            trajectories,
            patient,
            hook_instance=hook_instance,
            report_link=self.links.url,
            issues=issues,
        )

    def report(self, token: str) -> bytes | None:
        """The HTML report a link token opens; None when the token is not (or no longer) valid.

        Raises:
            ModuleNotFoundError: matplotlib (the ``report`` extra) is not installed.
            AllianceFhirError: the FHIR server could not be read.
        """
        patient = self.links.patient(token)
        if patient is None:
            return None
        from ..signals.report import render_report  # matplotlib: only when a report is asked for

        trajectories = fetch_trajectories(self.client, self.catalog, patient)
        return render_report("html", trajectories, detect_signals(trajectories), subject=patient)

    def _issues(self, patient: str) -> list[dict[str, Any]]:
        params = {"patient": patient, "identifier": f"{SIGNAL_IDENTIFIER_SYSTEM}|", "_count": "100"}
        return list(self.client.search("DetectedIssue", params))


def cds_routes(service: CdsService, *, max_body_bytes: int) -> list[BaseRoute]:
    """The Starlette routes of the CDS service, to pass as ``build_app(extra_routes=...)``."""

    def discovery(request: Request) -> Response:
        return JSONResponse(discovery_document())

    async def hook(request: Request) -> Response:
        service_id = request.path_params["service_id"]
        if service_id != SERVICE_ID:
            return JSONResponse({"error": "no such CDS service"}, status_code=404)
        try:
            await run_in_threadpool(
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
            body = await request.json()
        except ValueError:
            service.count("bad_request")
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        try:
            answer = await run_in_threadpool(service.answer, body)
        except ValueError as exc:
            service.count("bad_request")
            return JSONResponse({"error": str(exc)}, status_code=400)
        except AllianceFhirError as exc:
            logger.error("patient-view: could not read the FHIR server: %s", exc)
            service.count("error")
            return JSONResponse({"error": "the FHIR server could not be read"}, status_code=503)
        return JSONResponse(answer)

    async def report(request: Request) -> Response:
        token = request.query_params.get("token", "")
        try:
            page = await run_in_threadpool(service.report, token) if token else None
        except ModuleNotFoundError:
            return _page(501, "Reports need the report extra on the service: pip install 'alliance-fhir[report]'.")
        except AllianceFhirError as exc:
            logger.error("report link: could not read the FHIR server: %s", exc)
            return _page(503, "The FHIR server could not be read; try again shortly.")
        if page is None:
            logger.warning("report link refused (401): expired, altered or not ours")
            return _page(401, "This link has expired or is not valid. Open the client's chart again for a new link.")
        return HTMLResponse(page, headers={**_NO_STORE, "Content-Security-Policy": _REPORT_CSP})

    return [
        Route("/cds-services", discovery, methods=["GET"]),
        Route("/cds-services/{service_id}", hook, methods=["POST"], max_body_size=max_body_bytes),
        Route("/cds-report", report, methods=["GET"]),
    ]


def _prefetched(
    prefetch: Any, patient: str
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
    observations = [o for o in observations if (o.get("subject") or {}).get("reference") == patient]
    issue_list = [r for r in _entries(issues) if r.get("resourceType") == "DetectedIssue"]
    return observations, encounters, issue_list


def _complete_bundle(bundle: Any) -> bool:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return False
    links = bundle.get("link") or []
    return not any(isinstance(link, dict) and link.get("relation") == "next" for link in links)


def _entries(bundle: Any) -> list[dict[str, Any]]:
    if not _complete_bundle(bundle):
        return []
    return [
        e["resource"] for e in bundle.get("entry") or [] if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    ]


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or "?"


def _page(status: int, message: str) -> Response:
    html = f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Alliance report</title></head><body><p>{message}</p></body></html>\n'
    return HTMLResponse(html, status_code=status, headers=_NO_STORE)
