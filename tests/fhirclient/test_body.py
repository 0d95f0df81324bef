"""The one bounded body reader (``fhirclient/_body.py``): how much of a body we take in, how fast.

Every body the package reads (FHIR answers, exported NDJSON files, a JWKS) goes through
``bounded_chunks``; the NDJSON files then through ``bounded_lines``. The rules, one test each:
a body's size is limited after inflating, declared or counted; a gzip bomb is stopped at the limit
having inflated no more than the limit; gzip and deflate are read, identity passes, anything else
is refused; a body still arriving at the deadline is cut, also when the server stalls; a body cut
short on the wire is a transport error for the caller (the client's FhirTransportError).
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator

import httpx
import pytest

from alliance_fhir.errors import FhirTransportError
from alliance_fhir.fhirclient._body import BodyRefused, bounded_chunks, bounded_lines
from alliance_fhir.fhirclient._deadline import deadline_transport
from alliance_fhir.fhirclient.client import FhirClient
from alliance_fhir.server.settings import ServerConfig

FAR = float("inf")  # a deadline that never passes


def streamed(chunks: list[bytes] | Iterator[bytes], **headers: str) -> httpx.Response:
    """A response whose body is still to be read, arriving in ``chunks``."""
    return httpx.Response(200, headers=headers, content=iter(chunks))


def read(response: httpx.Response, limit: int = 1000, deadline: float = FAR, **kwargs: object) -> bytes:
    return b"".join(bounded_chunks(response, limit, deadline, **kwargs))  # type: ignore[arg-type]


def refusal(response: httpx.Response, limit: int = 1000, deadline: float = FAR, **kwargs: object) -> BodyRefused:
    with pytest.raises(BodyRefused) as info:
        read(response, limit, deadline, **kwargs)
    return info.value


def never_read() -> Iterator[bytes]:
    raise AssertionError("the body must not be read")
    yield b""


# ---- size: after inflating, declared or counted ----------------------------------------------


def test_a_body_up_to_the_limit_is_read_whole():
    assert read(streamed([b"x" * 600, b"x" * 400]), limit=1000) == b"x" * 1000


def test_a_body_over_the_limit_is_refused_while_it_arrives():
    def endless() -> Iterator[bytes]:
        while True:
            yield b"x" * 300

    assert refusal(streamed(endless()), limit=1000).reason == "too_large"


def test_a_declared_length_over_the_limit_is_refused_before_a_byte_is_read():
    assert refusal(httpx.Response(200, headers={"Content-Length": "1001"}, content=never_read())).reason == "too_large"


def test_an_answer_already_in_memory_is_only_counted():
    assert read(httpx.Response(200, content=b"x" * 1000)) == b"x" * 1000
    assert refusal(httpx.Response(200, content=b"x" * 1001)).reason == "too_large"


# ---- encodings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("identity", bytes),
        (" GZIP ", gzip.compress),
    ],
)
def test_gzip_and_deflate_are_inflated_and_identity_passes(encoding, encode):
    body = b'{"resourceType": "Patient"}\n' * 100
    encoded = encode(body)
    chunks = [encoded[i : i + 7] for i in range(0, len(encoded), 7)]  # split anywhere, even in a header
    assert read(streamed(chunks, **{"Content-Encoding": encoding}), limit=len(body)) == body


def test_a_declared_length_of_an_encoded_body_counts_compressed_bytes_so_only_the_inflated_size_decides():
    body = b"x" * 900
    squeezed = gzip.compress(b"y" * 5000)  # small on the wire, over the limit once inflated
    assert read(streamed([gzip.compress(body)], **{"Content-Encoding": "gzip", "Content-Length": "2000"})) == body
    assert refusal(streamed([squeezed], **{"Content-Encoding": "gzip"})).reason == "too_large"


def test_a_gzip_bomb_is_stopped_at_the_limit_having_inflated_no_more_than_a_bounded_amount():
    limit = 1024 * 1024
    bomb = gzip.compress(b"\0" * (128 * 1024 * 1024))  # 128 MiB in about 130 KB
    response = streamed([bomb[i : i + 65536] for i in range(0, len(bomb), 65536)], **{"Content-Encoding": "gzip"})
    taken = 0
    tracemalloc.start()
    try:
        with pytest.raises(BodyRefused) as info:
            for piece in bounded_chunks(response, limit, FAR):
                taken += len(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.reason == "too_large"
    assert taken <= limit  # nothing past the limit was handed on
    assert peak < 4 * 1024 * 1024  # inflated step by step: never a 64 MiB chunk at once


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, br"])
def test_an_encoding_we_did_not_ask_for_is_refused_before_the_body_is_read(encoding):
    refused = refusal(httpx.Response(200, headers={"Content-Encoding": encoding}, stream=_NeverRead()))
    assert (refused.reason, str(refused)) == ("encoding", f"unsupported Content-Encoding {encoding!r}")


class _NeverRead(httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        raise AssertionError("the body must not be read")


def test_a_body_not_valid_in_its_encoding_is_refused_in_one_line():
    refused = refusal(streamed([b"not gzip at all"], **{"Content-Encoding": "gzip"}))
    assert refused.reason == "undecodable" and str(refused).startswith("body is not valid gzip: ")
    assert "\n" not in str(refused)


def test_a_compressed_stream_that_ends_early_is_refused_not_taken_as_the_whole_body():
    whole = gzip.compress(b'{"resourceType": "Patient"}\n' * 1000)
    refused = refusal(streamed([whole[: len(whole) // 2]], **{"Content-Encoding": "gzip"}), limit=10**6)
    assert (refused.reason, str(refused)) == ("undecodable", "body is not valid gzip: the compressed stream ends early")


# ---- time ------------------------------------------------------------------------------------


def test_a_body_still_arriving_at_the_deadline_is_cut():
    now = [0.0]

    def late() -> Iterator[bytes]:
        yield b"x"
        now[0] = 11.0  # the rest arrives after the deadline at 10
        yield b"x"

    assert refusal(streamed(late()), deadline=10.0, clock=lambda: now[0]).reason == "too_slow"
    assert read(streamed([b"x", b"x"]), deadline=10.0, clock=lambda: 10.0) == b"xx"  # at the deadline itself: in time


def test_a_body_whose_deadline_passes_while_inflating_is_cut():
    ticks = iter(range(1000))
    bomb = gzip.compress(b"\0" * (8 * 1024 * 1024))  # 32 inflating steps at most
    refused = refusal(
        streamed([bomb], **{"Content-Encoding": "gzip"}), limit=10**8, deadline=5, clock=lambda: next(ticks)
    )
    assert refused.reason == "too_slow"


@pytest.fixture
def stalling_server() -> Iterator[str]:
    """A loopback server that sends its headers and the first bytes of the body, then nothing."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
            done.wait(30)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    finally:
        done.set()
        thread.join(timeout=30)
        listener.close()


def test_a_server_that_stalls_is_cut_at_the_deadline_not_at_the_per_read_timeout(stalling_server):
    with httpx.Client(timeout=30, transport=deadline_transport(True, httpx.Limits())) as http:
        with http.stream("GET", stalling_server) as response:
            started = time.monotonic()
            refused = refusal(response, deadline=started + 0.5, clock=time.monotonic)
            waited = time.monotonic() - started
    assert refused.reason == "too_slow"
    assert 0.4 < waited < 5  # the 0.5 s deadline, not httpx's 30 s read timeout


# ---- a body cut short ------------------------------------------------------------------------


class _CutShort(httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        yield b'{"resourceType": '
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def test_a_body_cut_short_on_the_wire_is_the_transport_error_for_the_caller_to_map():
    with pytest.raises(httpx.RemoteProtocolError):
        read(httpx.Response(200, stream=_CutShort()))


def test_the_client_maps_a_body_cut_short_to_a_transport_error():
    config = ServerConfig(url="http://fhir.test/fhir", max_attempts=1)
    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=_CutShort()))
    with FhirClient(config, transport=transport) as client, pytest.raises(FhirTransportError, match="RemoteProtocol"):
        client.read("Patient", "1")


# ---- lines (NDJSON) --------------------------------------------------------------------------


def test_lines_are_the_non_blank_lines_whatever_the_chunks():
    chunks = [b'{"a":', b" 1}\n\n  \n", b'{"b": 2}\r\n{"c"', b": 3}"]
    assert list(bounded_lines(chunks, max_line=100)) == [b'{"a": 1}', b'{"b": 2}\r', b'{"c": 3}']


def test_a_line_over_the_line_limit_is_refused_before_it_ends():
    def one_endless_line() -> Iterator[bytes]:
        while True:
            yield b"x" * 1000

    with pytest.raises(BodyRefused) as info:
        list(bounded_lines(one_endless_line(), max_line=10_000))
    assert info.value.reason == "line_too_long"


def test_a_whole_line_over_the_line_limit_in_one_chunk_is_refused_too():
    lines = bounded_lines([b"short\n" + b"x" * 101 + b"\nafter\n"], max_line=100)
    assert next(lines) == b"short"
    with pytest.raises(BodyRefused) as info:
        next(lines)
    assert info.value.reason == "line_too_long"
