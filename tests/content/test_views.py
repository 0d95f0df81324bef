"""The SQL on FHIR v2 ViewDefinitions (``content/views``): their shape, and every path on our own resources.

Shape: the ShareableViewDefinition and TabularViewDefinition rules (canonical url, SQL-safe
names, ``fhirVersion``, a primitive type on every column, no collections) plus ours (the
identifier systems are the ones in ``_ids``; both branches of the score union give the same
columns). Paths: each view runs in a real engine (fhir4ds-v2 on DuckDB, ``tests/support/sof.py``)
over the Observations our scorer writes for the examples and the DetectedIssues our signal rules
write, and every column comes out filled somewhere, with the values the resources carry.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from alliance_fhir import build_observation, score_response
from alliance_fhir._ids import (
    FOCUS_EXTENSION,
    IDENTIFIER_SYSTEM,
    INSTANTIATES,
    PROJECT_BASE,
    PROJECT_CODESYSTEM,
    SIGNAL_IDENTIFIER_SYSTEM,
    SIGNAL_STATUS_EXTENSION,
)
from alliance_fhir.content.views import view_definitions, views_root
from alliance_fhir.errors import AllianceFhirError
from alliance_fhir.signals.resources import detected_issue
from alliance_fhir.signals.rules import RUPTURE, detect_signals
from alliance_fhir.signals.trajectory import build_trajectories, context_from_encounters

from ..support.sof import run_view, write_ndjson
from ..trajectory_builders import CLIENT, THERAPIST, encounter, series_obs

ROOT = Path(__file__).resolve().parents[2]
SQL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
PRIMITIVES = {
    "base64Binary", "boolean", "canonical", "code", "dateTime", "decimal", "id", "instant", "integer",
    "integer64", "markdown", "oid", "string", "positiveInt", "time", "unsignedInt", "url", "uuid",
}  # fmt: skip
PROFILES = [
    "https://sql-on-fhir.org/ig/StructureDefinition/ShareableViewDefinition",
    "https://sql-on-fhir.org/ig/StructureDefinition/TabularViewDefinition",
]
VIEWS = {v["id"]: v for v in view_definitions()}
SCORES, SIGNALS = VIEWS["alliance-scores"], VIEWS["alliance-signals"]


def columns(select: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every column of a select tree, in the order the view emits them (a union counts once)."""
    out: list[dict[str, Any]] = []
    for node in select:
        out += node.get("column", [])
        out += columns(node.get("select", []))
        if node.get("unionAll"):
            out += columns([node["unionAll"][0]])
    return out


def all_columns(select: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every column anywhere, each union branch included."""
    out: list[dict[str, Any]] = []
    for node in select:
        out += node.get("column", [])
        out += all_columns(node.get("select", []) + node.get("unionAll", []))
    return out


# ---------------------------------------------------------------- shape


def test_the_two_views_ship_from_content_views():
    assert views_root() == ROOT / "content" / "views"  # a checkout; the wheel test covers _data/content/views
    assert sorted(VIEWS) == ["alliance-scores", "alliance-signals"]
    assert SCORES["resource"] == "Observation" and SIGNALS["resource"] == "DetectedIssue"


@pytest.mark.parametrize("view", list(VIEWS.values()), ids=list(VIEWS))
def test_view_is_shareable_and_tabular(view):
    assert view["resourceType"] == "ViewDefinition"
    assert view["meta"]["profile"] == PROFILES
    assert view["url"] == f"{PROJECT_BASE}/ViewDefinition/{view['id']}"
    assert SQL_NAME.match(view["name"]) and view["name"] == view["id"].replace("-", "_")
    assert view["status"] == "active" and view["version"] and view["fhirVersion"] == ["4.0.1"]
    assert view["title"] and view["description"]
    for column in all_columns(view["select"]):
        assert SQL_NAME.match(column["name"]), column
        assert column["type"] in PRIMITIVES, column
        assert not column.get("collection"), column
        assert column["path"] and column["description"], column
    names = [c["name"] for c in columns(view["select"])]
    assert len(names) == len(set(names)), names


def test_the_score_union_branches_give_the_same_columns():
    (union,) = [node["unionAll"] for node in SCORES["select"] if "unionAll" in node]
    total, subscale = union
    shape = [(c["name"], c["type"]) for c in total["column"]]
    assert shape == [(c["name"], c["type"]) for c in subscale["column"]]
    assert "forEach" not in total and subscale["forEach"] == "component"


def test_score_columns_are_the_issues_words():
    names = [c["name"] for c in columns(SCORES["select"])]
    for word in ("patient", "encounter", "therapist_focus", "instrument", "scale", "value", "effective_time"):
        assert word in names
    assert {"status", "method_version"} <= set(names)


def test_views_use_our_identifier_systems_and_extensions():
    scores, signals = json.dumps(SCORES), json.dumps(SIGNALS)
    assert SCORES["where"] == [
        {
            "path": f"identifier.where(system = '{IDENTIFIER_SYSTEM}').exists()",
            "description": SCORES["where"][0]["description"],
        }
    ]
    assert SIGNALS["where"][0]["path"] == f"identifier.where(system = '{SIGNAL_IDENTIFIER_SYSTEM}').exists()"
    for needle in (PROJECT_CODESYSTEM, INSTANTIATES):
        assert needle in scores
    for needle in (PROJECT_CODESYSTEM, FOCUS_EXTENSION, SIGNAL_STATUS_EXTENSION):
        assert needle in signals
    # no other project URL sneaks in (a typo would silently match nothing)
    urls = set(re.findall(r"http://alliance-fhir\.org/fhir/[A-Za-z/-]+", scores + signals))
    urls -= {f"{PROJECT_BASE}/ViewDefinition/alliance-scores", f"{PROJECT_BASE}/ViewDefinition/alliance-signals"}
    urls -= {f"{PROJECT_BASE}/Questionnaire/wai-sr"}  # in a column description
    assert urls <= {
        PROJECT_CODESYSTEM,
        IDENTIFIER_SYSTEM,
        SIGNAL_IDENTIFIER_SYSTEM,
        FOCUS_EXTENSION,
        SIGNAL_STATUS_EXTENSION,
    }


def test_a_broken_view_file_is_one_clear_error(tmp_path):
    (tmp_path / "good.json").write_text(json.dumps(SCORES))
    (tmp_path / ".hidden.json").write_text("{")  # dotfiles are skipped
    assert [v["id"] for v in view_definitions(tmp_path)] == ["alliance-scores"]
    (tmp_path / "bad.json").write_text('{"resourceType": "Patient", "id": "x"}')
    with pytest.raises(AllianceFhirError, match=r"bad\.json: not a ViewDefinition"):
        view_definitions(tmp_path)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(AllianceFhirError, match=r"bad\.json: not readable JSON"):
        view_definitions(tmp_path)


# ---------------------------------------------------------------- paths, on our own resources


def example_observations(catalog) -> list[dict[str, Any]]:
    out = []
    for n, path in enumerate(sorted(p for p in ROOT.glob("examples/*/*.json"))):
        response = json.loads(path.read_text())
        if path.stem == "incomplete":
            continue
        observation = build_observation(score_response(response, catalog), response)
        out.append({**observation, "id": f"obs-{n}"})
    return out


def repaired_rupture(catalog) -> dict[str, Any]:
    """SRS 38, 36.5, 38: a 1.5-point drop (>= 1) opens a rupture on day 2; 38 (>= 38) repairs it on day 3."""
    obs = series_obs("srs", [38, 36.5, 38])
    for n, o in enumerate(obs, 1):
        o["id"] = f"srs-{n}"
    context = context_from_encounters([encounter(CLIENT, day) for day in (1, 2, 3)])
    rupture = next(s for s in detect_signals(build_trajectories(obs, catalog, context)) if s.kind == RUPTURE)
    return {**detected_issue(rupture), "id": "issue-1"}


@pytest.fixture(scope="module")
def engine(tmp_path_factory, catalog):
    folder = tmp_path_factory.mktemp("ndjson")
    foreign = {"resourceType": "Observation", "id": "other", "status": "final", "code": {"text": "not ours"}}
    return write_ndjson(folder, example_observations(catalog) + [foreign, repaired_rupture(catalog)])


def test_every_score_column_is_filled_from_our_observations(engine, catalog):
    rows = run_view(engine, SCORES)
    observations = example_observations(catalog)
    # one row per score: the total plus each subscale (WAI-SR has three, the others none)
    assert len(rows) == sum(1 + len(o.get("component", [])) for o in observations)
    assert "Observation/other" not in {r["observation_id"] for r in rows}  # not ours: filtered out
    for column in columns(SCORES["select"]):
        assert any(r[column["name"]] is not None for r in rows), f"{column['name']} ({column['path']}) is never filled"


def test_score_rows_carry_what_the_observation_says(engine, catalog):
    rows = run_view(engine, SCORES)
    for observation in example_observations(catalog):
        mine = [r for r in rows if r["observation_id"] == f"Observation/{observation['id']}"]
        expected = [(observation["code"]["coding"][0]["code"], "total", observation["valueQuantity"]["value"])]
        expected += [
            (c["code"]["coding"][0]["code"], "subscale", c["valueQuantity"]["value"])
            for c in observation.get("component", [])
        ]
        assert sorted((r["scale"], r["scale_kind"], r["value"]) for r in mine) == sorted(expected)
        for row in mine:
            assert row["patient"] == observation["subject"]["reference"]
            assert row["encounter"] == observation["encounter"]["reference"]
            assert row["therapist_focus"] == observation["focus"][0]["reference"]
            assert row["instrument"] == observation["extension"][0]["valueCanonical"]
            assert row["status"] == observation["status"]
            assert row["method_version"] == observation["method"]["coding"][0]["version"] == "1.0.0"
            assert row["identifier"] == observation["identifier"][0]["value"]
            assert row["effective_time"] == observation["effectiveDateTime"]


def test_wai_sr_total_is_the_sum_of_its_three_subscales(engine):
    """Task + Bond + Goal = total (instruments.md: the 12 items split 4/4/4 over the subscales)."""
    rows = [r for r in run_view(engine, SCORES) if r["instrument"].endswith("/wai-sr|1.0.0")]
    for oid in {r["observation_id"] for r in rows}:
        mine = {r["scale"]: Decimal(str(r["value"])) for r in rows if r["observation_id"] == oid}
        assert set(mine) == {"wai-sr-total", "wai-sr-task", "wai-sr-bond", "wai-sr-goal"}
        assert mine["wai-sr-total"] == mine["wai-sr-task"] + mine["wai-sr-bond"] + mine["wai-sr-goal"]


def test_every_signal_column_is_filled_from_a_repaired_rupture(engine):
    (row,) = run_view(engine, SIGNALS)
    for column in columns(SIGNALS["select"]):
        assert row[column["name"]] is not None, f"{column['name']} ({column['path']}) is empty"
    assert row["issue_id"] == "DetectedIssue/issue-1"
    assert (row["signal"], row["severity"], row["status"], row["signal_status"]) == (
        "alliance-rupture", "moderate", "amended", "resolved",
    )  # fmt: skip
    assert (row["patient"], row["therapist_focus"], row["episode"]) == (CLIENT, THERAPIST, "EpisodeOfCare/ep1")
    assert str(row["opened"]).startswith("2026-11-02") and str(row["resolved"]).startswith("2026-11-03")
    assert str(row["repaired"]).startswith("2026-11-03")
    # evidence: the score before the drop (day 1), the drop (day 2) and the repair (day 3), by id and identifier
    assert row["evidence_count"] == 3
    assert row["evidence"] == "Observation/srs-1 Observation/srs-2 Observation/srs-3"
    assert row["evidence_identifiers"] == "srs-c1-1 srs-c1-2 srs-c1-3"


def test_the_docs_local_engine_example_runs(engine, capsys, monkeypatch):
    """docs/data-teams.md's fhir4ds snippet, run as written (paths pointed at our test export)."""
    docs = (ROOT / "docs" / "data-teams.md").read_text()
    (block,) = [b for b in re.findall(r"^```python\n(.*?)^```$", docs, flags=re.S | re.M) if "fhir4ds" in b]
    monkeypatch.chdir(views_root())
    exec(block.replace("/data/export/*.ndjson", str(engine / "*.ndjson")), {})  # noqa: S102
    printed = capsys.readouterr().out
    assert "wai-sr-bond" in printed and "Patient/example-client" in printed
