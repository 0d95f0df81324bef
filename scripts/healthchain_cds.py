"""Send real CDS Hooks requests to our service with HealthChain's SandboxClient (a third-party client).

Runs in HealthChain's own virtualenv (it pins older fhir.resources and httpx than ours), so it
imports nothing from alliance_fhir::

    python3 -m venv /tmp/hc-venv && /tmp/hc-venv/bin/pip install healthchain==0.16.1
    /tmp/hc-venv/bin/python scripts/healthchain_cds.py --service http://127.0.0.1:8765 \\
        --fhir-server http://127.0.0.1:8080/fhir --key KEY.pem --kid KID --issuer ISS \\
        --expect afdemo-rupture=alliance-repair --expect afdemo-steady=

What is HealthChain's and what is ours: the prefetch is read from the FHIR server with the
discovery's templates (as an EHR would), one JSON file per patient, and loaded with
``SandboxClient.load_from_path``; SandboxClient builds the ``patient-view`` requests, sends them
and parses each answer with its own ``CDSResponse`` model (cards included). Two gaps in
SandboxClient 0.16.1 are filled here, each through its public surface: its requests carry a
random ``userId``/``patientId`` and no ``fhirServer`` (its own TODO), so the queued request
models (``client.requests``) get ours; and it sends no ``Authorization`` header (no JWT support),
so the httpx client it opens gets an event hook that signs a fresh CDS client JWT per request.
Exit 0 when every answer parsed as a CDS Hooks response with exactly the expected card topics.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
from healthchain.models.responses.cdsresponse import CDSResponse
from healthchain.sandbox import sandboxclient
from healthchain.sandbox.sandboxclient import SandboxClient

SERVICE_ID = "alliance-patient-view"


def main() -> int:
    args = _arguments()
    hook_url = f"{args.service.rstrip('/')}/cds-services/{SERVICE_ID}"
    key = Path(args.key).read_bytes()
    expected = dict(item.split("=", 1) for item in args.expect)
    templates = httpx.get(f"{args.service.rstrip('/')}/cds-services", timeout=10).json()["services"][0]["prefetch"]

    def sign(request: httpx.Request) -> None:
        now = int(time.time())
        claims = {
            "iss": args.issuer,
            "sub": args.issuer,
            "aud": hook_url,
            "iat": now,
            "exp": now + 60,
            "jti": str(uuid.uuid4()),
        }
        token = jwt.encode(claims, key, algorithm=args.algorithm, headers={"kid": args.kid})
        request.headers["Authorization"] = f"Bearer {token}"

    class SigningClient(httpx.Client):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(event_hooks={"request": [sign]}, **kwargs)

    sandboxclient.httpx.Client = SigningClient  # type: ignore[misc]  # SandboxClient opens httpx.Client() itself

    client = SandboxClient(url=hook_url, workflow="patient-view", timeout=30)
    with tempfile.TemporaryDirectory() as folder:
        for patient in expected:
            prefetch = {k: _read(args.fhir_server, _filled(t, patient, args.user)) for k, t in templates.items()}
            path = Path(folder) / f"{patient}.json"
            path.write_text(json.dumps(prefetch), encoding="utf-8")
            client.load_from_path(str(path))
            request = client.requests[-1]
            request.context.patientId = patient
            request.context.userId = args.user
            request.fhirServer = args.fhir_server
    started = time.perf_counter()
    responses = client.send_requests()
    elapsed = time.perf_counter() - started
    failures = 0
    for patient, response in zip(expected, responses, strict=True):
        try:
            parsed = CDSResponse(**response)
        except Exception as exc:  # noqa: BLE001 (any validation failure is a failed check)
            print(f"{patient}: not a CDS Hooks response per HealthChain's model: {exc}")
            failures += 1
            continue
        topics = ",".join(card.source.topic.code for card in parsed.cards if card.source.topic)
        ok = topics == expected[patient] and "cards" in response
        failures += not ok
        print(
            f"{patient}: {len(parsed.cards)} card(s) [{topics}] {'ok' if ok else 'expected [' + expected[patient] + ']'}"
        )
    print(f"HealthChain SandboxClient: {len(responses)} request(s) in {elapsed * 1000:.0f} ms, {failures} failed")
    return 1 if failures else 0


def _filled(template: str, patient: str, user: str) -> str:
    """A discovery prefetch template as an EHR fills it: the patient's and the user's context."""
    return template.replace("{{context.patientId}}", patient).replace("{{context.userId}}", user)


def _read(fhir_server: str, relative: str) -> dict[str, Any]:
    response = httpx.get(
        f"{fhir_server.rstrip('/')}/{relative}", headers={"Accept": "application/fhir+json"}, timeout=30
    )
    response.raise_for_status()
    return dict(response.json())


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--service", required=True, help="serve's public URL (discovery at /cds-services)")
    parser.add_argument("--fhir-server", required=True, help="the FHIR server the service scores")
    parser.add_argument("--key", required=True, help="PEM private key of a client in [[cds.clients]]")
    parser.add_argument("--kid", required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--algorithm", default="ES384", choices=["ES384", "RS384"])
    parser.add_argument("--user", default="Practitioner/afdemo-t1")
    parser.add_argument("--expect", action="append", required=True, help="PATIENT_ID=topic,topic (empty: no cards)")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
