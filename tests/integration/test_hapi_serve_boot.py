"""`serve` started while the FHIR server is down, on the real HAPI: it runs, says it is not ready, and
becomes ready (its Subscription created, responses scored) once the server answers.

The FHIR server is reached through a loopback proxy on a port chosen first and left closed (the
connection is refused, as for a server that is down); the proxy is opened on that port later and
forwards to HAPI. HAPI notifies serve directly. A form that cannot be scored is then written:
its reason is logged and it is counted in /metrics and in the readiness body.
"""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from pydantic import SecretStr

from alliance_fhir.server.state import StateStore
from alliance_fhir.service.subscription import ensure_subscription

from ..support.proxy import ForwardingProxy
from .helpers import client, unique
from .test_hapi_serve import (  # noqa: F401  (server: the module fixture that publishes our Questionnaires)
    CATALOG,
    HIGH,
    SECRET,
    WITHIN,
    Service,
    _our_subscription,
    free_port,
    score_of,
    server,
    srs,
    wait_for,
    write,
)

pytestmark = pytest.mark.integration


class ProxyOnPort(ForwardingProxy):
    """A forwarding proxy on a port given in advance (the one serve was told is the FHIR server's)."""

    def __init__(self, upstream: str, port: int) -> None:
        self.port = port
        super().__init__(upstream)

    def server_bind(self) -> None:
        self.server_address = ("127.0.0.1", self.port)
        super().server_bind()


def test_serve_started_while_the_server_is_down_becomes_ready_when_it_answers(server, tmp_path):  # noqa: F811
    previous = _our_subscription(server)
    port = free_port()  # nothing listens here yet: connections are refused
    down_url = f"http://127.0.0.1:{port}/fhir"
    state = str(tmp_path / "state.sqlite")
    with StateStore(state) as store:  # the catch-up starts at now: only this test's responses
        store.set_checkpoint(down_url, datetime.now(UTC).isoformat(timespec="seconds"))
    settings = tmp_path / "serve.toml"
    settings.write_text("[serve]\nstart_retry_max_seconds = 2\n")
    settings.chmod(0o600)
    service = Service(down_url, tmp_path, "--config", str(settings), state=state)
    try:
        service.start(wait_ready=False)
        not_ready = wait_for(
            "a failed start attempt reported",
            lambda: (r := httpx.get(f"{service.url}/readyz", timeout=30)).json().get("start_error") and r,
            timeout=60,
        )
        assert not_ready.status_code == 503 and not_ready.json()["started"] is False
        assert httpx.get(f"{service.url}/healthz", timeout=30).status_code == 503
        assert httpx.get(f"{service.url}/livez", timeout=5).status_code == 200
        assert service.proc is not None and service.proc.poll() is None  # it did not exit (it used to, with 2)

        with ProxyOnPort(server, port) as proxy:
            assert proxy.url == down_url
            wait_for("readyz 200", lambda: service.answers("/readyz"), timeout=120)
            endpoint = _our_subscription(server)
            assert endpoint == (f"{service.url}/hook", "rest-hook")  # created on HAPI by the start, retried
            wait_for("the start sync", service.last_sync, timeout=WITHIN)

            patient, rid = f"Patient/{unique('p')}", unique("qr")
            write(server, srs(patient, rid, HIGH))
            assert wait_for("the score Observation", score_of(server, rid), timeout=WITHIN) == 38.0

            # a form that cannot be scored: its reason in the log, counted in /metrics and in readiness
            bad = unique("qr")
            write(server, srs(patient, bad, (9.0, 9.0, 9.0, 99.0)))

            def failure_lines() -> list[str]:
                return [
                    line["message"] for line in service.log_lines() if f"QuestionnaireResponse/{bad}" in line["message"]
                ]

            lines = wait_for("the failure logged", failure_lines, timeout=WITHIN)
            assert any(m.startswith("failed: ") and "item '4'" in m and "out of range" in m for m in lines), lines
            assert not any("99.0" in m for m in lines)  # the answer stays out of the log
            assert service.metric("alliance_fhir_outstanding_failures") >= 1
            ready = httpx.get(f"{service.url}/readyz", timeout=30)
            assert ready.status_code == 200 and ready.json()["outstanding_failures"] >= 1
            assert service.stop() == 0
    finally:
        if service.proc is not None and service.proc.poll() is None:
            service.kill()
        if previous is not None:  # the module's service (if running) gets our Subscription back
            with client(server) as c:
                ensure_subscription(c, list(CATALOG), previous[0], SecretStr(SECRET), previous[1])  # type: ignore[arg-type]
