"""uvicorn's HTTP/1.1 protocol (h11) with a deadline on each request's head and body.

uvicorn's h11 protocol closes an idle keep-alive connection, but a connection that is open and
has sent part of a request line (or nothing) waits forever: and it counts towards
``limit_concurrency``, so 32 such connections made every request, ``/healthz`` included, a 503
for as long as whoever opened them kept them open. The rule here, for every connection and
every request on it, needing no secret:

- its request line and headers must be complete within ``header_timeout`` of the connection
  opening, or of the first byte of a later request on a kept-alive connection (a timer armed
  once, not pushed back by each byte, so trickling bytes does not extend it); else the
  connection is closed;
- while its head is incomplete it does not count towards ``limit_concurrency``: such a
  connection has cost the service nothing but a socket, and must not take a slot from a
  request that is complete;
- its body must be complete within ``body_timeout`` of the head; else it is answered 408 (when
  no answer has started) and closed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["deadline_protocol"]

logger = logging.getLogger("alliance_fhir.serve")
Phase = Literal["head", "body"]


def deadline_protocol(header_timeout: float, body_timeout: float) -> type[asyncio.Protocol]:
    """The protocol class to pass as uvicorn's ``http=``, with these two deadlines (seconds)."""

    class DeadlineH11Protocol(_DeadlineH11Protocol):
        timeouts = {"head": header_timeout, "body": body_timeout}

    return DeadlineH11Protocol


class _DeadlineH11Protocol(H11Protocol):
    timeouts: dict[Phase, float] = {"head": 10.0, "body": 30.0}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._phase: Phase | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._follow()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            # counted again while its bytes are read: uvicorn's concurrency check runs in here
            self.connections.add(self)
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()  # a pipelined request may have been read from the buffer

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Arm, keep or cancel the deadline for where the request now is."""
        if self.transport is None or self.transport.is_closing():
            return self._cancel()
        state = self.conn.their_state
        if state is h11.IDLE:
            if not self._is_kept_alive_idle():
                self.connections.discard(self)
                self._arm("head")
        elif state is h11.SEND_BODY:
            self._arm("body")
        else:
            self._cancel()

    def _is_kept_alive_idle(self) -> bool:
        # after an answer, with nothing of the next request read: uvicorn's keep-alive timer owns it
        return self.timeout_keep_alive_task is not None and self._phase is None

    def _arm(self, phase: Phase) -> None:
        if self._phase == phase:
            return  # armed once per phase: a byte at a time does not push it back
        self._cancel()
        self._phase = phase
        self._deadline = self.loop.call_later(self.timeouts[phase], self._expired, phase)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._phase = None, None

    def _expired(self, phase: Phase) -> None:
        self._deadline, self._phase = None, None
        if self.transport.is_closing():
            return
        logger.info("closed a connection whose request %s was not complete within %g s", phase, self.timeouts[phase])
        if phase == "body" and self.cycle is not None and not self.cycle.response_started:
            self._answer_408()
        self.connections.discard(self)
        self.transport.close()

    def _answer_408(self) -> None:
        try:
            head = h11.Response(status_code=408, headers=[(b"connection", b"close"), (b"content-length", b"0")])
            self.transport.write(self.conn.send(head) or b"")
            self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:  # the state machine does not allow an answer now: just close
            pass
        self.cycle.disconnected = True  # what the app still sends goes nowhere; its body read ends
        self.cycle.message_event.set()
