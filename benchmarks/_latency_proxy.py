"""A local HTTP proxy that adds a fixed delay to every request, to stand in for a network round trip.

On loopback a request costs almost nothing beyond the server's own work, so batching and
concurrency barely matter. A real EHR endpoint is tens of milliseconds away; this proxy adds
that delay (once per request, before forwarding) so the benchmark can show what it does to
each client. The proxy plumbing is shared with the integration tests' fault proxy.
"""

from __future__ import annotations

import time

from tests.support.proxy import ForwardingProxy, ProxyHandler


class LatencyProxy(ForwardingProxy):
    """Forward to ``upstream`` after sleeping ``delay_seconds`` per request."""

    def __init__(self, upstream: str, delay_seconds: float) -> None:
        super().__init__(upstream, timeout=300)
        self.delay_seconds = delay_seconds
        self.requests = 0

    def handle(self, request: ProxyHandler, body: bytes) -> None:
        with self.lock:
            self.requests += 1
        time.sleep(self.delay_seconds)
        request.relay(self.forward(request, body))
