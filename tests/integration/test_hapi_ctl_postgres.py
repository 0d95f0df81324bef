"""hapi/ctl.sh where PostgreSQL is missing: Debian's package is installed, then our own cluster runs.

Everything is real except the package manager. ``apt-get`` is a stub first on PATH that records
what it was asked and "installs" by linking this machine's PostgreSQL binaries where Debian puts
them, in a private ``HAPI_PG_LIBDIR``; ``HAPI_PG_CONFDIR`` is private too, so the system is never
touched. Then initdb, the start on a free loopback port and the URL that ctl.sh prints are the
script's own.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CTL = ROOT / "hapi" / "ctl.sh"
APT_STUB = """#!/bin/sh
echo "$*" >>"$APT_LOG"
case "$*" in
  *install*) mkdir -p "$FAKE_LIB/15/bin" && ln -sf "$REAL_BIN"/* "$FAKE_LIB/15/bin/" ;;
esac
"""


def real_bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not found or not (found[-1] / "initdb").exists():
        pytest.fail("PostgreSQL's binaries (/usr/lib/postgresql/*/bin) are needed to run the cluster for real")
    return found[-1]


@pytest.fixture
def missing_postgres(tmp_path: Path):  # noqa: ANN201
    """ctl.sh's environment on a machine without PostgreSQL (a state folder of its own, removed after)."""
    # The cluster's owner (postgres, when we are root) must reach the linked binaries: not under
    # pytest's private tmp folder.
    lib = Path(tempfile.mkdtemp(prefix="alliance-fhir-pglib-"))
    lib.chmod(0o755)
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "apt-get").write_text(APT_STUB)
    (stubs / "apt-get").chmod(0o755)
    state_port = str(random.randrange(60_000, 65_000))  # only names hapi/run/<n>: no HAPI runs here
    env = {
        **os.environ,
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "HAPI_PORT": state_port,
        "HAPI_PG_CONFIG": str(tmp_path / "no-pg_config"),
        "HAPI_PG_LIBDIR": str(lib),
        "HAPI_PG_CONFDIR": str(tmp_path / "etc"),
        "APT_LOG": str(tmp_path / "apt.log"),
        "FAKE_LIB": str(lib),
        "REAL_BIN": str(real_bindir()),
    }
    env.pop("HAPI_DB_URL", None)
    yield env, tmp_path
    subprocess.run(["bash", str(CTL), "pg-stop"], env=env, capture_output=True, text=True, timeout=120)
    shutil.rmtree(ROOT / "hapi" / "run" / state_port, ignore_errors=True)
    shutil.rmtree(lib, ignore_errors=True)


def ctl(env: dict[str, str], command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(CTL), command], env=env, capture_output=True, text=True, timeout=300)


def test_stop_without_postgresql_installed_is_harmless(missing_postgres):
    env, _ = missing_postgres
    proc = ctl(env, "pg-stop")
    assert (proc.returncode, proc.stdout.strip()) == (0, "postgres not running"), proc.stderr


def test_debians_package_is_installed_once_as_root_then_our_cluster_runs(missing_postgres):
    env, tmp = missing_postgres
    proc = ctl(env, "pg-start")
    if os.geteuid() != 0:  # only root installs packages: anyone else is told how
        assert proc.returncode == 1
        assert "PostgreSQL is not installed (initdb not found); as root: apt-get install postgresql" in proc.stderr
        assert not (tmp / "apt.log").exists()
        return
    assert proc.returncode == 0, proc.stderr
    assert "installing Debian's postgresql package (once)" in proc.stderr
    assert (tmp / "apt.log").read_text().splitlines() == ["update", "install -y --no-install-recommends postgresql"]
    # No system cluster on 5432: the package's postinst reads create_main_cluster through createcluster.d/.
    conf = tmp / "etc" / "createcluster.d" / "alliance-fhir.conf"
    assert conf.read_text().strip() == "create_main_cluster = false"
    if shutil.which("pg_conftool"):  # postgresql-common's own reader, as its postinst calls it
        main = tmp / "createcluster.conf"
        main.write_text(f"include_dir '{conf.parent}'\n")
        shown = subprocess.run(
            ["pg_conftool", str(main), "show", "-bs", "create_main_cluster"], capture_output=True, text=True
        )
        assert shown.stdout.strip() == "off", shown.stderr
    url = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"postgresql://hapi@127\.0\.0\.1:\d+/hapi", url), url
    with psycopg.connect(url, connect_timeout=10) as conn:
        assert conn.execute("SELECT current_database(), inet_server_addr()::text").fetchone() == (
            "hapi",
            "127.0.0.1/32",
        )
    again = ctl(env, "pg-start")  # found now: no second install, the same cluster
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == url
    assert len((tmp / "apt.log").read_text().splitlines()) == 2
    assert ctl(env, "pg-stop").stdout.strip() == "postgres stopped"
