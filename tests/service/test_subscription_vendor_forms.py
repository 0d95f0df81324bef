"""``serve``'s Subscription asks for the EHR's own forms a form map claims, as ``sync`` searches them:
otherwise a response to the vendor's form would reach us only through the safety-net sync.

The maps are the examples (``form-maps/examples/``, invented ids), named as a site names its own folder.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from typer.testing import CliRunner

from alliance_fhir.cli.main import app
from alliance_fhir.service.subscription import BACKPORT, criteria, subscription_resource

from ..fake_fhir import BASE, FakeFhir
from ..scoring.test_vendor_forms import EPIC_SRS, OEMR_WAI
from ..support.cli_server import use_fake_server

FORM_MAP_EXAMPLES = Path(__file__).resolve().parents[2] / "form-maps" / "examples"
OURS = "http://alliance-fhir.org/fhir/Questionnaire/"


def listed(query: str) -> list[str]:
    return query.removeprefix("QuestionnaireResponse?questionnaire=").split(",")


def test_the_criteria_list_ours_then_the_mapped_vendor_questionnaires(vendor_catalog):
    vendor = vendor_catalog.forms.search_values(server=BASE)
    assert vendor == [EPIC_SRS, f"{BASE}/{EPIC_SRS}", OEMR_WAI]  # the Epic-like reference twice, then a canonical
    values = listed(criteria(vendor_catalog, vendor))
    assert values[-3:] == vendor and len(values) == 7 * 2 + 3  # our 7 instruments x (full + client form)
    assert all(v.startswith(OURS) for v in values[:-3])


def test_both_channels_carry_the_vendor_questionnaires(vendor_catalog):
    vendor = vendor_catalog.forms.search_values(server=BASE)
    hook = subscription_resource(vendor_catalog, f"{BASE}/hook", SecretStr("s"), "rest-hook", vendor)
    topic = subscription_resource(vendor_catalog, f"{BASE}/hook", SecretStr("s"), "topic", vendor)
    [extension] = topic["_criteria"]["extension"]
    assert extension["url"] == f"{BACKPORT}/backport-filter-criteria"
    assert hook["criteria"] == extension["valueString"] == criteria(vendor_catalog, vendor)
    assert OEMR_WAI in listed(hook["criteria"])


def test_subscribe_names_the_maps_of_the_instruments_folder_and_only_ours_without(monkeypatch, tmp_path):
    server = FakeFhir()
    use_fake_server(monkeypatch, tmp_path, server)
    runner = CliRunner()
    result = runner.invoke(app, ["subscribe", "--server", BASE, "--endpoint", "http://127.0.0.1:1/hook"])
    assert result.exit_code == 0, result.output
    [subscription] = server.store["Subscription"].values()
    assert all(v.startswith(OURS) for v in listed(subscription["criteria"]))  # no example id is ever active

    result = runner.invoke(
        app,
        [
            "subscribe",
            "--server",
            BASE,
            "--endpoint",
            "http://127.0.0.1:1/hook",
            "--instruments",
            str(FORM_MAP_EXAMPLES),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "updated" in result.output
    [subscription] = server.store["Subscription"].values()
    assert listed(subscription["criteria"])[-3:] == [EPIC_SRS, f"{BASE}/{EPIC_SRS}", OEMR_WAI]
