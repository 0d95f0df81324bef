"""Run the service under uvicorn: bounded connections, keep-alive, request head and body; graceful SIGTERM.

The HTTP protocol is uvicorn's h11 one with a deadline on each request's head and body
(:mod:`.deadlines`): a connection that never completes its request is closed, and does not hold
one of the ``limit_concurrency`` slots meanwhile.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections and lets in-flight requests finish
(at most ``shutdown_seconds``); the app's lifespan then stops the worker, which completes the
round of writes it is in (bounded by the same grace). Hints not yet handled stay in the inbox
for the next start.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from pydantic import SecretStr
from starlette.routing import BaseRoute

from .deadlines import deadline_protocol
from .settings import ServeSettings
from .signing import EventSigning
from .worker import Worker

__all__ = ["run_service", "uvicorn_config"]

logger = logging.getLogger("alliance_fhir.serve")
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Server(uvicorn.Server):
    """uvicorn re-raises the stop signal after its graceful shutdown (so the process dies of it);
    for us SIGTERM is the ordinary way to stop, and a clean stop exits 0.

    So the signals are captured here, with uvicorn's own ``handle_exit`` (a graceful stop, a
    second Ctrl-C forcing it) and the previous handlers put back afterwards, but nothing raised
    again. ``capture_signals`` is the public method ``serve`` calls around serving;
    tests/service/test_run.py pins that it still does.
    """

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # only the main thread may handle signals: the caller's handlers stay
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run_service(
    worker: Worker,
    secret: SecretStr | None,
    settings: ServeSettings,
    *,
    host: str,
    port: int,
    extra_routes: tuple[BaseRoute, ...] = (),
    signing: EventSigning | None = None,
) -> bool:
    """Serve until SIGTERM/SIGINT; False when the server could not start (port taken, startup failed)."""
    from .app import build_app  # the ASGI app; imported here so that library users of Worker need no web stack

    def stop_worker() -> None:
        if not worker.stop(settings.shutdown_seconds):
            logger.warning(
                "the worker did not finish within %.0f s; unhandled notifications stay in the inbox",
                settings.shutdown_seconds,
            )

    app = build_app(
        worker,
        secret,
        max_body_bytes=settings.max_body_bytes,
        signing=signing,
        max_events=settings.max_events_per_notification,
        extra_routes=extra_routes,
        on_startup=worker.start,
        on_shutdown=stop_worker,
    )
    server = _Server(uvicorn_config(app, settings, host=host, port=port))
    server.run()
    return bool(server.started)


def uvicorn_config(app: Any, settings: ServeSettings, *, host: str, port: int) -> uvicorn.Config:
    """How uvicorn serves the app: every connection, request head and body bounded by ``settings``."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        http=deadline_protocol(settings.header_timeout_seconds, settings.body_timeout_seconds),
        log_config=None,
        access_log=False,
        server_header=False,
        limit_concurrency=settings.limit_concurrency,
        timeout_keep_alive=int(max(1, settings.keep_alive_seconds)),
        timeout_graceful_shutdown=int(max(1, settings.shutdown_seconds)),
    )
