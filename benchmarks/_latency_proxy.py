"""A local HTTP proxy that adds a fixed delay to every request, to stand in for a network round trip.

On loopback a request costs almost nothing beyond the server's own work, so batching and
concurrency barely matter. A real EHR endpoint is tens of milliseconds away; this proxy adds
that delay (once per request, before forwarding) so the benchmark can show what it does to
each client. The Host header is passed through, so HAPI's paging links point back at the proxy.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx

_PASSED_BACK = ("content-type", "location", "etag", "last-modified")


class LatencyProxy(ThreadingHTTPServer):
    """Forward to ``upstream`` after sleeping ``delay_seconds`` per request."""

    daemon_threads = True

    def __init__(self, upstream: str, delay_seconds: float) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream.rstrip("/")
        self.upstream_path = urlsplit(self.upstream).path
        self.delay_seconds = delay_seconds
        self.requests = 0
        self.lock = threading.Lock()
        self.http = httpx.Client(timeout=300, limits=httpx.Limits(max_connections=32))
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{self.upstream_path}"

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self.http.close()


class _Handler(BaseHTTPRequestHandler):
    server: LatencyProxy
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Small separate writes (headers, then body) would otherwise meet Nagle's algorithm and the
        # client's delayed ACK: ~40 ms per request that no real network path adds.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args: object) -> None:
        pass

    def _forward(self) -> None:
        with self.server.lock:
            self.server.requests += 1
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(self.server.delay_seconds)
        target = self.server.upstream.removesuffix(self.server.upstream_path) + self.path
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("content-length", "connection")}
        response = self.server.http.request(self.command, target, content=body, headers=headers)
        self.send_response(response.status_code)
        for key, value in response.headers.items():
            if key.lower() in _PASSED_BACK:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(response.content)))
        self.end_headers()
        self.wfile.write(response.content)

    do_GET = do_PUT = do_POST = do_DELETE = _forward  # noqa: N815
