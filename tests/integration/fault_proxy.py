"""A fault-injecting HTTP proxy on 127.0.0.1 in front of a real FHIR server, for integration tests.

Faults are chosen by a deterministic schedule over the request count, so runs are repeatable:
503 and 429 with Retry-After (seconds and HTTP date), connections dropped before forwarding,
connections dropped *after* the server has handled the request (the write happened, the answer
was lost), and slow answers that exceed the client's timeout.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx

SCHEDULE = {3: "503", 5: "drop-before", 8: "429-date", 11: "drop-after", 14: "slow", 17: "503"}


class FaultProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, slow_seconds: float = 3.0, cycle: int = 20) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream.rstrip("/")
        self.upstream_path = urlsplit(self.upstream).path
        self.slow_seconds = slow_seconds
        self.cycle = cycle
        self.count = 0
        self.injected: dict[str, int] = {}
        self.lock = threading.Lock()
        self.http = httpx.Client(timeout=120)
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{self.upstream_path}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self.http.close()

    def next_fault(self) -> str | None:
        with self.lock:
            self.count += 1
            fault = SCHEDULE.get(self.count % self.cycle)
            if fault:
                self.injected[fault] = self.injected.get(fault, 0) + 1
            return fault


class _Handler(BaseHTTPRequestHandler):
    server: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _handle(self) -> None:
        fault = self.server.next_fault()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if fault == "503":
            return self._reply(503, b"", {"Retry-After": "1"})
        if fault == "429-date":
            later = format_datetime(datetime.now(UTC) + timedelta(seconds=1), usegmt=True)
            return self._reply(429, b"", {"Retry-After": later})
        if fault == "drop-before":
            self.close_connection = True
            self.connection.close()
            return None
        upstream = self.server.upstream.removesuffix(self.server.upstream_path) + self.path
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
        headers["Host"] = self.headers["Host"]
        response = self.server.http.request(self.command, upstream, content=body, headers=headers)
        if fault == "drop-after":
            self.close_connection = True
            self.connection.close()
            return None
        if fault == "slow":
            time.sleep(self.server.slow_seconds)
        passthrough = {k: v for k, v in response.headers.items() if k.lower() in ("content-type", "location", "etag", "last-modified")}
        return self._reply(response.status_code, response.content, passthrough)

    def _reply(self, status: int, content: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_PUT = do_POST = do_DELETE = _handle  # noqa: N815
