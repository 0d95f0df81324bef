"""A threaded HTTP proxy on 127.0.0.1 in front of a real FHIR server: the plumbing that the fault
proxy (integration tests) and the latency proxy (benchmarks) share.

A subclass chooses what happens per request by overriding :meth:`ForwardingProxy.handle`; the
default forwards it. The Host header is passed through, so HAPI's paging links point back at the
proxy, and the answer keeps the headers a FHIR client reads.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import urlsplit

import httpx

PASSED_BACK = ("content-type", "location", "etag", "last-modified")


class ForwardingProxy(ThreadingHTTPServer):
    """Serve on an ephemeral loopback port; forward each request to ``upstream``."""

    daemon_threads = True

    def __init__(self, upstream: str, *, timeout: float = 120, max_connections: int = 32) -> None:
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        self.upstream = upstream.rstrip("/")
        self.upstream_path = urlsplit(self.upstream).path
        self.lock = threading.Lock()
        self.http = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=max_connections))
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The proxy's FHIR base URL (same path as the upstream's)."""
        return f"http://127.0.0.1:{self.server_address[1]}{self.upstream_path}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self.http.close()

    def forward(self, request: ProxyHandler, body: bytes) -> httpx.Response:
        """Send the request on to the upstream server and return its answer."""
        target = self.upstream.removesuffix(self.upstream_path) + request.path
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("content-length", "connection")}
        return self.http.request(request.command, target, content=body, headers=headers)

    def handle(self, request: ProxyHandler, body: bytes) -> None:
        """What to do with one request; the default forwards it and relays the answer."""
        request.relay(self.forward(request, body))


class ProxyHandler(BaseHTTPRequestHandler):
    """One connection: reads the body, lets the server decide, writes the answer."""

    server: ForwardingProxy
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Small separate writes (headers, then body) would otherwise meet Nagle's algorithm and the
        # client's delayed ACK: ~40 ms per request that no real network path adds.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args: object) -> None:
        pass

    def reply(self, status: int, content: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def relay(self, response: httpx.Response) -> None:
        self.reply(
            response.status_code,
            response.content,
            {k: v for k, v in response.headers.items() if k.lower() in PASSED_BACK},
        )

    def drop(self) -> None:
        """Close the connection without an answer."""
        self.close_connection = True
        self.connection.close()

    def _dispatch(self) -> None:
        self.server.handle(self, self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    do_GET = do_PUT = do_POST = do_DELETE = _dispatch  # noqa: N815
