"""One bounded GET of a small document (a JWKS) from a URL that is not a FHIR server's.

For callers above the transport that need a document over HTTP without a :class:`FhirClient`
(the CDS service fetches each trusted client's public keys): no redirects, no retries, a size
limit checked before and while the body arrives, and a wall-clock limit. What went wrong comes
back as a :class:`FetchFailed` with a ``reason``, so the caller words it in its own terms.
"""

from __future__ import annotations

import time
from typing import Literal, TypeAlias

import httpx

__all__ = ["FetchFailed", "Transport", "fetch_bounded"]

Transport: TypeAlias = httpx.BaseTransport  # tests plug in an httpx.MockTransport


class FetchFailed(Exception):
    """The document could not be had; ``reason`` says why and ``detail`` adds what is safe to show.

    ``status``: the answer was not 200 (``detail`` is the status code); ``too_large``: the body
    exceeds the limit (declared or counted); ``too_slow``: it took longer than the time limit;
    ``failed``: no usable answer (``detail`` is the httpx exception's class name).
    """

    def __init__(self, reason: Literal["status", "too_large", "too_slow", "failed"], detail: str = "") -> None:
        super().__init__(f"{reason} {detail}".strip())
        self.reason = reason
        self.detail = detail


def fetch_bounded(
    url: str, *, max_bytes: int, timeout: float, accept: str, transport: Transport | None = None
) -> bytes:
    """The body of ``GET url`` (200 only), at most ``max_bytes`` long, read within ``timeout`` seconds.

    Raises:
        FetchFailed: not 200, too large, too slow, or no usable answer.
    """
    deadline = time.monotonic() + timeout
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, transport=transport) as http:
            with http.stream("GET", url, headers={"Accept": accept}) as response:
                if response.status_code != 200:
                    raise FetchFailed("status", str(response.status_code))
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise FetchFailed("too_large")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise FetchFailed("too_large")
                    if time.monotonic() > deadline:
                        raise FetchFailed("too_slow")
                return bytes(body)
    except httpx.HTTPError as exc:
        raise FetchFailed("failed", type(exc).__name__) from exc
