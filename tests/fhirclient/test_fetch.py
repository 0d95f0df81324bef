"""``fetch_bounded``: one GET of a small document from a URL that is not a FHIR server's (a JWKS).

It answers the body of a 200 and nothing else: no redirect is followed, a body over the limit is
refused whether declared or counted, a slow one is cut at the wall-clock limit, and a failure is a
``FetchFailed`` whose ``reason`` the caller words in its own terms (never httpx's exception)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import pytest

from alliance_fhir.fhirclient import fetch as fetch_module
from alliance_fhir.fhirclient.fetch import FetchFailed, fetch_bounded

URL = "https://keys.example.org/jwks.json"


def fetch(handler, max_bytes: int = 100, timeout: float = 5.0) -> bytes:  # noqa: ANN001
    return fetch_bounded(
        URL, max_bytes=max_bytes, timeout=timeout, accept="application/json", transport=httpx.MockTransport(handler)
    )


def failure(handler, **limits) -> FetchFailed:  # noqa: ANN001, ANN003
    with pytest.raises(FetchFailed) as info:
        fetch(handler, **limits)
    return info.value


def test_a_200_gives_its_body_and_the_request_asks_for_the_given_type():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b'{"keys": []}')

    assert fetch(handler) == b'{"keys": []}'
    assert [(r.method, str(r.url), r.headers["accept"]) for r in seen] == [("GET", URL, "application/json")]


@pytest.mark.parametrize("status", [500, 404, 302, 204])
def test_any_other_status_is_refused_and_a_redirect_is_not_followed(status):
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(status, headers={"location": "https://elsewhere.example.org/"})

    refused = failure(handler)
    assert (refused.reason, refused.detail) == ("status", str(status))
    assert calls == [URL]


def test_a_declared_length_over_the_limit_is_refused_before_the_body():
    refused = failure(lambda r: httpx.Response(200, content=b"x" * 101, headers={"content-length": "101"}))
    assert refused.reason == "too_large"


def test_a_body_over_the_limit_is_refused_while_it_arrives_without_a_length():
    def chunks() -> Iterator[bytes]:
        yield from (b"x" * 60, b"x" * 60, b"never read" * 1000)

    refused = failure(lambda r: httpx.Response(200, content=chunks()))
    assert refused.reason == "too_large"
    assert fetch(lambda r: httpx.Response(200, content=b"x" * 100)) == b"x" * 100  # the limit itself is allowed


def test_a_body_still_arriving_after_the_time_limit_is_cut(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(fetch_module, "time", SimpleNamespace(monotonic=lambda: now[0]))

    def chunks() -> Iterator[bytes]:
        yield b"x"
        now[0] = 6.0  # the next chunk arrives past the 5 s limit
        yield b"x"

    refused = failure(lambda r: httpx.Response(200, content=chunks()), timeout=5.0)
    assert refused.reason == "too_slow"


def test_no_usable_answer_names_only_the_kind_of_failure():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused to 10.0.0.1", request=request)

    refused = failure(handler)
    assert (refused.reason, refused.detail) == ("failed", "ConnectError")
    assert "10.0.0.1" not in str(refused)
