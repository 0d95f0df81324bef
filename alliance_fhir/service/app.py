"""The ASGI app of ``serve`` (Starlette): notification endpoints, ``/livez``, ``/readyz``, ``/metrics``.

Endpoints (the hook paths also answer without the ``/hook`` prefix, for a Subscription whose
endpoint was given as the bare service URL):

- ``PUT /hook/QuestionnaireResponse/{id}``: a classic R4 rest-hook with payload (HAPI sends the
  whole resource; only the id and ``meta.versionId`` are taken);
- ``DELETE /hook/QuestionnaireResponse/{id}``: a delete notification (re-checked like any hint);
- ``POST /hook``: an empty rest-hook without payload (asks for a catch-up sync), or a Backport
  topic notification Bundle (answered with a Bundle: HAPI re-sends on an empty answer), led by
  a ``Parameters`` (R4 Backport, HAPI) or a ``SubscriptionStatus`` (athenahealth's id-only events);
- ``GET /livez``: liveness, 200 while the worker's threads run (never asks the FHIR server);
- ``GET /readyz`` (and ``GET /healthz``, its older name): readiness, 200 with JSON when the start
  (R4 check, Subscription) is done, the FHIR server answers and the inbox drains, else 503;
- ``GET /metrics``: Prometheus text.

Every hook request must carry the webhook secret (``Authorization: Bearer ...``; 401 otherwise,
checked before any of the body is read, whatever its ``Content-Length``). With an event signing
key (:mod:`.signing`) it must also be signed: the signature header's form is checked before the
body is read, its HMAC over the raw body before the body is parsed (401, one log line); a signed
Bundle must be recent (``Bundle.timestamp``) and one accepted before is answered but not queued
again; the secret is then asked for only when one was configured. Then the body is read
by :mod:`.body` (413 over the cap, 400 when it is not JSON or nests too deep) and a notification's
fields by the typed accessor in :mod:`.hints` (400 naming a field of the wrong type): one log
line each, never a traceback. A hint is recorded in the inbox before the 2xx answer (503 if it
cannot be, so the server retries). ``extra_routes`` is where the
CDS Hooks service mounts (same app, same port).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .._ids import FHIR_JSON
from ..errors import AllianceFhirError
from .body import RequestRefused, parse_json, read_body
from .hints import MalformedNotification, TopicNotification, hint_from_put, topic_notification
from .metrics import CONTENT_TYPE_LATEST
from .settings import authorised
from .signing import (
    FUTURE_SKEW,
    EventSigning,
    SignatureRefused,
    freshness_problem,
    parse_signature_header,
    verify_signature,
)
from .worker import Worker

__all__ = ["build_app"]

logger = logging.getLogger("alliance_fhir.serve")
# What a Backport receiver answers (HAPI 8.8 re-delivers every 1-2 s when the answer is no Bundle).
_TOPIC_ACK = {"resourceType": "Bundle", "type": "transaction-response"}


def build_app(
    worker: Worker,
    secret: SecretStr | None,
    *,
    max_body_bytes: int,
    signing: EventSigning | None = None,
    max_events: int = 1000,
    extra_routes: Sequence[BaseRoute] = (),
    on_startup: Callable[[], None] | None = None,
    on_shutdown: Callable[[], None] | None = None,
) -> Starlette:
    """The service app; ``on_startup``/``on_shutdown`` run in its lifespan (the worker's start and stop).

    ``secret``: the webhook secret every hook request must carry, or None when ``signing`` (a
    key the notifications are signed with) is the only proof asked for. ``max_events``: a
    notification naming more events is refused whole (413).
    """
    if secret is None and signing is None:
        raise ValueError("the hook needs a webhook secret or an event signing key")
    metrics = worker.metrics

    def refuse(reason: str, status: int, detail: str) -> Response:
        metrics.refused.labels(reason).inc()
        return JSONResponse({"error": detail}, status_code=status)

    def refused(exc: RequestRefused) -> Response:
        logger.warning("refused a notification (%d): %s", exc.status, exc)
        return refuse(exc.label, exc.status, str(exc))

    async def record(hints: list[Any], channel: str) -> Response | None:
        try:
            await run_in_threadpool(worker.record, hints, channel)
        except AllianceFhirError as exc:
            logger.error("could not record a notification: %s", exc)
            return refuse("unrecorded", 503, "notification not recorded; retry")
        return None

    async def authenticated_body(request: Request) -> bytes:
        """The body of a hook request whose secret (when one is required) and signature (when a key is set) hold.

        The secret and the signature header's form are checked before a byte of the body is
        read; the HMAC is computed over the raw bytes read (bounded by ``max_body_bytes``) and
        compared in constant time, before anything parses them.

        Raises:
            RequestRefused: 401 (secret, signature), 413 (size), 400 (the client went away).
        """
        if secret is not None and not authorised(request.headers.get("authorization"), secret):
            raise RequestRefused(401, "unauthorised", "missing or wrong webhook secret")
        if signing is None:
            return await read_body(request, max_body_bytes)
        try:
            claimed = parse_signature_header(request.headers.get(signing.header), signing)
            body = await read_body(request, max_body_bytes)
            verify_signature(body, claimed, signing)
        except SignatureRefused as exc:
            raise RequestRefused(401, "bad_signature", str(exc)) from None
        request.state.signature = f"{signing.method}={claimed.hex()}"
        return body

    def denied(exc: RequestRefused) -> Response:
        """A refusal: one log line, except a wrong webhook secret (quiet, as before: it can be anyone's noise)."""
        if exc.label == "unauthorised":
            return refuse(exc.label, exc.status, str(exc))
        return refused(exc)

    async def resource_hook(request: Request) -> Response:
        resource_type, resource_id = request.path_params["resource_type"], request.path_params["resource_id"]
        try:
            body = await authenticated_body(request)
            payload = parse_json(body) if request.method == "PUT" and body.strip() else None
        except RequestRefused as exc:
            return denied(exc)
        if resource_type != "QuestionnaireResponse":
            return refuse("not_ours", 400, "only QuestionnaireResponse notifications are accepted")
        hint = hint_from_put(resource_id, payload)
        if hint is None:
            return refuse("not_ours", 400, "not a FHIR id")
        return await record([hint], "rest-hook") or Response(status_code=200)

    async def post_hook(request: Request) -> Response:
        try:
            body = await authenticated_body(request)
            if not body.strip():  # rest-hook without payload: "something changed", no id
                await run_in_threadpool(worker.request_sync, "empty-notification")
                metrics.received.labels("rest-hook-empty").inc()
                return Response(status_code=200)
            parsed = parse_json(body)
            notification = _notification(parsed, worker.server)
            if notification.events > max_events:
                raise RequestRefused(
                    413, "too_many_events", f"the notification names {notification.events} events; at most {max_events}"
                )
            keep_until = _fresh_until(parsed, signing)
        except RequestRefused as exc:
            return denied(exc)
        _log_parts(notification, worker.server)
        signature: str | None = getattr(request.state, "signature", None)
        if signature is not None and await run_in_threadpool(worker.store.signed_event_seen, signature):
            metrics.received.labels(
                "signed-duplicate"
            ).inc()  # accepted before (and queued then): a replay or a re-send
            return JSONResponse(_TOPIC_ACK, media_type=FHIR_JSON)
        if notification.kind == "event-notification" or notification.hints:
            failed = await record(notification.hints, "signed" if signing is not None else "topic")
            if failed is not None:
                return failed
            await run_in_threadpool(
                worker.topic_events, notification.subscription, notification.events_since_start, len(notification.hints)
            )
        else:  # handshake, heartbeat: nothing to do but answer
            metrics.received.labels("topic-" + (notification.kind or "unknown")).inc()
        if signature is not None and keep_until is not None:  # only once recorded: a re-send after a 503 is queued
            await run_in_threadpool(worker.store.signed_event_accepted, signature, keep_until)
        return JSONResponse(_TOPIC_ACK, media_type=FHIR_JSON)

    def livez(request: Request) -> Response:
        status = worker.liveness()
        return JSONResponse(status, status_code=200 if status["status"] == "ok" else 503)

    def readyz(request: Request) -> Response:
        status = worker.health()
        return JSONResponse(status, status_code=200 if status["status"] == "ok" else 503)

    def client_gone(request: Request, exc: Exception) -> Response:
        # any route (the CDS hook included) whose client went away mid-body, or was cut off by the body deadline
        logger.info(
            "%s %s: the client went away before its request body was complete", request.method, request.url.path
        )
        return Response(status_code=400)

    def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if on_startup is not None:
            await run_in_threadpool(on_startup)
        try:
            yield
        finally:
            if on_shutdown is not None:
                await run_in_threadpool(on_shutdown)

    hook_routes: list[BaseRoute] = []
    for prefix in ("/hook", ""):
        hook_routes.append(
            Route(
                f"{prefix}/{{resource_type}}/{{resource_id}}",
                resource_hook,
                methods=["PUT", "DELETE"],
            )
        )
        hook_routes.append(Route(prefix or "/", post_hook, methods=["POST"]))  # the size: read_body, after the secret
    routes: list[BaseRoute] = [
        Route("/livez", livez, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/healthz", readyz, methods=["GET"]),  # the name it had before /livez and /readyz: readiness
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        *extra_routes,
        *hook_routes,
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={ClientDisconnect: client_gone})


def _fresh_until(body: object, signing: EventSigning | None) -> datetime | None:
    """Until when a signed notification's signature is kept against replays; None when nothing is signed.

    Raises:
        RequestRefused: 401 when its ``Bundle.timestamp`` is missing, too old or in the future.
    """
    if signing is None:
        return None
    timestamp = body.get("timestamp") if isinstance(body, dict) else None
    problem = freshness_problem(timestamp, datetime.now(UTC), signing.max_age)
    if problem is not None:
        raise RequestRefused(401, "stale", problem)
    return datetime.now(UTC) + signing.max_age + FUTURE_SKEW  # by then a replay is refused as too old anyway


def _log_parts(notification: TopicNotification, server: str) -> None:
    """What of a notification is not acted on: one line per malformed event, a debug line for other resources."""
    for problem in notification.skipped:
        logger.warning("skipped one event of a notification: %s", problem)
    if notification.ignored:
        logger.debug(
            "a notification named %d focus resources that are not QuestionnaireResponses (%s); ignored",
            len(notification.ignored),
            ", ".join(sorted(set(notification.ignored))),
        )
    if notification.rejected:
        logger.warning(
            "a topic notification named %d resources that are not QuestionnaireResponses of %s; ignored",
            notification.rejected,
            server,
        )


def _notification(body: object, server: str) -> TopicNotification:
    """The Backport notification in ``body``; a 400 naming what is wrong otherwise."""
    try:
        notification = topic_notification(body, server)
    except MalformedNotification as exc:
        raise RequestRefused(400, "bad_request", f"a malformed topic notification: {exc}") from None
    if notification is None:
        raise RequestRefused(400, "bad_request", "not a subscription notification Bundle")
    return notification
