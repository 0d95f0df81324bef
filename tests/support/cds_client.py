"""A CDS client for tests: fresh key pairs, its JWKS, and tokens signed the way an EHR signs them.

``token(aud)`` is a valid CDS Hooks 2.0 client JWT; keyword arguments override or drop claims
(``exp=None`` drops ``exp``) and headers, so each negative test changes exactly one thing.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

_DROP = object()


class CdsTestClient:
    """One EHR: an issuer with an ES384 and an RS384 key (kids ``<name>-es``, ``<name>-rs``)."""

    def __init__(self, issuer: str = "https://ehr.example.org", name: str = "ehr") -> None:
        self.issuer = issuer
        self.ec_key = ec.generate_private_key(ec.SECP384R1())
        self.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kids = {"ES384": f"{name}-es", "RS384": f"{name}-rs"}

    def jwks(self) -> dict[str, Any]:
        ec_jwk = json.loads(ECAlgorithm.to_jwk(self.ec_key.public_key()))
        rsa_jwk = json.loads(RSAAlgorithm.to_jwk(self.rsa_key.public_key()))
        ec_jwk.update(kid=self.kids["ES384"], use="sig", alg="ES384")
        rsa_jwk.update(kid=self.kids["RS384"], use="sig", alg="RS384")
        return {"keys": [ec_jwk, rsa_jwk]}

    def write_jwks(self, path: Path) -> Path:
        path.write_text(json.dumps(self.jwks()), encoding="utf-8")
        return path

    def token(self, aud: str | list[str], *, alg: str = "ES384", key: Any = None, **changes: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "ehr-client",
            "aud": aud,
            "iat": now,
            "exp": now + 60,
            "jti": str(uuid.uuid4()),
        }
        headers: dict[str, Any] = {"kid": self.kids.get(alg, "unknown"), "typ": "JWT"}
        for name, value in changes.items():
            target = headers if name in ("kid", "jku", "x5u", "typ") else claims
            if value is None:
                target.pop(name, None)
            else:
                target[name] = value
        signer = key if key is not None else (self.rsa_key if alg.startswith("RS") else self.ec_key)
        return jwt.encode(claims, signer, algorithm=alg, headers=headers)
