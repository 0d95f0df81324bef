"""Signed event notifications (athenahealth-style): an HMAC of the raw body, checked before anything is parsed.

athenahealth's Event Subscription Platform signs each notification it POSTs to a webhook the way
WebSub signs content (our reading of its public README,
https://github.com/athenahealth/aone-fhir-subscriptions#verifying-message-authenticity, and of
https://www.w3.org/TR/websub/#signing-content): a header ``X-Hub-Signature: <method>=<hex>``,
where ``<hex>`` is the hex-encoded HMAC of the request body (byte for byte, whitespace included)
keyed by the secret the site gave as ``X-Hub-Secret`` when it created the Subscription, and
``<method>`` is ``sha256`` today ("this might change in future so you should check the method").

So the check is: the header is present, names the configured method and carries a hex digest
of the right length (refused before a byte of the body is read); then, once the bounded body is
read, the HMAC of those exact bytes is compared with the header's in constant time. Only then is
the body parsed as JSON.

The public scheme carries no signed timestamp header and no nonce. What we add, as our own
conservative design (documented in docs/serve.md): the body's ``Bundle.timestamp`` (covered by
the signature) must be within ``event_max_age_minutes`` of now (and at most
:data:`FUTURE_SKEW` ahead), and a signature already accepted is not queued again until that
notification would be too old anyway (kept in the state database's replay table, so the memory
it takes is bounded by the window).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from pydantic import SecretStr

from .._time import zoned_instant

__all__ = [
    "FUTURE_SKEW",
    "METHODS",
    "EventSigning",
    "SignatureMethod",
    "SignatureRefused",
    "freshness_problem",
    "parse_signature_header",
    "verify_signature",
]

SignatureMethod = Literal["sha256", "sha384", "sha512"]
# WebSub names sha1, sha256, sha384 and sha512 (https://www.w3.org/TR/websub/#signing-content); sha1 is not offered here.
METHODS: dict[str, int] = {"sha256": 32, "sha384": 48, "sha512": 64}  # method -> digest bytes
# A notification stamped this far ahead of our clock is still taken (clock skew); further is refused.
FUTURE_SKEW = timedelta(minutes=5)
_MAX_HEADER = 256  # "sha512=" + 128 hex digits fits; anything longer is not a signature


@dataclass(frozen=True, slots=True)
class EventSigning:
    """How notifications are signed: the key (a secret), the header that carries the signature, the method, the window."""

    key: SecretStr
    header: str = (
        "X-Hub-Signature"  # https://github.com/athenahealth/aone-fhir-subscriptions#verifying-message-authenticity
    )
    method: SignatureMethod = "sha256"  # same README: "events will be signed using the sha256 method"
    max_age: timedelta = timedelta(minutes=90)


class SignatureRefused(ValueError):
    """Why a notification's signature is not accepted; the message names no value (never the key or the digest)."""


def parse_signature_header(value: str | None, signing: EventSigning) -> bytes:
    """The digest a ``<method>=<hex>`` header carries, checked before the body is read.

    Raises:
        SignatureRefused: missing, not ``method=hex``, another method than the configured one, or the wrong length.
    """
    if not value:
        raise SignatureRefused(f"no {signing.header} header")
    if len(value) > _MAX_HEADER or "=" not in value:
        raise SignatureRefused(f"the {signing.header} header is not <method>=<hex digest>")
    method, _, digest = value.strip().partition("=")
    if method.lower() != signing.method:
        raise SignatureRefused(f"the {signing.header} header names another method than {signing.method}")
    try:
        raw = bytes.fromhex(digest)
    except ValueError:
        raise SignatureRefused(f"the {signing.header} header's digest is not hex") from None
    if len(raw) != METHODS[signing.method]:
        raise SignatureRefused(f"the {signing.header} header's digest is not {METHODS[signing.method]} bytes")
    return raw


def verify_signature(body: bytes, claimed: bytes, signing: EventSigning) -> None:
    """Compare the HMAC of the raw ``body`` with ``claimed`` in constant time.

    Raises:
        SignatureRefused: they differ.
    """
    expected = hmac.new(signing.key.get_secret_value().encode("utf-8"), body, getattr(hashlib, signing.method))
    if not hmac.compare_digest(expected.digest(), claimed):
        raise SignatureRefused(f"the {signing.header} signature does not match the body")


def freshness_problem(timestamp: object, now: datetime, max_age: timedelta) -> str | None:
    """Why a signed notification's ``Bundle.timestamp`` is not acceptable, or None when it is.

    Missing or unreadable is refused too: without a time, a captured notification could be
    replayed for ever.
    """
    if not isinstance(timestamp, str) or not timestamp:
        return "the signed notification has no Bundle.timestamp"
    when = zoned_instant(timestamp)
    if when is None:
        return "the signed notification's Bundle.timestamp is not a FHIR instant (with its zone)"
    if when < now - max_age:
        return f"the signed notification is older than {max_age.total_seconds() / 60:g} minutes"
    if when > now + FUTURE_SKEW:
        return "the signed notification is stamped in the future"
    return None
