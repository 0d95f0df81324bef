"""One bounded GET of a small document (a JWKS) from a URL that is not a FHIR server's.

For callers above the transport that need a document over HTTP without a :class:`FhirClient`
(the CDS service fetches each trusted client's public keys): no redirects, no retries, and the
body read by the package's one bounded reader (:mod:`._body`): a size limit checked before and
while the body arrives (after inflating, step by step), and a wall-clock limit on the whole
exchange down to each socket read (:mod:`._deadline`). What went wrong comes back as a
:class:`FetchFailed` with a ``reason``, so the caller words it in its own terms.
"""

from __future__ import annotations

import time
from typing import Literal, TypeAlias

import httpx

from ._body import ENCODINGS, BodyRefused, bounded_chunks
from ._deadline import deadline as socket_deadline
from ._deadline import deadline_transport

__all__ = ["FetchFailed", "Transport", "fetch_bounded"]

Transport: TypeAlias = httpx.BaseTransport  # tests plug in an httpx.MockTransport


class FetchFailed(Exception):
    """The document could not be had; ``reason`` says why and ``detail`` adds what is safe to show.

    ``status``: the answer was not 200 (``detail`` is the status code); ``too_large``: the body
    exceeds the limit (declared or counted); ``too_slow``: it took longer than the time limit;
    ``failed``: no usable answer (``detail`` is the httpx exception's class name, or the reason
    the body could not be decoded).
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
    headers = {"Accept": accept, "Accept-Encoding": ENCODINGS}
    try:
        with (
            httpx.Client(
                timeout=timeout,
                follow_redirects=False,
                transport=transport or deadline_transport(True, httpx.Limits()),
            ) as http,
            socket_deadline(timeout),
            http.stream("GET", url, headers=headers) as response,
        ):
            if response.status_code != 200:
                raise FetchFailed("status", str(response.status_code))
            return b"".join(bounded_chunks(response, max_bytes, deadline, clock=time.monotonic))
    except BodyRefused as exc:
        if exc.reason == "too_large":
            raise FetchFailed("too_large") from None
        if exc.reason == "too_slow":
            raise FetchFailed("too_slow") from None
        raise FetchFailed("failed", str(exc)) from None
    except httpx.TimeoutException as exc:
        raise FetchFailed("too_slow" if time.monotonic() >= deadline else "failed", type(exc).__name__) from exc
    except httpx.HTTPError as exc:
        raise FetchFailed("failed", type(exc).__name__) from exc
