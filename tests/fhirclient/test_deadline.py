"""The deadline transport (``fhirclient/_deadline.py``), built from public parts of httpx and httpcore.

Pinned directly, so an httpx or httpcore release that changes what it stands on fails here, loudly
and at once, rather than silently dropping the deadline: an answer travels through it as through
httpx's own transport, failures come out as httpx's exceptions, and a server that stalls is cut at
the deadline however long httpx's per-read timeout is.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from alliance_fhir.fhirclient._deadline import deadline, deadline_transport


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        sent = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(201)
        self.send_header("X-Echo", self.headers.get("X-Ask", ""))
        self.send_header("Content-Length", str(len(sent) + 4))
        self.end_headers()
        self.wfile.write(b"got " + sent)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answering() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/fhir?x=1"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture
def silent() -> Iterator[str]:
    """A loopback server that accepts a connection and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    finally:
        listener.close()


def test_an_exchange_goes_through_as_on_httpx_own_transport(answering):
    with httpx.Client(transport=deadline_transport(True, httpx.Limits())) as http:
        answers = [http.post(answering, content=b"body %d" % i, headers={"X-Ask": "hello"}) for i in range(3)]
    assert [(a.status_code, a.headers["x-echo"], a.content) for a in answers] == [
        (201, "hello", b"got body %d" % i) for i in range(3)
    ]


def test_a_silent_server_is_cut_at_the_deadline_not_at_the_per_read_timeout(silent):
    with httpx.Client(timeout=30, transport=deadline_transport(True, httpx.Limits())) as http:
        started = time.monotonic()
        with deadline(0.5), pytest.raises(httpx.ReadTimeout):
            http.get(silent)
        waited = time.monotonic() - started
    assert 0.4 < waited < 5


def test_failures_are_httpx_exceptions_carrying_the_request():
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with (
        httpx.Client(transport=deadline_transport(True, httpx.Limits())) as http,
        pytest.raises(httpx.ConnectError) as info,
    ):
        http.get(f"http://127.0.0.1:{port}/")
    assert info.value.request.url.port == port
