"""Sealed report links: the token in a CDS card's link to one patient's report.

A browser that follows a card's link carries no CDS JWT, so the link itself carries a short-lived
token scoped to one patient and to the report, valid ``report_link_minutes``: the patient and the
expiry sealed with AES-GCM under a key generated once into the state database, so the URL is
opaque (it does not name the patient even encoded). It sits beside :mod:`.cds_auth` (who may call
the hook) because it is the other half of the CDS service's access control: who may open the
report the hook links to. :mod:`.cds` mints the links and serves the page.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._ids import CDS_REPORT_LINK_SCOPE
from .._refs import parse_reference
from ..server.state import StateStore

__all__ = ["ReportLinks"]

_LINK_KEY_SETTING = "cds_report_link_key"


class ReportLinks:
    """Short-lived links to one patient's report: the patient and expiry sealed with AES-GCM.

    Sealed, not just signed: a signed JWT's payload is readable by anyone who sees the URL (an
    EHR's log, a browser history), and it would name the patient. AES-GCM (from ``cryptography``,
    already installed for PyJWT's RS384/ES384) gives an opaque token that also cannot be altered.
    No server-side state: replicas sharing the state database share the key and so the links.
    """

    def __init__(self, key: str, public_url: str, minutes: int, *, now: Callable[[], float] = time.time) -> None:
        self._cipher = AESGCM(hashlib.sha256(key.encode()).digest())
        self._minutes, self._now = minutes, now
        self._base = public_url.rstrip("/")
        self._aad = f"{CDS_REPORT_LINK_SCOPE}|{self._base}".encode()

    @classmethod
    def from_store(cls, store: StateStore, public_url: str, minutes: int) -> ReportLinks:
        """The key is generated once and kept in the state database (replicas on PostgreSQL share it)."""
        return cls(store.setting_once(_LINK_KEY_SETTING, secrets.token_urlsafe(32)), public_url, minutes)

    def url(self, patient: str) -> str:
        return f"{self._base}/cds-report?token={self.token(patient)}"

    def token(self, patient: str) -> str:
        sealed = json.dumps({"sub": patient, "exp": int(self._now()) + 60 * self._minutes}).encode()
        nonce = secrets.token_bytes(12)
        return base64.urlsafe_b64encode(nonce + self._cipher.encrypt(nonce, sealed, self._aad)).decode().rstrip("=")

    def patient(self, token: str) -> str | None:
        """The patient a link token names, or None when it is expired, altered or not ours."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            claims = json.loads(self._cipher.decrypt(raw[:12], raw[12:], self._aad))
        except (ValueError, InvalidTag):
            return None
        subject, expires = claims.get("sub"), claims.get("exp")
        if not isinstance(expires, int) or expires <= self._now():
            return None
        ref = parse_reference(subject)
        return subject if ref is not None and ref.type == "Patient" and ref.relative == subject else None
