"""A demo CDS client, so that ``make demo`` can print a hook call that works when followed.

``write_demo_client`` makes (once) an ES384 key pair for a pretend EHR, its JWKS and a config
file trusting it, in a private folder (0700; the key 0600). ``mint_token`` signs a CDS Hooks 2.0
client JWT the way an EHR does: ``alliance-fhir cds-token`` wraps it, so the printed ``curl``
mints a fresh token (new ``jti``, 60 s lifetime) each time it is run. Integrators use the same
command to test their own registration with their own key.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from ..errors import ConfigError

__all__ = ["DEMO_ISSUER", "DEMO_KID", "DemoClientFiles", "mint_token", "write_demo_client"]

DEMO_ISSUER = "http://demo-ehr.localhost"
DEMO_KID = "demo-ehr-es384"


@dataclass(frozen=True)
class DemoClientFiles:
    """Where the demo EHR's key, JWKS and config file are."""

    folder: Path
    key: Path
    jwks: Path
    config: Path


def write_demo_client(folder: Path, fhir_base: str, results_base: str | None = None) -> DemoClientFiles:
    """The demo EHR's files under ``folder`` (kept when present, so earlier printed lines keep working).

    ``results_base``: the results store beside the EHR (the two-server demo); the config names it
    in ``[results]``, so the hook reads the scores and signals there.

    Raises:
        ConfigError: the folder or files cannot be written.
    """
    files = DemoClientFiles(
        folder, folder / "demo-ehr-key.pem", folder / "demo-ehr-jwks.json", folder / "alliance-fhir.toml"
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        if not files.key.exists():
            key = ec.generate_private_key(ec.SECP384R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            descriptor = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as out:
                out.write(pem)
        private = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{files.key}: not an EC private key")
        public = json.loads(ECAlgorithm.to_jwk(private.public_key()))
        public.update(kid=DEMO_KID, use="sig", alg="ES384")
        files.jwks.write_text(json.dumps({"keys": [public]}, indent=2) + "\n", encoding="utf-8")
        files.config.write_text(
            "# The demo's CDS client (a pretend EHR); written by `alliance-fhir demo`.\n"
            f"[server]\nurl = {json.dumps(fhir_base)}\n\n"
            + (f"[results]\nurl = {json.dumps(results_base)}\n\n" if results_base else "")
            + f"[[cds.clients]]\nissuer = {json.dumps(DEMO_ISSUER)}\njwks_file = {json.dumps(str(files.jwks))}\n",
            encoding="utf-8",
        )
    except OSError as exc:
        raise ConfigError(f"the demo CDS client's files in {folder}: {exc.strerror or exc}") from exc
    return files


def mint_token(
    key_file: Path, *, issuer: str, kid: str, audience: str, lifetime: int = 60, algorithm: str = "ES384"
) -> str:
    """A CDS Hooks client JWT signed with the PEM key in ``key_file``.

    Raises:
        ConfigError: the key cannot be read or does not fit the algorithm.
    """
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        now = int(time.time())
        claims = {
            "iss": issuer,
            "sub": issuer,
            "aud": audience,
            "iat": now,
            "exp": now + lifetime,
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid, "typ": "JWT"})  # type: ignore[arg-type]
    except (OSError, ValueError, TypeError, jwt.PyJWTError) as exc:
        raise ConfigError(f"cannot sign with {key_file}: {exc}") from exc
