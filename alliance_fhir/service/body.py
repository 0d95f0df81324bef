"""The one way the service reads a request body: bounded in size, then parsed by the bounded JSON reader.

Called only after the caller has authenticated the request, so an unauthenticated caller learns
nothing about the size limit (401 comes first) and never makes us read a byte of its body. The
size is checked against ``Content-Length`` before reading, then again while reading (a chunked
body has none). JSON goes through :func:`.._json.loads` (orjson): nesting deeper than
:data:`.._json.MAX_DEPTH` is a parse error there, never a recursion, so a body nested 100,000
deep is one 400 like any other malformed body.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

from .._json import JSONDecodeError, describe_error, loads
from ..errors import AllianceFhirError

__all__ = ["RequestRefused", "read_body", "read_json"]


class RequestRefused(AllianceFhirError):
    """A request the service answers with a 4xx: ``status``, a metric ``label``, and a message safe to answer."""

    def __init__(self, status: int, label: str, message: str) -> None:
        self.status, self.label = status, label
        super().__init__(message)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, at most ``max_bytes``.

    Raises:
        RequestRefused: 413 over the cap (declared or read), 400 when the client went away mid-body.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(max_bytes)
            chunks.append(chunk)
    except ClientDisconnect:
        raise RequestRefused(400, "incomplete", "the request body did not arrive in full") from None
    return b"".join(chunks)


async def read_json(request: Request, max_bytes: int) -> object:
    """The body parsed as JSON (bounded size and depth).

    Raises:
        RequestRefused: as :func:`read_body`, and 400 when the body is not JSON (the reason says why, not what).
    """
    return parse_json(await read_body(request, max_bytes))


def parse_json(body: bytes) -> object:
    """A body parsed by the bounded reader; 400 with the parser's one-line reason when it is not JSON."""
    try:
        return loads(body)
    except JSONDecodeError as exc:
        raise RequestRefused(400, "bad_request", f"the body is not JSON: {describe_error(exc, body)}") from None


def _too_large(max_bytes: int) -> RequestRefused:
    return RequestRefused(413, "too_large", f"the body is over {max_bytes} bytes")
