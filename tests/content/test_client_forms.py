"""The client-facing Questionnaires: no values, no scores, no extraction rules, no wording of their own;
a Questionnaire of its own derived from the full form; responses to it score exactly as to the full form.

Golden values are worked out by hand from the published keys (/work/shared/instruments.md):
WAI-SR Task 1, 2, 10, 12; Bond 3, 5, 7, 9; Goal 4, 6, 8, 11, no reversed items, 1-5 (Seldom ... Always);
HAq-II items 4, 8, 11, 16, 19 reversed as 7 - x on the 1-6 scale, total the sum of 19 items;
SRS the sum of four 0-10 lines, cutoff 36 ("below 36").
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from alliance_fhir import content_resources, load_text_pack, validate_resource
from alliance_fhir.cli.main import app
from alliance_fhir.content.client import client_questionnaire
from alliance_fhir.errors import InstrumentError
from alliance_fhir.instruments.catalog import walk_items
from alliance_fhir.scoring.engine import score_response
from alliance_fhir.scoring.observations import build_observation
from alliance_fhir.service.subscription import criteria

PACKS = Path(__file__).resolve().parents[1] / "fixtures" / "text-packs"
SCORE_EXTENSIONS = ("ordinalValue", "itemWeight", "calculatedExpression", "xtract", "variable")
INSTRUMENTS = ["wai-sr", "haq-ii", "srs", "csrs", "gsrs", "ors", "cors"]


def extension_urls(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [e.get("url", "") for e in node.get("extension", []) if isinstance(e, dict)]
        return found + [u for k, v in node.items() if k != "extension" for u in extension_urls(v)]
    if isinstance(node, list):
        return [u for v in node for u in extension_urls(v)]
    return []


def texts(node: Any) -> set[str]:
    """Every text a renderer could show: item texts, answer displays, the title."""
    if isinstance(node, dict):
        own = {v for k, v in node.items() if k in ("text", "display", "title") and isinstance(v, str)}
        return own | {t for v in node.values() for t in texts(v)}
    if isinstance(node, list):
        return {t for v in node for t in texts(v)}
    return set()


@pytest.mark.parametrize("instrument_id", INSTRUMENTS)
def test_the_client_form_carries_no_value_score_or_extraction_rule(catalog, instrument_id) -> None:  # noqa: ANN001
    inst = catalog.get(instrument_id)
    form = client_questionnaire(inst)
    validate_resource(form)
    assert not [u for u in extension_urls(form) if any(word in u for word in SCORE_EXTENSIONS)]
    links = {i["linkId"] for i in walk_items(form["item"])}
    assert not links & inst.score_link_ids  # the totals and subscales are gone
    full_questions = [i for i in walk_items(inst.questionnaire["item"]) if i["linkId"] not in inst.score_link_ids]
    for full, client in zip(full_questions, walk_items(form["item"]), strict=True):
        assert (client["linkId"], client["type"], client.get("text")) == (
            full["linkId"],
            full["type"],
            full.get("text"),
        )
        codes = lambda item: [o["valueCoding"]["code"] for o in item.get("answerOption", [])]  # noqa: E731
        assert codes(client) == codes(full)
    assert not any(i.get("readOnly") for i in walk_items(form["item"]))


@pytest.mark.parametrize("instrument_id", INSTRUMENTS)
def test_the_client_form_is_derived_with_a_canonical_of_its_own(catalog, instrument_id) -> None:  # noqa: ANN001
    inst = catalog.get(instrument_id)
    form = client_questionnaire(inst)
    assert (form["url"], form["version"], form["id"]) == (
        f"{inst.url}-for-client",
        inst.version,
        f"{instrument_id}-for-client",
    )
    assert form["derivedFrom"] == [inst.canonical] and "complies with" in form["description"]
    assert form["copyright"] == inst.questionnaire["copyright"] and form["title"] == inst.questionnaire["title"]
    # no wording of its own: every text shown is one the full form carries
    assert texts(form) <= texts(inst.questionnaire)


def test_a_text_pack_reaches_the_client_form_and_nothing_else_is_added(catalog) -> None:  # noqa: ANN001
    pack = load_text_pack(PACKS / "srs-de.json")
    [form] = [r for r in content_resources(catalog, [pack], for_client=True) if r["id"] == "srs-for-client"]
    [full] = [r for r in content_resources(catalog, [pack]) if r["id"] == "srs"]
    assert [i["text"] for i in form["item"]] == [pack.texts[str(n)] for n in range(1, 5)]
    assert form["language"] == "de" and texts(form) <= texts(full)


def wai_sr(catalog, canonical: str, values: list[int]) -> dict[str, Any]:  # noqa: ANN001
    codes = {w: c for (_, c), w in catalog.get("wai-sr").items["1"].options.items()}
    return {
        "resourceType": "QuestionnaireResponse",
        "id": "qr-portal",
        "questionnaire": canonical,
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "authored": "2026-11-03T09:00:00Z",
        "item": [
            {"linkId": str(n), "answer": [{"valueCoding": {"system": CS, "code": codes[Decimal(v)]}}]}
            for n, v in enumerate(values, 1)
        ],
    }


CS = "http://alliance-fhir.org/fhir/CodeSystem/alliance-fhir"


def values(observation: dict[str, Any]) -> dict[str, Any]:
    found = {"total": observation["valueQuantity"]["value"]}
    for component in observation.get("component", []):
        found[component["code"]["coding"][0]["code"]] = component["valueQuantity"]["value"]
    return found


def test_a_response_to_the_client_form_scores_exactly_as_to_the_full_form(catalog) -> None:  # noqa: ANN001
    answers = [5, 4, 3, 2, 1, 5, 4, 3, 2, 1, 5, 4]  # items 1..12
    inst = catalog.get("wai-sr")
    portal = score_response(wai_sr(catalog, inst.client_canonical, answers), catalog)
    clinic = score_response(wai_sr(catalog, inst.canonical, answers), catalog)
    # Task 5+4+1+4 = 14; Bond 3+1+4+2 = 10; Goal 2+5+3+5 = 15; total 39
    expected = {"total": 39, "wai-sr-task": 14, "wai-sr-bond": 10, "wai-sr-goal": 15}
    portal_obs = build_observation(portal, wai_sr(catalog, inst.client_canonical, answers))
    assert values(portal_obs) == expected
    assert portal_obs == build_observation(clinic, wai_sr(catalog, inst.canonical, answers))  # byte for byte the same
    assert portal.warnings == clinic.warnings == ()


def test_haq_ii_and_srs_through_the_client_forms(catalog, make_response) -> None:  # noqa: ANN001
    haq = catalog.get("haq-ii")
    response = make_response("haq-ii", dict.fromkeys(range(1, 20), 5))
    response["questionnaire"] = haq.client_canonical
    # 14 positive items at 5, the reversed 4, 8, 11, 16, 19 at 7 - 5 = 2: 70 + 10 = 80
    assert score_response(response, catalog).total.value == 80
    srs = catalog.get("srs")
    response = make_response("srs", {1: 9.5, 2: 9, 3: 8.1, 4: 7})
    response["questionnaire"] = srs.client_canonical
    result = score_response(response, catalog)
    assert result.total.value == Decimal("33.6")  # 9.5 + 9 + 8.1 + 7, below the cutoff of 36
    assert [f.id for f in result.total.flags] == [c.id for c in srs.mapping.total.cutoffs]


def test_the_catalog_resolves_the_client_canonical_and_refuses_unknown_versions(catalog) -> None:  # noqa: ANN001
    inst = catalog.get("srs")
    assert catalog.resolve(inst.client_canonical) == (inst, None)
    latest, warning = catalog.resolve(inst.client_url)
    assert latest is inst and "no version" in (warning or "")
    with pytest.raises(InstrumentError, match="unknown version '9.9'"):
        catalog.resolve(f"{inst.client_url}|9.9")


def test_the_subscription_and_the_sync_search_name_both_forms(catalog) -> None:  # noqa: ANN001
    wanted = criteria(catalog).removeprefix("QuestionnaireResponse?questionnaire=").split(",")
    for inst in catalog:
        assert inst.url in wanted and inst.client_url in wanted


def test_sync_scores_a_portal_response(catalog, tmp_path) -> None:  # noqa: ANN001
    import httpx

    from alliance_fhir.fhirclient.client import FhirClient
    from alliance_fhir.server.settings import ServerConfig
    from alliance_fhir.server.state import StateStore
    from alliance_fhir.server.sync import run_sync

    from ..fake_fhir import BASE, FakeFhir

    server = FakeFhir()
    inst = catalog.get("wai-sr")
    server.put(wai_sr(catalog, inst.client_canonical, [4] * 12))
    with (
        FhirClient(ServerConfig(url=BASE), transport=httpx.MockTransport(server), sleep=lambda _s: None) as client,
        StateStore(tmp_path / "state.sqlite") as store,
    ):
        report = run_sync(client, catalog, store)
    assert (report.found, report.written, report.unattributed) == (1, 1, [])
    [observation] = server.store["Observation"].values()
    assert values(observation)["total"] == 48  # 12 items x 4 (Very often)


def test_export_for_client_writes_the_client_forms(tmp_path) -> None:  # noqa: ANN001
    result = CliRunner().invoke(app, ["questionnaires", "export", str(tmp_path), "--for-client"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(
        [f"Questionnaire-{i}-for-client.json" for i in INSTRUMENTS] + ["CodeSystem-alliance-fhir.json"]
    )
    form = json.loads((tmp_path / "Questionnaire-wai-sr-for-client.json").read_text())
    assert "itemWeight" not in json.dumps(form) and form["derivedFrom"]
