"""How serve stops: a stop signal is a graceful, clean stop, and the signal is not raised again.

uvicorn re-raises the signal it stopped on once its shutdown is done; serve's ``_Server`` captures
the signals itself through ``capture_signals``, the public method uvicorn's ``serve`` calls around
serving. Run for real (on a loopback port, in the main thread where signals are handled), so a
uvicorn release that stops calling it fails here: the re-raised Ctrl-C would interrupt the test.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from alliance_fhir.service.run import _Server, uvicorn_config
from alliance_fhir.service.settings import ServeSettings


def lifespan_app(started: threading.Event) -> Any:
    """An ASGI app with nothing but a lifespan, which says when the server has started."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
                started.set()
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    return app


def test_a_stop_signal_stops_the_server_gracefully_without_raising_the_signal_again():
    started = threading.Event()
    server = _Server(uvicorn_config(lifespan_app(started), ServeSettings(), host="127.0.0.1", port=0))
    before = signal.getsignal(signal.SIGINT)

    def interrupt_once_started() -> None:
        if started.wait(30):
            os.kill(os.getpid(), signal.SIGINT)

    sender = threading.Thread(target=interrupt_once_started, daemon=True)
    sender.start()
    server.run()  # returns (no KeyboardInterrupt) once the signal stopped it
    sender.join(timeout=30)
    assert started.is_set() and server.started and server.should_exit and not server.force_exit
    assert signal.getsignal(signal.SIGINT) is before  # the previous handler is back


def test_signals_are_left_alone_outside_the_main_thread():
    server = _Server(uvicorn_config(lifespan_app(threading.Event()), ServeSettings(), host="127.0.0.1", port=0))
    seen: list[object] = []

    def capture() -> None:
        with server.capture_signals():
            seen.append(signal.getsignal(signal.SIGTERM))

    worker = threading.Thread(target=capture)
    worker.start()
    worker.join(timeout=30)
    assert seen == [signal.getsignal(signal.SIGTERM)]
