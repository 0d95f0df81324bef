"""A fault-injecting HTTP proxy on 127.0.0.1 in front of a real FHIR server, for integration tests.

Faults are chosen by a deterministic schedule over the request count, so runs are repeatable:
503 and 429 with Retry-After (seconds and HTTP date), connections dropped before forwarding,
connections dropped *after* the server has handled the request (the write happened, the answer
was lost), and slow answers that exceed the client's timeout.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from ..support.proxy import ForwardingProxy, ProxyHandler

SCHEDULE = {3: "503", 5: "drop-before", 8: "429-date", 11: "drop-after", 14: "slow", 17: "503"}


class FaultProxy(ForwardingProxy):
    def __init__(self, upstream: str, slow_seconds: float = 3.0, cycle: int = 20) -> None:
        super().__init__(upstream)
        self.slow_seconds = slow_seconds
        self.cycle = cycle
        self.count = 0
        self.injected: dict[str, int] = {}

    def next_fault(self) -> str | None:
        with self.lock:
            self.count += 1
            fault = SCHEDULE.get(self.count % self.cycle)
            if fault:
                self.injected[fault] = self.injected.get(fault, 0) + 1
            return fault

    def handle(self, request: ProxyHandler, body: bytes) -> None:
        fault = self.next_fault()
        if fault == "503":
            return request.reply(503, b"", {"Retry-After": "1"})
        if fault == "429-date":
            later = format_datetime(datetime.now(UTC) + timedelta(seconds=1), usegmt=True)
            return request.reply(429, b"", {"Retry-After": later})
        if fault == "drop-before":
            return request.drop()
        response = self.forward(request, body)
        if fault == "drop-after":
            return request.drop()
        if fault == "slow":
            time.sleep(self.slow_seconds)
        return request.relay(response)
