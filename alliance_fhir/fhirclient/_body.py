"""One bounded reader for every response body the package takes in (FHIR answers, NDJSON files, a JWKS).

A server decides how many bytes it sends, how much they inflate to and how slowly they come;
none of that may decide how much memory or time we spend. So a body is read here and nowhere
else, by one rule:

- a declared ``Content-Length`` over the limit is refused before a byte is read (only for an
  unencoded body: for an encoded one the header counts compressed bytes);
- the raw bytes are inflated step by step, each step asked for at most the room left under the
  limit (plus one byte, to see it passed), so a gzip bomb stops at the limit having inflated no
  more than that, never a whole chunk at once;
- the deadline is checked for every chunk and every inflating step, and each read from the
  socket waits at most until the deadline (the deadline transport of :mod:`._deadline`), so a
  server that stalls is cut off too, not only one that trickles;
- only the encodings we ask for (gzip, deflate) are read; any other is refused, as is a body
  that is not valid in its encoding or whose compressed stream ends early.

What breaks the rule is a :class:`BodyRefused` with a ``reason``; each caller words it in its
own terms. A body that breaks off on the wire stays httpx's ``TransportError``, for the caller to
map. An answer already in memory (tests' ``httpx.MockTransport``) has been decoded by httpx and
is only counted.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Literal, Protocol

import httpx

from .._text import safe_text
from ._deadline import deadline as socket_deadline

__all__ = ["ENCODINGS", "BodyRefused", "bounded_chunks", "bounded_lines"]

# what we ask servers for: exactly what this module can inflate step by step
ENCODINGS = "gzip, deflate"
# raw bytes are taken in pieces of this size (or the body's end): httpx gathers a piece over
# several socket reads, each of them bounded by the deadline
_RAW = 64 * 1024
# the most one inflating step produces, so memory stays small even when the limit is large
_STEP = 256 * 1024
Clock = Callable[[], float]
Reason = Literal["too_large", "too_slow", "encoding", "undecodable", "line_too_long"]


class BodyRefused(Exception):
    """The body broke a rule of this reader; ``reason`` says which.

    ``too_large``: over the limit, declared or counted (after inflating); ``too_slow``: still
    arriving at the deadline; ``encoding``: a Content-Encoding we do not read; ``undecodable``:
    not valid in its encoding; ``line_too_long``: a line over the line limit. For ``encoding``
    and ``undecodable`` the message is the sentence to show (the same for every caller); the
    others each caller words with its own limits.
    """

    def __init__(self, reason: Reason, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


class _Decoder(Protocol):
    def step(self, data: bytes, most: int) -> tuple[bytes, bytes]:
        """At most ``most`` bytes of output, and the input not yet used."""

    def finish(self) -> bytes:
        """What is left once the input ended; refuses a stream that ended early."""


class _Identity:
    def step(self, data: bytes, most: int) -> tuple[bytes, bytes]:
        return data, b""  # already in memory: counting it is all that is left to do

    def finish(self) -> bytes:
        return b""


class _Inflate:
    def __init__(self, encoding: str, wbits: int) -> None:
        self._encoding = encoding
        self._zlib = zlib.decompressobj(wbits)

    def step(self, data: bytes, most: int) -> tuple[bytes, bytes]:
        try:
            return self._zlib.decompress(data, most), self._zlib.unconsumed_tail
        except zlib.error as exc:
            raise BodyRefused("undecodable", f"body is not valid {self._encoding}: {exc}") from None

    def finish(self) -> bytes:
        if not self._zlib.eof:
            raise BodyRefused("undecodable", f"body is not valid {self._encoding}: the compressed stream ends early")
        return b""


def _content_encoding(response: httpx.Response) -> str:
    """The response's Content-Encoding, lower case; ``identity`` when there is none."""
    return response.headers.get("Content-Encoding", "identity").strip().lower() or "identity"


def _decoder(encoding: str) -> _Decoder:
    if encoding == "identity":
        return _Identity()
    if encoding in ("gzip", "x-gzip"):
        return _Inflate(encoding, 16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return _Inflate(encoding, zlib.MAX_WBITS)
    raise BodyRefused("encoding", f"unsupported Content-Encoding {safe_text(encoding, 40)!r}")


def _refuse_declared(response: httpx.Response, encoding: str, limit: int) -> None:
    declared = response.headers.get("Content-Length", "")
    if encoding == "identity" and declared.isdigit() and int(declared) > limit:
        raise BodyRefused("too_large")


def bounded_chunks(
    response: httpx.Response, limit: int, deadline: float, *, clock: Clock = time.perf_counter
) -> Iterator[bytes]:
    """The decoded body of a streamed ``response`` in pieces, at most ``limit`` bytes in all,
    all of it arrived by ``deadline`` (a time on ``clock``).

    Raises:
        BodyRefused: too large, too slow, an encoding we do not read, or an undecodable body.
        httpx.TransportError: the body broke off on the wire (the caller maps it).
    """
    encoding = _content_encoding(response)
    _refuse_declared(response, encoding, limit)
    if response.is_stream_consumed:  # an in-memory answer: httpx decoded it already
        yield from _counted([response.content], _Identity(), limit, deadline, clock)
        return
    decoder = _decoder(encoding)
    yield from _counted(_raw(response, deadline, clock), decoder, limit, deadline, clock)


def _raw(response: httpx.Response, deadline: float, clock: Clock) -> Iterator[bytes]:
    """The raw chunks as they arrive, each socket read waiting at most until ``deadline``."""
    chunks = response.iter_raw(_RAW)
    while True:
        left = deadline - clock()
        if left < 0:
            raise BodyRefused("too_slow")
        try:
            with socket_deadline(left):
                chunk = next(chunks, None)
        except httpx.TimeoutException:
            if clock() < deadline:
                raise  # httpx's own per-read timeout, before our deadline: the caller's to map
            raise BodyRefused("too_slow") from None
        if chunk is None:
            return
        yield chunk


def _counted(chunks: Iterable[bytes], decoder: _Decoder, limit: int, deadline: float, clock: Clock) -> Iterator[bytes]:
    size = 0
    for chunk in chunks:
        pending = chunk
        while pending:
            if clock() > deadline:
                raise BodyRefused("too_slow")
            data, pending = decoder.step(pending, min(limit - size + 1, _STEP))
            size += len(data)
            if size > limit:
                raise BodyRefused("too_large")
            if data:
                yield data
    decoder.finish()


def bounded_lines(chunks: Iterable[bytes], max_line: int) -> Iterator[bytes]:
    """The non-blank lines of a body read in ``chunks`` (without their ``\\n``), none longer
    than ``max_line`` bytes: a line is refused as soon as it passes that, before it ends.

    Raises:
        BodyRefused: ``line_too_long``.
    """
    pending = bytearray()
    for chunk in chunks:
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", start)) >= 0:
            yield from _line(pending[start:end], max_line)
            start = end + 1
        del pending[:start]
        if len(pending) > max_line:
            raise BodyRefused("line_too_long")
    yield from _line(pending, max_line)


def _line(line: bytearray, max_line: int) -> Iterator[bytes]:
    if len(line) > max_line:
        raise BodyRefused("line_too_long")
    if line.strip():
        yield bytes(line)
