"""serve's HTTP layer under connections that never finish their request (slowloris).

uvicorn with serve's own configuration (``uvicorn_config``: the deadline protocol, 32 connections)
on a loopback port, in front of a two-route app: what is proved is the protocol, not the app.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest.mock import Mock

import h11
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from alliance_fhir.service.run import uvicorn_config
from alliance_fhir.service.settings import ServeSettings

HEAD_TIMEOUT = 1.5
BODY_TIMEOUT = 1.5


def app() -> Starlette:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def echo(request: Request) -> Response:
        return Response(str(len(await request.body())))

    return Starlette(routes=[Route("/healthz", healthz), Route("/echo", echo, methods=["POST"])])


@contextmanager
def serving(settings: ServeSettings) -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = uvicorn.Server(uvicorn_config(app(), settings, host="127.0.0.1", port=port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def port() -> Iterator[int]:
    settings = ServeSettings(header_timeout_seconds=HEAD_TIMEOUT, body_timeout_seconds=BODY_TIMEOUT)
    assert settings.limit_concurrency == 32
    with serving(settings) as p:
        yield p


def half_open(port: int, first_bytes: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(first_bytes)
    return sock


def closed_by_server(sock: socket.socket, within: float) -> bytes | None:
    """What the server sent before closing (b"" when nothing), or None if it is still open after ``within``."""
    sock.settimeout(within)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return received


def test_40_half_open_connections_neither_block_healthz_nor_stay_open(port):
    with ExitStack() as stack:
        idle = [stack.enter_context(half_open(port, b"GET /heal")) for _ in range(40)]
        started = time.monotonic()
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=HEAD_TIMEOUT + 5)
        assert answer.status_code == 200 and time.monotonic() - started < HEAD_TIMEOUT + 2
        # each is dropped by the server (recv gives b"", nothing was answered) within the head deadline
        assert [closed_by_server(s, HEAD_TIMEOUT + 5) for s in idle] == [b""] * 40
        assert time.monotonic() - started < HEAD_TIMEOUT + 5


def test_a_connection_that_sends_nothing_is_closed_and_trickling_bytes_does_not_extend_it(port):
    with half_open(port, b"") as silent, half_open(port, b"G") as trickle:
        started = time.monotonic()
        for byte in b"ET /healthz HTTP/1.1\r\n":  # one byte every 0.1 s: the whole head would take 2.2 s
            try:
                trickle.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
        assert closed_by_server(trickle, HEAD_TIMEOUT + 5) == b""
        assert closed_by_server(silent, HEAD_TIMEOUT + 5) == b""
        assert time.monotonic() - started < HEAD_TIMEOUT + 5


def test_a_body_not_complete_in_time_gets_408_and_the_connection_is_closed(port):
    head = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n"
    with half_open(port, head + b"x" * 10) as slow:
        answer = closed_by_server(slow, BODY_TIMEOUT + 5)
    assert answer is not None and answer.startswith(b"HTTP/1.1 408 ")


def test_a_kept_alive_connection_gets_the_same_deadline_for_its_next_request(port):
    with half_open(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n") as conn:
        conn.settimeout(5)
        answer = b""
        while not answer.endswith(b'{"status":"ok"}'):  # the whole first answer (head and body may come apart)
            chunk = conn.recv(4096)
            assert chunk, f"closed after {answer!r}"
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ")
        conn.sendall(b"GET /heal")  # the next request's head, never finished
        assert closed_by_server(conn, HEAD_TIMEOUT + 5) == b""


def test_the_uvicorn_internals_the_protocol_reads_are_still_there():
    """The deadline protocol subclasses uvicorn's h11 protocol (``http=`` takes a class: no other
    public way) and reads what it keeps per connection and per request. Pinned here by name, so a
    uvicorn release that renames one fails at once rather than only in the slowloris tests above."""
    config = uvicorn_config(app(), ServeSettings(), host="127.0.0.1", port=0)
    config.load()
    loop = asyncio.new_event_loop()
    extra = {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 1)}
    transport = Mock(is_closing=Mock(return_value=False), get_extra_info=lambda name, default=None: extra.get(name))
    try:
        protocol_class: Any = config.http_protocol_class  # typed as asyncio's Protocol, which takes no arguments
        made = protocol_class(config=config, server_state=ServerState(), app_state={}, _loop=loop)
        assert isinstance(made, H11Protocol)
        protocol: Any = made  # the attributes below are uvicorn's, untyped: read by name on purpose
        protocol.connection_made(transport)
        protocol.data_received(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        assert protocol.conn.their_state is h11.SEND_BODY and protocol in protocol.connections
        assert protocol.timeout_keep_alive_task is None and protocol.loop is loop and protocol.transport is transport
        cycle = protocol.cycle
        assert (cycle.response_started, cycle.disconnected, cycle.message_event.is_set()) == (False, False, False)
        assert protocol._phase == "body"  # ours: the body deadline is armed
        protocol.connection_lost(None)
    finally:
        pending = asyncio.all_tasks(loop)  # the app's task for the request, never run: cancelled
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()
