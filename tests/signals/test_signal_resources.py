"""Signals as FHIR: DetectedIssue, the plugin Device, follow-up Tasks; deterministic and valid R4(B)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alliance_fhir import validate_resource
from alliance_fhir._ids import DEVICE_IDENTIFIER_SYSTEM, SIGNAL_IDENTIFIER_SYSTEM, SIGNAL_STATUS_EXTENSION
from alliance_fhir._refs import References
from alliance_fhir.signals.resources import (
    detected_issue,
    follow_up_task,
    plugin_device,
    signal_bundle,
    signal_resources,
    withdrawn_issues,
)
from alliance_fhir.signals.rules import EARLY_WARNING, RUPTURE, SIGNAL_KINDS, detect_signals
from alliance_fhir.signals.situations import situation_history
from alliance_fhir.signals.trajectory import build_trajectories, context_from_encounters

from ..trajectory_builders import CLIENT, CS, SID, THERAPIST, encounter, series_obs

ROOT = Path(__file__).resolve().parents[2]


def signals_of(catalog, values, **kwargs):
    return {s.kind: s for s in detect_signals(build_trajectories(series_obs("srs", values, **kwargs), catalog))}


def test_active_rupture_as_detected_issue(catalog):
    rupture = signals_of(catalog, [38, 36.5])[RUPTURE]
    issue = detected_issue(rupture)
    validate_resource(issue)
    assert issue["identifier"] == [{"system": SIGNAL_IDENTIFIER_SYSTEM, "value": rupture.key}]
    assert issue["status"] == "final" and issue["severity"] == "moderate"
    assert issue["code"]["coding"] == [{"system": CS, "code": "alliance-rupture", "display": "Alliance rupture"}]
    assert issue["patient"] == {"reference": CLIENT}
    assert issue["identifiedPeriod"] == {"start": "2026-11-02T10:00:00+00:00"}
    assert issue["author"]["reference"] == "Device/alliance-fhir"
    assert issue["extension"] == [
        {
            "url": "http://alliance-fhir.org/fhir/StructureDefinition/alliance-focus",
            "valueReference": {"reference": THERAPIST},
        },
        {"url": SIGNAL_STATUS_EXTENSION, "valueCode": "active"},
    ]
    # evidence: the previous score (38, 2026-11-01) and the drop (36.5, 2026-11-02), by identifier
    assert issue["evidence"][0]["detail"] == [
        {"type": "Observation", "identifier": {"system": SID, "value": "srs-c1-1"}},
        {"type": "Observation", "identifier": {"system": SID, "value": "srs-c1-2"}},
    ]
    assert "mitigation" not in issue and "implicated" not in issue


def test_repair_updates_the_same_issue(catalog):
    active = detected_issue(signals_of(catalog, [38, 36.5])[RUPTURE])
    resolved = detected_issue(signals_of(catalog, [38, 36.5, 38])[RUPTURE])
    validate_resource(resolved)
    assert resolved["identifier"] == active["identifier"]
    assert (active["status"], resolved["status"]) == ("final", "amended")
    assert resolved["extension"][-1] == {"url": SIGNAL_STATUS_EXTENSION, "valueCode": "resolved"}
    assert resolved["identifiedPeriod"] == {"start": "2026-11-02T10:00:00+00:00", "end": "2026-11-03T10:00:00+00:00"}
    assert resolved["mitigation"] == [
        {
            "action": {
                "coding": [{"system": CS, "code": "alliance-repair", "display": "Alliance repaired"}],
                "text": "Score back to at least the pre-rupture level",
            },
            "date": "2026-11-03T10:00:00+00:00",
        }
    ]


def test_other_resolved_signals_carry_no_mitigation(catalog):
    warning = detected_issue(signals_of(catalog, [38, 36.5, 38])[EARLY_WARNING])
    assert warning["status"] == "amended" and "mitigation" not in warning
    assert warning["severity"] == "high"


def test_literal_reference_when_the_observation_has_an_id_and_episode_is_implicated(catalog):
    obs = series_obs("srs", [38, 36.5])
    obs[1]["id"] = "obs-42"
    context = context_from_encounters([encounter(CLIENT, 1), encounter(CLIENT, 2)])
    rupture = next(s for s in detect_signals(build_trajectories(obs, catalog, context)) if s.kind == RUPTURE)
    issue = detected_issue(rupture)
    validate_resource(issue)
    assert issue["evidence"][0]["detail"][1] == {
        "reference": "Observation/obs-42",
        "type": "Observation",
        "identifier": {"system": SID, "value": "srs-c1-2"},
    }
    assert issue["implicated"] == [{"reference": "EpisodeOfCare/ep1"}]


def test_issue_is_deterministic(catalog):
    first = json.dumps(detected_issue(signals_of(catalog, [38, 35, 38])[RUPTURE]), sort_keys=True)
    again = json.dumps(detected_issue(signals_of(catalog, [38, 35, 38])[RUPTURE]), sort_keys=True)
    assert first == again


def test_device_is_valid_and_fixed():
    device = plugin_device("1.2.3")
    validate_resource(device)
    assert device == plugin_device("1.2.3")
    assert device["id"] == "alliance-fhir" and device["version"] == [{"value": "1.2.3"}]
    assert device["identifier"] == [{"system": DEVICE_IDENTIFIER_SYSTEM, "value": "alliance-fhir"}]
    assert plugin_device()["version"][0]["value"]  # the installed version


def test_resources_and_bundle(catalog):
    trajectories = build_trajectories(series_obs("srs", [38, 35]), catalog)
    signals = detect_signals(trajectories)
    history = situation_history(signals, trajectories)
    # rupture, early warning and low alliance, all open: three records of one situation, one Task
    resources = signal_resources(signals, situations=history, tasks=True, software_version="9.9.9")
    assert [r["resourceType"] for r in resources] == ["Device"] + ["DetectedIssue"] * 3 + ["Task"]
    bundle = signal_bundle(signals, situations=history, tasks=True, software_version="9.9.9")
    validate_resource(bundle)
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(set(urls)) == len(urls) and all(u.startswith("urn:uuid:") for u in urls)
    again = signal_bundle(signals, situations=history, tasks=True, software_version="9.9.9")
    assert urls == [e["fullUrl"] for e in again["entry"]]
    for resource in resources:
        validate_resource(resource)


def project_codes(node) -> set[str]:
    """Every code of our CodeSystem anywhere in a JSON tree."""
    if isinstance(node, dict):
        found = {node["code"]} if node.get("system") == CS and "code" in node else set()
        return found.union(*(project_codes(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(project_codes(v) for v in node))
    return set()


def test_every_emitted_project_code_is_in_the_codesystem(catalog):
    codesystem = json.loads((ROOT / "questionnaires" / "alliance-fhir.codesystem.json").read_text())
    defined = {c["code"] for c in codesystem["concept"]}
    # resolved rupture (mitigation), active low alliance + early warning (Tasks), the Device
    trajectories = build_trajectories(series_obs("srs", [38, 36.5, 38, 35]), catalog)
    signals = detect_signals(trajectories)
    history = situation_history(signals, trajectories)
    emitted = project_codes(signal_resources(signals, situations=history, tasks=True))
    assert emitted >= {"alliance-rupture", "alliance-repair", "low-alliance", "alliance-follow-up", "signal-engine"}
    assert emitted <= defined
    assert set(SIGNAL_KINDS) <= defined


def test_withdrawn_issues_when_scores_no_longer_support_them(catalog):
    stale = detected_issue(signals_of(catalog, [38, 35])[RUPTURE]) | {"id": "di-1", "meta": {"versionId": "3"}}
    kept = detected_issue(signals_of(catalog, [38, 35])[EARLY_WARNING]) | {"id": "di-2"}
    already = stale | {
        "id": "di-3",
        "status": "entered-in-error",
        "identifier": [{"system": SIGNAL_IDENTIFIER_SYSTEM, "value": "old"}],
    }
    foreign = {
        "resourceType": "DetectedIssue",
        "status": "final",
        "identifier": [{"system": "http://other", "value": "x"}],
    }
    # after an amendment the rupture is gone, the early warning is still produced
    current = [kept]
    out = withdrawn_issues([stale, kept, already, foreign], current)
    assert [(r["id"], r["status"], r["meta"]) for r in out] == [("di-1", "entered-in-error", {"versionId": "3"})]
    assert out[0]["extension"][-1] == {"url": SIGNAL_STATUS_EXTENSION, "valueCode": "withdrawn"}
    validate_resource(out[0])


@pytest.mark.parametrize("values", [[35], [38, 36.5, 38], [38, 37, 36, 35, 34]])
def test_all_signal_issues_validate(catalog, values):
    found = detect_signals(build_trajectories(series_obs("srs", values), catalog))
    assert found  # each series is built to raise at least one signal: an empty list would pass vacuously
    for signal in found:
        validate_resource(detected_issue(signal))


def test_end_to_end_from_responses(catalog, make_response):
    from alliance_fhir import build_observation, score_response

    focus = [
        {
            "url": "http://alliance-fhir.org/fhir/StructureDefinition/alliance-focus",
            "valueReference": {"reference": THERAPIST},
        }
    ]
    answers = {"qr-1": {1: 9.5, 2: 9.5, 3: 9.5, 4: 9.5}, "qr-2": {1: 9, 2: 9, 3: 8.5, 4: 8.5}}
    observations = []
    for day, (rid, items) in enumerate(answers.items(), start=1):
        response = make_response(
            "srs",
            items,
            rid=rid,
            authored=f"2026-11-0{day}T10:00:00Z",
            extension=focus,
            encounter={"reference": f"Encounter/e{day}"},
        )
        observations.append(build_observation(score_response(response, catalog), response))
    signals = detect_signals(build_trajectories(observations, catalog))
    # 4 x 9.5 = 38 -> 9 + 9 + 8.5 + 8.5 = 35: drop 3 (rupture), 35 < 36 (low), session 2 (early warning)
    assert [s.kind for s in signals] == [
        "low-alliance",
        RUPTURE,
        EARLY_WARNING,
    ]  # same session: kinds in SIGNAL_KINDS order
    issue = detected_issue(signals[1])
    validate_resource(issue)
    assert [d["identifier"] for d in issue["evidence"][0]["detail"]] == [o["identifier"][0] for o in observations]


# ---- results in a store beside the EHR: absolute references to the EHR, the same series and signals ----

EHR = "https://ehr.example.org/fhir"
BESIDE_THE_EHR = References.between(EHR, "https://results.example.org/fhir")
ONE_SERVER = References.between(EHR, EHR)


def on_the_ehr(obs: dict) -> dict:
    """The score Observation as sync writes it to a results store: subject, encounter, focus absolute on the EHR."""
    return {
        **obs,
        "subject": {"reference": f"{EHR}/{obs['subject']['reference']}"},
        "encounter": {"reference": f"{EHR}/{obs['encounter']['reference']}"},
        "focus": [{"reference": f"{EHR}/{f['reference']}"} for f in obs["focus"]],
    }


def test_absolute_and_relative_scores_are_one_series_with_the_same_signals(catalog):
    # SRS 38 then 36.5 in one episode: a drop of 1.5, the rupture of the test above
    relative = series_obs("srs", [38, 36.5])
    absolute = [on_the_ehr(o) for o in relative]
    mixed = [relative[0], absolute[1]]  # an older score written relative, a newer one absolute
    context = context_from_encounters([encounter(CLIENT, 1), encounter(CLIENT, 2)])
    expected = build_trajectories(relative, catalog, context, ONE_SERVER)
    assert [(s.subject, s.focus, s.episode) for s in expected.series] == [(CLIENT, THERAPIST, "EpisodeOfCare/ep1")]
    for observations in (absolute, mixed):
        found = build_trajectories(observations, catalog, context, BESIDE_THE_EHR)
        assert found.series == expected.series and found.problems == ()
        # the sessions were matched to the EHR's Encounters: numbered 1 and 2 in the episode
        assert [p.session_number for p in found.series[0].points] == [1, 2]
        assert {s.key for s in detect_signals(found)} == {s.key for s in detect_signals(expected)}


def test_a_score_naming_another_servers_patient_is_another_client(catalog):
    theirs = {**series_obs("srs", [30])[0], "subject": {"reference": "https://other.example.org/fhir/Patient/c1"}}
    found = build_trajectories([*series_obs("srs", [38, 36.5]), theirs], catalog, None, BESIDE_THE_EHR)
    assert found.subjects() == [CLIENT, "https://other.example.org/fhir/Patient/c1"]


def test_issue_and_task_for_a_results_store_name_the_ehrs_resources_absolute(catalog):
    obs = [on_the_ehr(o) for o in series_obs("srs", [38, 36.5])]
    obs[1]["id"] = "obs-42"
    context = context_from_encounters([encounter(CLIENT, 1), encounter(CLIENT, 2)])
    trajectories = build_trajectories(obs, catalog, context, BESIDE_THE_EHR)
    signals = detect_signals(trajectories)
    rupture = next(s for s in signals if s.kind == RUPTURE)
    issue = detected_issue(rupture, references=BESIDE_THE_EHR)
    validate_resource(issue)
    assert issue["patient"] == {"reference": "https://ehr.example.org/fhir/Patient/c1"}
    assert issue["implicated"] == [{"reference": "https://ehr.example.org/fhir/EpisodeOfCare/ep1"}]
    assert issue["extension"][0]["valueReference"] == {"reference": "https://ehr.example.org/fhir/PractitionerRole/t1"}
    # the evidence is our Observation, in the store beside the issue: relative
    assert issue["evidence"][0]["detail"][1]["reference"] == "Observation/obs-42"
    assert issue["identifier"] == detected_issue(rupture)["identifier"]  # the same signal, the same identity
    situation = next(s for s in situation_history(signals, trajectories) if s.status == "active")
    task = follow_up_task(situation, references=BESIDE_THE_EHR)
    assert task is not None
    validate_resource(task)
    assert task["for"] == {"reference": "https://ehr.example.org/fhir/Patient/c1"}
    assert task["owner"] == {"reference": "https://ehr.example.org/fhir/PractitionerRole/t1"}
    assert "reference" not in task["focus"]  # the issue by its identifier, wherever it is
    here = follow_up_task(situation)
    assert here is not None and here["for"] == {"reference": CLIENT}  # one server: relative, as before
