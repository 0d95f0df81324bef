"""The ASGI app of ``serve`` (Starlette): notification endpoints, ``/livez``, ``/readyz``, ``/metrics``.

Endpoints (the hook paths also answer without the ``/hook`` prefix, for a Subscription whose
endpoint was given as the bare service URL):

- ``PUT /hook/QuestionnaireResponse/{id}``: a classic R4 rest-hook with payload (HAPI sends the
  whole resource; only the id and ``meta.versionId`` are taken);
- ``DELETE /hook/QuestionnaireResponse/{id}``: a delete notification (re-checked like any hint);
- ``POST /hook``: an empty rest-hook without payload (asks for a catch-up sync), or a Backport
  topic notification Bundle (answered with a Bundle: HAPI re-sends on an empty answer);
- ``GET /livez``: liveness, 200 while the worker's threads run (never asks the FHIR server);
- ``GET /readyz`` (and ``GET /healthz``, its older name): readiness, 200 with JSON when the start
  (R4 check, Subscription) is done, the FHIR server answers and the inbox drains, else 503;
- ``GET /metrics``: Prometheus text.

Every hook request must carry the webhook secret (``Authorization: Bearer ...``; 401 otherwise,
checked before any of the body is read, whatever its ``Content-Length``); then the body is read
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
from .worker import Worker

__all__ = ["build_app"]

logger = logging.getLogger("alliance_fhir.serve")
# What a Backport receiver answers (HAPI 8.8 re-delivers every 1-2 s when the answer is no Bundle).
_TOPIC_ACK = {"resourceType": "Bundle", "type": "transaction-response"}


def build_app(
    worker: Worker,
    secret: SecretStr,
    *,
    max_body_bytes: int,
    extra_routes: Sequence[BaseRoute] = (),
    on_startup: Callable[[], None] | None = None,
    on_shutdown: Callable[[], None] | None = None,
) -> Starlette:
    """The service app; ``on_startup``/``on_shutdown`` run in its lifespan (the worker's start and stop)."""
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

    async def resource_hook(request: Request) -> Response:
        if not authorised(request.headers.get("authorization"), secret):
            return refuse("unauthorised", 401, "missing or wrong webhook secret")
        resource_type, resource_id = request.path_params["resource_type"], request.path_params["resource_id"]
        try:
            body = await read_body(request, max_body_bytes)
            payload = parse_json(body) if request.method == "PUT" and body.strip() else None
        except RequestRefused as exc:
            return refused(exc)
        if resource_type != "QuestionnaireResponse":
            return refuse("not_ours", 400, "only QuestionnaireResponse notifications are accepted")
        hint = hint_from_put(resource_id, payload)
        if hint is None:
            return refuse("not_ours", 400, "not a FHIR id")
        return await record([hint], "rest-hook") or Response(status_code=200)

    async def post_hook(request: Request) -> Response:
        if not authorised(request.headers.get("authorization"), secret):
            return refuse("unauthorised", 401, "missing or wrong webhook secret")
        try:
            body = await read_body(request, max_body_bytes)
            if not body.strip():  # rest-hook without payload: "something changed", no id
                await run_in_threadpool(worker.request_sync, "empty-notification")
                metrics.received.labels("rest-hook-empty").inc()
                return Response(status_code=200)
            notification = _notification(parse_json(body), worker.server)
        except RequestRefused as exc:
            return refused(exc)
        if notification.rejected:
            logger.warning(
                "a topic notification named %d resources that are not QuestionnaireResponses of %s; ignored",
                notification.rejected,
                worker.server,
            )
        if notification.kind == "event-notification" or notification.hints:
            failed = await record(notification.hints, "topic")
            if failed is not None:
                return failed
            await run_in_threadpool(
                worker.topic_events, notification.subscription, notification.events_since_start, len(notification.hints)
            )
        else:  # handshake, heartbeat: nothing to do but answer
            metrics.received.labels("topic-" + (notification.kind or "unknown")).inc()
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


def _notification(body: object, server: str) -> TopicNotification:
    """The Backport notification in ``body``; a 400 naming what is wrong otherwise."""
    try:
        notification = topic_notification(body, server)
    except MalformedNotification as exc:
        raise RequestRefused(400, "bad_request", f"a malformed topic notification: {exc}") from None
    if notification is None:
        raise RequestRefused(400, "bad_request", "not a subscription notification Bundle")
    return notification
