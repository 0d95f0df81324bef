"""The public API as an EHR vendor embeds it: typed for their ``mypy --strict``, and accepting
fhir.resources models (R4B) wherever it takes a response, with the same Observation as for JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse

import alliance_fhir
from alliance_fhir import build_observation, load_catalog, observation_identifier, score_response

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def shipped_examples() -> list[Path]:
    """One scorable example per shipped instrument (the catalog says which instruments exist)."""
    return [EXAMPLES / inst.id / "complete.json" for inst in load_catalog()]


@pytest.mark.parametrize("path", shipped_examples(), ids=lambda p: p.parent.name)
def test_a_fhir_resources_model_scores_to_the_same_observation_as_its_json(path):
    catalog = load_catalog()
    as_json = json.loads(path.read_text())
    as_model = QuestionnaireResponse.model_validate(as_json)
    from_json = build_observation(score_response(as_json, catalog), as_json)
    from_model = build_observation(score_response(as_model, catalog), as_model)
    assert from_model == from_json
    assert from_model["effectiveDateTime"] == as_json["authored"]  # model_dump() would have lost it
    assert observation_identifier(as_model, score_response(as_model, catalog)) == from_json["identifier"][0]


def test_every_public_name_has_a_docstring():
    for name in alliance_fhir.__all__:
        if name == "__version__":
            continue
        assert (getattr(alliance_fhir, name).__doc__ or "").strip(), f"{name} has no docstring"


CONSUMER = """
from pathlib import Path

import alliance_fhir as af

config = af.ServerConfig(url="https://ehr.example/fhir")
options = af.SyncOptions(patient="Patient/1")
catalog: af.Catalog = af.load_catalog()
result: af.ScoreResult = af.score_response({"resourceType": "QuestionnaireResponse"}, catalog)
observation: dict[str, object] = af.build_observation(result, {"resourceType": "QuestionnaireResponse"})
files: list[Path] = af.write_content(af.content_resources(catalog), Path("out"), bundle=False)
with af.FhirClient(config) as client, af.StateStore(Path("state.sqlite")) as store:
    report: af.SyncReport = af.run_sync(client, catalog, store, options)
    signals, found, _ = af.run_signals(client, catalog, dry_run=True)
    ok: bool = report.ok and signals.written >= 0 and all(isinstance(s, af.Signal) for s in found)
"""


@pytest.mark.slow  # a whole mypy run
def test_a_consumers_strict_mypy_passes_on_the_public_api(tmp_path):
    """Models declare defaults as ``Field(default=...)``: with a positional default mypy (without
    the pydantic plugin) demands every field, e.g. ``ServerConfig(url=...)`` failed 8 times."""
    snippet = tmp_path / "consumer.py"
    snippet.write_text(CONSUMER)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / ".mypy"),
            str(snippet),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
