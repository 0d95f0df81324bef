"""What the benchmarks that run `alliance-fhir serve` as a process share: a free loopback port, and a
bounded wait for its /healthz (a benchmark must not measure a service that is still starting)."""

from __future__ import annotations

import socket
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(base: str, timeout: float = 60) -> None:
    """Return once ``{base}/healthz`` answers 200; exit with a one-line error after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"serve at {base} did not become healthy within {timeout:.0f} s")
