"""Shared fixtures: the shipped catalog and response builders that read like a scoring sheet.

``make_response("wai-sr", {1: 4, 2: 3})`` answers WAI-SR item 1 with the anchor whose raw
value is 4 (Very often) and item 2 with 3 (Fairly often), as a clinician would tick them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from alliance_fhir import Catalog, load_catalog

BASE = "http://alliance-fhir.org/fhir"
CS = f"{BASE}/CodeSystem/alliance-fhir"

ResponseFactory = Callable[..., dict[str, Any]]


@pytest.fixture(autouse=True)
def _no_user_instruments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the shipped instruments unless they add their own."""
    monkeypatch.delenv("ALLIANCE_FHIR_INSTRUMENTS", raising=False)


@pytest.fixture(autouse=True)
def _no_user_data(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Nothing a test runs writes into the developer's own data folder: the default state file and
    the demo's CDS client files (which `make demo` printed lines point at) live in a folder of the test's."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))


@pytest.fixture
def isolated_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A CLI run as on a new machine: no ALLIANCE_FHIR_* settings, an empty working folder
    (``tmp_path/work``, returned), data and config folders under ``tmp_path``.

    For tests that assert what a command creates (or must not create) on disk and which settings
    it read: what the developer's shell or an earlier test left behind must not decide the outcome.
    """
    for name in list(os.environ):
        if name.startswith("ALLIANCE_FHIR_") and name != "ALLIANCE_FHIR_TEST_HAPI_PORT":
            monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # where the default state file would go
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return work


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    loaded = load_catalog()
    assert loaded.problems == []
    return loaded


@pytest.fixture(scope="session")
def vendor_catalog() -> Catalog:
    """The shipped instruments plus the two example form maps, named explicitly as a site names its own folder.

    They live in ``form-maps/examples/``: shipped for reading, never loaded by default (the loader reads
    ``form-maps/*.json`` only), so the shipped catalog itself has no form maps.
    """
    loaded = load_catalog([Path(__file__).resolve().parent.parent / "form-maps" / "examples"])
    assert loaded.problems == []
    assert sorted(m.id for m in loaded.forms) == ["epic-like-srs", "openemr-like-wai-sr"]
    return loaded


def _coding_for(catalog: Catalog, instrument_id: str, link: str, raw: float) -> dict[str, Any]:
    inst = catalog.get(instrument_id)
    spec = inst.items[link]
    for (system, code), weight in spec.options.items():
        if weight == raw:
            return {"system": system, "code": code}
    raise AssertionError(f"{instrument_id} item {link} has no anchor with value {raw}")


@pytest.fixture(scope="session")
def make_response(catalog: Catalog) -> ResponseFactory:
    def build(
        instrument_id: str,
        answers: Mapping[int | str, float],
        *,
        status: str = "completed",
        rid: str = "qr-1",
        version: str | None = "1.0.0",
        as_integer: bool = False,
        **extra: Any,
    ) -> dict[str, Any]:
        inst = catalog.get(instrument_id)
        items = []
        for link, raw in answers.items():
            link = str(link)
            answer: dict[str, Any]
            if inst.items[link].kind == "choice":
                answer = (
                    {"valueInteger": int(raw)}
                    if as_integer
                    else {"valueCoding": _coding_for(catalog, instrument_id, link, raw)}
                )
            else:
                answer = {"valueDecimal": raw}
            items.append({"linkId": link, "answer": [answer]})
        response: dict[str, Any] = {
            "resourceType": "QuestionnaireResponse",
            "id": rid,
            "questionnaire": inst.url + (f"|{version}" if version else ""),
            "status": status,
            "subject": {"reference": "Patient/p1"},
            "authored": "2026-11-01T10:00:00Z",
            "item": items,
        }
        response.update(extra)
        return response

    return build


def all_items(n: int, value: float) -> dict[int, float]:
    """Every item 1..n answered with the same raw value."""
    return {i: value for i in range(1, n + 1)}


# ---------------------------------------------------------------- the real FHIR server

import subprocess  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TEST_HAPI_PORT = os.environ.get("ALLIANCE_FHIR_TEST_HAPI_PORT", "8091")


@pytest.fixture(scope="session")
def results_fhir_server() -> Iterator[str]:
    """A second real FHIR server, the results store of the two-server tests: $ALLIANCE_FHIR_TEST_RESULTS_SERVER,
    else the harness on the port after the first one's, started once per session with an empty database (and
    stopped at the end if this session started it). Shared by the modules that need it: their assertions count
    their own data, never the whole server.
    """
    external = os.environ.get("ALLIANCE_FHIR_TEST_RESULTS_SERVER")
    if external:
        yield external.rstrip("/")
        return
    env = {**os.environ, "HAPI_PORT": str(int(TEST_HAPI_PORT) + 1), "HAPI_FRESH": "1"}
    env.pop("HAPI_DB_URL", None)
    ctl = ["bash", str(ROOT / "hapi" / "ctl.sh")]
    was_running = subprocess.run([*ctl, "status"], env=env, capture_output=True, text=True).returncode == 0
    proc = subprocess.run([*ctl, "start"], env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"the second HAPI server (the results store) did not start:\n{proc.stderr[-3000:]}")
    yield proc.stdout.strip().splitlines()[-1]
    if not was_running and not os.environ.get("ALLIANCE_FHIR_KEEP_HAPI"):
        subprocess.run([*ctl, "stop"], env=env, capture_output=True, text=True)


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[str]:
    """Base URL of a real FHIR R4 server: $ALLIANCE_FHIR_TEST_SERVER, else the local HAPI harness.

    The harness is built and started once per session on its own port with an empty database
    (and stopped at the end if this session started it). A server that cannot start fails
    the integration tests with the reason; it never skips them.
    """
    external = os.environ.get("ALLIANCE_FHIR_TEST_SERVER")
    if external:
        yield external.rstrip("/")
        return
    env = {**os.environ, "HAPI_PORT": TEST_HAPI_PORT, "HAPI_FRESH": "1"}
    if os.environ.get("ALLIANCE_FHIR_TEST_DB", "h2") == "postgres":
        env["HAPI_DB"] = "postgres"  # HAPI on the harness's own PostgreSQL cluster
    was_running = (
        subprocess.run(
            ["bash", str(ROOT / "hapi" / "ctl.sh"), "status"], env=env, capture_output=True, text=True
        ).returncode
        == 0
    )
    proc = subprocess.run(
        ["bash", str(ROOT / "hapi" / "ctl.sh"), "start"], env=env, capture_output=True, text=True, timeout=1800
    )
    if proc.returncode != 0:
        pytest.fail(
            f"the local HAPI FHIR server did not start (hapi/ctl.sh start, port {TEST_HAPI_PORT}):\n{proc.stderr[-3000:]}"
        )
    yield proc.stdout.strip().splitlines()[-1]
    if not was_running and not os.environ.get("ALLIANCE_FHIR_KEEP_HAPI"):
        subprocess.run(["bash", str(ROOT / "hapi" / "ctl.sh"), "stop"], env=env, capture_output=True, text=True)


# ---------------------------------------------------------------- the real PostgreSQL cluster

TEST_DB = os.environ.get("ALLIANCE_FHIR_TEST_DB", "h2")  # postgres: the HAPI fixture runs HAPI on PostgreSQL


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[str]:
    """``postgresql://USER@127.0.0.1:PORT`` of a real PostgreSQL: $ALLIANCE_FHIR_TEST_POSTGRES, else the
    harness's own cluster (hapi/ctl.sh pg-start, installed and initdb'd on first use). Never skipped:
    a cluster that cannot start fails the tests that need it, with the reason."""
    external = os.environ.get("ALLIANCE_FHIR_TEST_POSTGRES")
    if external:
        yield external.rstrip("/")
        return
    env = {**os.environ, "HAPI_PORT": TEST_HAPI_PORT}
    env.pop("HAPI_DB_URL", None)
    ctl = ["bash", str(ROOT / "hapi" / "ctl.sh")]
    already = (ROOT / "hapi" / "run" / TEST_HAPI_PORT / "pg" / "postmaster.pid").exists()
    proc = subprocess.run([*ctl, "pg-start"], env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(
            f"the local PostgreSQL cluster did not start (hapi/ctl.sh pg-start, port dir {TEST_HAPI_PORT}):\n{proc.stderr[-3000:]}"
        )
    url = proc.stdout.strip().splitlines()[-1]
    yield url.rsplit("/", 1)[0]
    if not already and not os.environ.get("ALLIANCE_FHIR_KEEP_HAPI"):
        status = subprocess.run([*ctl, "status"], env=env, capture_output=True, text=True)
        if status.returncode != 0:  # HAPI (which may sit on this cluster) is not running: ours to stop
            subprocess.run([*ctl, "pg-stop"], env=env, capture_output=True, text=True)


@pytest.fixture
def postgres_url(postgres_cluster: str) -> Iterator[str]:
    """A new, empty database on the cluster for one test (dropped afterwards)."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(f"{postgres_cluster}/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield f"{postgres_cluster}/{name}"
    with psycopg.connect(f"{postgres_cluster}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
