"""Point the CLI's server commands at an in-process fake FHIR server, with a private state file.

Every CLI test of a server command needs the same three things: the client factory answering from
the fake (no sleeping between retries), the state database in the test's folder, and that folder
as the working directory (so nothing is written beside the checkout).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from alliance_fhir.cli import _common as cli_common
from alliance_fhir.fhirclient.client import FhirClient


def use_fake_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, handler: Callable[[httpx.Request], httpx.Response]
) -> None:
    monkeypatch.setattr(
        cli_common,
        "client_factory",
        lambda cfg: FhirClient(cfg, transport=httpx.MockTransport(handler), sleep=lambda s: None),
    )
    monkeypatch.setenv("ALLIANCE_FHIR_STATE_DB", str(tmp_path / "state.sqlite"))
    monkeypatch.chdir(tmp_path)
