"""Run a vendor proxy on a free loopback port (uvicorn in a thread), with a bounded start-up wait."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import uvicorn

from .profiles import PROFILES, Profile
from .proxy import VendorProxy


@dataclass(frozen=True)
class VendorServer:
    """A running proxy: ``url`` is its FHIR base (same path as the upstream's), ``proxy`` its state."""

    profile: Profile
    url: str
    upstream: str
    proxy: VendorProxy


@contextmanager
def run_vendor_server(profile: str | Profile, upstream: str, *, timeout: float = 20.0) -> Iterator[VendorServer]:
    """Serve ``profile`` in front of ``upstream`` until the block ends.

    Ready means ``GET metadata`` answered 200 through the proxy (so HAPI is reachable behind it);
    the wait polls that with a deadline of ``timeout`` seconds and fails with the reason.
    """
    chosen = PROFILES[profile] if isinstance(profile, str) else profile
    proxy = VendorProxy(chosen, upstream)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(proxy.app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True, name=f"vendor-proxy-{chosen.name}")
    thread.start()
    url = f"http://127.0.0.1:{port}{proxy.base_path}"
    try:
        _wait_ready(url, thread, timeout)
        yield VendorServer(chosen, url, upstream.rstrip("/"), proxy)
    finally:
        server.should_exit = True
        thread.join(timeout)


def _wait_ready(url: str, thread: threading.Thread, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            if not thread.is_alive():
                raise RuntimeError(f"the vendor proxy at {url} stopped during start-up")
            try:
                answer = client.get(f"{url}/metadata", headers={"Accept": "application/fhir+json"})
            except httpx.TransportError as exc:
                last = type(exc).__name__
            else:
                if answer.status_code == 200:
                    return
                last = f"HTTP {answer.status_code}"
            time.sleep(0.02)  # the poll interval of a bounded wait, not a stand-in for synchronisation
    raise RuntimeError(f"the vendor proxy at {url} was not ready within {timeout:.0f} s ({last})")
