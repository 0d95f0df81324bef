"""The wheel carries questionnaires/, mappings/ and prompts/, and the installed package finds them."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("alliance_fhir-*.whl"))


def test_wheel_contains_the_instrument_data(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = [sorted((ROOT / folder).glob("*.json")) for folder in ("questionnaires", "mappings", "prompts")]
    for data in [path for folder in shipped for path in folder]:
        assert f"alliance_fhir/_data/{data.parent.name}/{data.name}" in names
    assert "alliance_fhir/_data/prompts/en.json" in names  # the discussion prompts cards and Tasks use
    views = sorted((ROOT / "content" / "views").glob("*.json"))
    assert len(views) == 2
    for view in views:  # the SQL on FHIR ViewDefinitions
        assert f"alliance_fhir/_data/content/views/{view.name}" in names
    assert "alliance_fhir/py.typed" in names
    assert any(n.endswith("entry_points.txt") for n in names)


def test_installed_wheel_finds_its_own_data(wheel: Path, tmp_path: Path):
    zipfile.ZipFile(wheel).extractall(tmp_path)
    code = (
        "from alliance_fhir import data_root, load_catalog; print(data_root()); print(len(list(load_catalog())))\n"
        "from alliance_fhir.content.views import view_definitions; print(len(view_definitions()))\n"
        "from alliance_fhir.signals.prompts import default_prompts_path, load_prompts\n"
        "print(default_prompts_path()); print(len(load_prompts().prompts))"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, check=True
    )
    root, count, views, prompts_file, prompts = proc.stdout.split()
    assert Path(root) == tmp_path / "alliance_fhir" / "_data"
    assert count == "7"
    assert views == "2"
    assert Path(prompts_file) == tmp_path / "alliance_fhir" / "_data" / "prompts" / "en.json"
    assert prompts == "11"
