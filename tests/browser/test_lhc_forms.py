"""Every shipped Questionnaire in a real form filler: NLM LHC-Forms in headless Chromium.

For each instrument the form is rendered (every item, every answer label), filled through the UI
(radio labels clicked, VAS decimals typed) or loaded through the API (``questionnaireResponse``
option of ``addFormToPage``), and the QuestionnaireResponse is exported with LHC-Forms' own
``LForms.Util.getFormFHIRData``. Two things must then hold:

(a) our scorer accepts the exported response and gives the score computed by hand below, and
(b) the score LHC-Forms computed from our ``calculatedExpression`` (shown in the read-only total
    field and exported as its answer) equals ours.

A disagreement is a bug in our content or our scorer: fix that, never loosen these tests.

Scoring keys (``../shared/instruments.md``; README "Instruments"):
- WAI-SR: 12 items, 1 Seldom ... 5 Always, no reversals; total = sum (12-60);
  Task = 1, 2, 10, 12; Bond = 3, 5, 7, 9; Goal = 4, 6, 8, 11 (each 4-20).
- HAq-II: 19 items, 1 Strongly disagree ... 6 Strongly agree; items 4, 8, 11, 16, 19 reversed as
  7 - x; total = sum (19-114).
- SRS, CSRS, GSRS, ORS, CORS: four 0-10 lines, one decimal; total = sum (0-40), no rounding
  needed because one-decimal sums are exact.

Run with ``pytest -m browser``; ``make browser-deps`` installs Chromium and LHC-Forms.
"""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from alliance_fhir import (
    Catalog,
    ScoringError,
    apply_text_packs,
    load_catalog,
    load_text_pack,
    score_response,
    validate_resource,
)
from alliance_fhir.instruments.catalog import walk_items

from ..shipped import shipped_ids
from .conftest import REPO, LhcPage

pytestmark = pytest.mark.browser

INSTRUMENTS = shipped_ids()
TEXT_PACKS = REPO / "tests" / "fixtures" / "text-packs"
SCREENSHOT = REPO / "docs" / "img" / "wai-sr-lhc-forms.png"
# Set to 1 to rewrite the docs screenshot from the current rendering (otherwise it goes to tmp).
UPDATE_SCREENSHOT = os.environ.get("ALLIANCE_FHIR_UPDATE_SCREENSHOT") == "1"


@functools.cache
def catalog() -> Catalog:
    """The shipped instruments only (called inside tests, where tests/conftest.py has removed
    $ALLIANCE_FHIR_INSTRUMENTS)."""
    loaded = load_catalog()
    assert loaded.problems == []
    return loaded


@dataclass(frozen=True)
class AnswerSet:
    """Scripted answers (linkId -> the answer's scoring value) and hand-computed scores."""

    name: str
    instrument: str
    answers: dict[str, str]  # VAS: the text typed; Likert: the value of the anchor to click
    expected: dict[str, Decimal]  # scale id -> score

    @property
    def id(self) -> str:
        return f"{self.instrument}-{self.name}"


def _series(*values: int | str) -> dict[str, str]:
    return {str(n): str(v) for n, v in enumerate(values, 1)}


def _lines(*values: str) -> dict[str, Decimal]:
    """An SRS-family response's four line scores (items 1-4 in the published order), each the line's own value."""
    return dict(zip(("relationship", "goals", "approach", "overall"), map(Decimal, values), strict=True))


UI_SETS = [
    AnswerSet(
        "mixed",
        "wai-sr",
        #       1  2  3  4  5  6  7  8  9 10 11 12
        _series(5, 4, 3, 2, 1, 5, 4, 3, 2, 1, 5, 4),
        {
            "total": Decimal(39),  # 5+4+3+2+1+5+4+3+2+1+5+4 = 39
            "task": Decimal(14),  # items 1, 2, 10, 12: 5+4+1+4 = 14
            "bond": Decimal(10),  # items 3, 5, 7, 9: 3+1+4+2 = 10
            "goal": Decimal(15),  # items 4, 6, 8, 11: 2+5+3+5 = 15
        },
    ),
    AnswerSet(
        "reversals-matter",
        "haq-ii",
        #       1  2  3  4  5  6  7  8  9 10 11 12 13 14 15 16 17 18 19
        _series(6, 5, 4, 1, 6, 3, 5, 1, 2, 6, 2, 4, 5, 1, 6, 1, 3, 5, 6),
        # Forward items 1,2,3,5,6,7,9,10,12,13,14,15,17,18: 6+5+4+6+3+5+2+6+4+5+1+6+3+5 = 61.
        # Reversed 4,8,11,16,19 answered 1,1,2,1,6 score 7-x: 6+6+5+6+1 = 24.
        # Total 61 + 24 = 85 (without the reversal it would be 61 + 11 = 72).
        {"total": Decimal(85)},
    ),
    # VAS lines: each typed value is 0-10 with one decimal; total is the exact decimal sum.
    AnswerSet(
        "decimals",
        "srs",
        _series("7.3", "8", "9.5", "6.2"),
        {"total": Decimal("31.0"), **_lines("7.3", "8", "9.5", "6.2")},  # 7.3+8+9.5+6.2
    ),
    AnswerSet(
        "ends-of-line",
        "csrs",
        _series("10", "9.9", "0", "0.1"),
        {"total": Decimal("20.0"), **_lines("10", "9.9", "0", "0.1")},  # 10+9.9+0+0.1
    ),
    # 3.3+3.3+3.3+3.4 = 13.3; in binary floating point this is 13.299999999999999, which the
    # expression must round to one decimal to agree with our exact sum.
    AnswerSet(
        "float-residue",
        "gsrs",
        _series("3.3", "3.3", "3.3", "3.4"),
        {"total": Decimal("13.3"), **_lines("3.3", "3.3", "3.3", "3.4")},
    ),
    AnswerSet("decimals", "ors", _series("7.3", "4.6", "5.5", "2.9"), {"total": Decimal("20.3")}),  # 7.3+4.6+5.5+2.9
    # 0.1+0.2+0.3+0.4 = 1.0 (floating point: 1.0000000000000002).
    AnswerSet("float-residue", "cors", _series("0.1", "0.2", "0.3", "0.4"), {"total": Decimal("1.0")}),
]

API_SETS = [
    AnswerSet(
        "api",
        "wai-sr",
        #       1  2  3  4  5  6  7  8  9 10 11 12
        _series(2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3),
        {
            "total": Decimal(35),  # 2+3+4+5+1+2+3+4+5+1+2+3 = 35
            "task": Decimal(9),  # items 1, 2, 10, 12: 2+3+1+3 = 9
            "bond": Decimal(13),  # items 3, 5, 7, 9: 4+1+3+5 = 13
            "goal": Decimal(13),  # items 4, 6, 8, 11: 5+2+4+2 = 13
        },
    ),
    # Strongly agree (6) everywhere: 14 forward items x 6 = 84, 5 reversed items x (7-6) = 5;
    # total 89 (114 if the reversal were forgotten).
    AnswerSet("api-all-agree", "haq-ii", _series(*[6] * 19), {"total": Decimal(89)}),
    # 9.9+9.9+9.9+6.3 = 36.0, exactly the SRS cutoff (floating point: 36.00000000000001).
    AnswerSet(
        "api-cutoff",
        "srs",
        _series("9.9", "9.9", "9.9", "6.3"),
        {"total": Decimal("36.0"), **_lines("9.9", "9.9", "9.9", "6.3")},
    ),
    AnswerSet("api", "cors", _series("2.5", "3.5", "4.5", "5.5"), {"total": Decimal("16.0")}),  # 2.5+3.5+4.5+5.5
]


# --- helpers -----------------------------------------------------------------------------------


def _questionnaire(instrument_id: str) -> dict[str, Any]:
    return catalog().get(instrument_id).questionnaire


def _questions(questionnaire: dict[str, Any]) -> list[dict[str, Any]]:
    """The answerable items at any depth (read-only items are the scores)."""
    return [
        i for i in walk_items(questionnaire["item"]) if not i.get("readOnly") and i["type"] not in ("display", "group")
    ]


def _score_items(instrument_id: str) -> dict[str, str]:
    """Scale id -> linkId of the read-only item holding LHC-Forms' computed score."""
    mapping = catalog().get(instrument_id).mapping
    return {s.id: s.questionnaire_item for s in mapping.scales if s.questionnaire_item}


def _scale_items(instrument_id: str) -> dict[str, list[str]]:
    """Scale id -> the linkIds it sums."""
    return {s.id: list(s.items) for s in catalog().get(instrument_id).mapping.scales}


def _option_for(instrument_id: str, link_id: str, value: str) -> tuple[str, str]:
    """(system, code) of the anchor whose scoring value is ``value`` (our key, not a column)."""
    spec = catalog().get(instrument_id).items[link_id]
    matches = [key for key, weight in spec.options.items() if weight == Decimal(value)]
    assert len(matches) == 1, f"{instrument_id} item {link_id}: no single anchor with value {value}"
    return matches[0]


def _number(raw: Any) -> Decimal:
    """An exported JSON number (int or float) or a displayed string as an exact Decimal."""
    assert isinstance(raw, int | float | str) and not isinstance(raw, bool), raw
    return Decimal(repr(raw)) if isinstance(raw, float) else Decimal(str(raw))


def _fill_by_ui(lhc: LhcPage, answers: AnswerSet) -> None:
    """Answer like a person: click the anchor's label, or type the VAS value and tab out."""
    for link_id, value in answers.answers.items():
        if catalog().get(answers.instrument).items[link_id].kind == "choice":
            system, code = _option_for(answers.instrument, link_id, value)
            lhc.option_label(link_id, system, code).click()
        else:
            box = lhc.field(link_id)
            box.click()
            box.fill(value)
            box.press("Tab")


def _response_for(answers: AnswerSet, *, stale_total: float | None = None) -> dict[str, Any]:
    """A QuestionnaireResponse carrying ``answers`` (for the API route)."""
    inst = catalog().get(answers.instrument)
    items: list[dict[str, Any]] = []
    for question in _questions(inst.questionnaire):
        link_id = question["linkId"]
        value = answers.answers[link_id]
        if inst.items[link_id].kind == "choice":
            system, code = _option_for(answers.instrument, link_id, value)
            option = next(o["valueCoding"] for o in question["answerOption"] if o["valueCoding"]["code"] == code)
            assert option["system"] == system
            answer: dict[str, Any] = {"valueCoding": {"system": system, "code": code, "display": option["display"]}}
        else:
            answer = {"valueDecimal": float(value)}
        items.append({"linkId": link_id, "text": question["text"], "answer": [answer]})
    if stale_total is not None:
        items.append({"linkId": "total", "answer": [{"valueDecimal": stale_total}]})
    return {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "questionnaire": inst.canonical,
        "item": items,
    }


def _with_our_canonical(qr: dict[str, Any], instrument_id: str) -> dict[str, Any]:
    """LHC-Forms' export, pointed at our ``url|version`` if LHC-Forms left out the version."""
    inst = catalog().get(instrument_id)
    exported = qr.get("questionnaire")
    # LHC-Forms writes the canonical of the form it rendered; it may drop "|version", never the url.
    assert exported in (inst.canonical, inst.url), f"exported questionnaire {exported!r} is not {inst.canonical}"
    return {**qr, "questionnaire": inst.canonical}


def _response_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every item of a response, depth first: nested under items (groups) or under answers (questions)."""
    found = []
    for item in items:
        found.append(item)
        found += _response_items(item.get("item", []))
        for answer in item.get("answer", []):
            found += _response_items(answer.get("item", []))
    return found


def _exported_scores(qr: dict[str, Any], score_items: dict[str, str]) -> dict[str, Decimal]:
    """The scores LHC-Forms wrote into the exported response (answers of the read-only items).

    The WAI-SR subscale items are children of the total item (SDC ``component`` extraction),
    so a valid R4 response carries them inside the total's answer: they are looked up there.
    """
    items = _response_items(qr.get("item", []))
    by_link = {item["linkId"]: item for item in items}
    assert len(by_link) == len(items), "a linkId appears twice in the exported response"
    scores = {}
    for scale_id, link_id in score_items.items():
        item = by_link.get(link_id)
        assert item and item.get("answer"), f"LHC-Forms exported no {scale_id} (item {link_id!r})"
        (answer,) = item["answer"]
        raw = answer.get("valueDecimal", answer.get("valueInteger"))
        scores[scale_id] = _number(raw)
    return scores


def _lhc_and_our_scores(
    lhc: LhcPage, instrument_id: str
) -> tuple[dict[str, Decimal], dict[str, Decimal], dict[str, Any]]:
    """LHC-Forms' scores (displayed and exported must agree), ours for its export, and the export.

    Also checks that the export is valid FHIR, is accepted by our scorer without proration, and
    that the scores LHC-Forms stored in it are the ones it displays.
    """
    score_items = _score_items(instrument_id)
    settled = lhc.stable_values(list(score_items.values()))
    shown = {scale: _number(settled[link_id]) for scale, link_id in score_items.items()}

    exported = lhc.export_response()
    assert _exported_scores(exported, score_items) == shown, "LHC-Forms exported other scores than it shows"
    qr = _with_our_canonical(exported, instrument_id)
    validate_resource(qr)  # LHC-Forms' export is valid FHIR (fhir.resources models, as for our own output)

    result = score_response(qr, catalog())  # accepted
    assert result.answered == result.item_count and not result.omitted
    assert result.rules_applied == (), "a complete response must not be prorated"
    ours = {s.scale.id: s.value for s in result.scores}
    # LHC-Forms computes the scales with a calculated item; the SRS family's line scores are single items
    # the form shows as answered (no calculated item): ours are checked against the hand-computed values
    assert set(shown) <= set(ours)
    assert all(len(_scale_items(instrument_id)[extra]) == 1 for extra in set(ours) - set(shown))
    # Our scorer re-computes the scores stored in the response and warns when they differ; the
    # only other warning would be a canonical without version, which _with_our_canonical rules out.
    assert not [w for w in result.warnings if not w.startswith("stored ")], result.warnings
    return shown, ours, exported


def _assert_scores_agree(lhc: LhcPage, answers: AnswerSet) -> dict[str, Any]:
    """(a) our scorer gives the hand-computed scores; (b) LHC-Forms' scores equal ours."""
    assert set(_score_items(answers.instrument)) <= set(answers.expected), "the answer set must state every scale"
    shown, ours, exported = _lhc_and_our_scores(lhc, answers.instrument)
    assert ours == answers.expected, f"our scorer gives {ours}, computed by hand {answers.expected}"  # (a)
    assert shown == {scale: ours[scale] for scale in shown}, (
        f"LHC-Forms computed {shown} from our Questionnaire, our scorer gives {ours}"
    )  # (b)
    return exported


def test_every_shipped_instrument_is_covered() -> None:
    """A new instrument must get a rendering test and a hand-computed answer set here."""
    shipped = sorted(i.id for i in catalog())
    assert sorted(INSTRUMENTS) == shipped
    assert sorted({a.instrument for a in UI_SETS}) == shipped


# --- rendering -----------------------------------------------------------------------------------


@pytest.mark.parametrize("instrument_id", INSTRUMENTS)
def test_every_item_renders_with_its_answer_options(lhc: LhcPage, instrument_id: str) -> None:
    questionnaire = _questionnaire(instrument_id)
    lhc.add_form(questionnaire)
    page = lhc.page

    assert questionnaire["title"] in page.locator(".lhc-form-title").inner_text()
    for question in _questions(questionnaire):
        link_id = question["linkId"]
        assert question["text"] in page.locator(f'[id="label-{lhc.dom_id(link_id)}"]').inner_text(), (
            f"item {link_id} text"
        )
        if question["type"] == "choice":
            options = question["answerOption"]
            item = page.locator(f'[id="item-{lhc.dom_id(link_id)}"]')
            assert item.locator('input[type="radio"]').count() == len(options), (
                f"item {link_id}: not one radio per option"
            )
            for option in options:
                coding = option["valueCoding"]
                label = lhc.option_label(link_id, coding["system"], coding["code"])
                assert label.count() == 1, f"item {link_id}: no label for {coding['code']}"
                # Exactly the anchor text: the scoring value is not shown to the client.
                assert label.inner_text().strip() == coding["display"]
        else:
            # VAS line: LHC-Forms does not support the slider itemControl and renders a number box.
            assert question["type"] == "decimal"
            box = lhc.field(link_id)
            assert box.is_visible() and box.is_editable(), f"item {link_id}: no editable input"
    score_items = {i["linkId"]: i for i in walk_items(questionnaire["item"]) if i.get("readOnly")}
    for link_id in _score_items(instrument_id).values():
        score = lhc.field(link_id)
        assert score.is_visible() and not score.is_editable(), f"score item {link_id} must be read-only"
        assert score.input_value() == "", "no score before any answer"
        assert score_items[link_id]["text"] in page.locator(f'[id="label-{lhc.dom_id(link_id)}"]').inner_text()
        # The unit LHC-Forms shows beside a score (questionnaire-unit, used by SDC extraction).
        assert page.locator(f'[id="unit_{lhc.dom_id(link_id)}"]').input_value() == "{score}"
    # Subscales render nested under the total (SDC component extraction needs that parent).
    total: dict[str, Any] = next((i for i in questionnaire["item"] if i["linkId"] == "total"), {})
    for child in total.get("item", []):
        assert lhc.dom_id(child["linkId"]) == f"{child['linkId']}/1/1"
        assert page.locator(f'[id="item-total/1"] [id="{lhc.dom_id(child["linkId"])}"]').count() == 1
    lhc.assert_clean()


# --- filling and scoring -----------------------------------------------------------------------


def _other_answer(answers: AnswerSet, link_id: str) -> str:
    """A different answer for ``link_id`` (the respondent's first choice, changed afterwards)."""
    spec = catalog().get(answers.instrument).items[link_id]
    if spec.kind == "choice":
        return str(next(v for v in sorted(spec.values) if v != Decimal(answers.answers[link_id])))
    return "5" if answers.answers[link_id] != "5" else "6"


@pytest.mark.parametrize("answers", UI_SETS, ids=lambda s: s.id)
def test_filled_by_ui_scores_agree(lhc: LhcPage, answers: AnswerSet) -> None:
    lhc.add_form(_questionnaire(answers.instrument))
    # First a complete form whose first answer the respondent then changes: LHC-Forms must agree
    # with our scorer on that first total too, and must recompute after the change.
    first = next(iter(answers.answers))
    draft = AnswerSet("draft", answers.instrument, {**answers.answers, first: _other_answer(answers, first)}, {})
    _fill_by_ui(lhc, draft)
    draft_shown, draft_ours, _ = _lhc_and_our_scores(lhc, answers.instrument)
    assert draft_shown == {scale: draft_ours[scale] for scale in draft_shown}, (
        f"LHC-Forms computed {draft_shown} from our Questionnaire, our scorer gives {draft_ours}"
    )
    before = lhc.field("total").input_value()
    _fill_by_ui(lhc, AnswerSet("change", answers.instrument, {first: answers.answers[first]}, {}))
    lhc.page.wait_for_function(
        "([id, old]) => document.getElementById(id).value !== old", arg=[lhc.dom_id("total"), before]
    )

    assert lhc.check_validity() is None
    exported = _assert_scores_agree(lhc, answers)
    # Each answer went in as scripted (no answer dropped or landed on a neighbouring option).
    got = {i["linkId"]: i["answer"][0] for i in exported["item"] if i["linkId"] in answers.answers}
    assert set(got) == set(answers.answers)
    for link_id, value in answers.answers.items():
        if "valueCoding" in got[link_id]:
            assert (got[link_id]["valueCoding"]["system"], got[link_id]["valueCoding"]["code"]) == _option_for(
                answers.instrument, link_id, value
            )
        else:
            assert _number(got[link_id]["valueDecimal"]) == Decimal(value)
    lhc.assert_clean()


def test_incomplete_vas_form_shows_no_total(lhc: LhcPage) -> None:
    """3 of 4 lines: LHC-Forms leaves the total blank and our scorer refuses (no VAS prorating)."""
    lhc.add_form(_questionnaire("srs"))
    _fill_by_ui(lhc, AnswerSet("partial", "srs", _series("7.3", "8", "9.5"), {}))
    lhc.page.wait_for_timeout(200)
    assert lhc.values(["1", "2", "3", "total"]) == {"1": "7.3", "2": "8", "3": "9.5", "total": ""}
    qr = _with_our_canonical(lhc.export_response(), "srs")
    with pytest.raises(ScoringError, match="too many missing answers"):
        score_response(qr, catalog())
    lhc.assert_clean()


def test_prorated_total_is_left_to_the_scorer(lhc: LhcPage) -> None:
    """11 of 12 WAI-SR items: the form shows no total (its expressions say "shown when all 12 items
    are answered"); our scorer prorates by the project rule. The Observation, not the form, carries it.
    """
    lhc.add_form(_questionnaire("wai-sr"))
    answers = dict(UI_SETS[0].answers)
    del answers["12"]  # a Task item
    _fill_by_ui(lhc, AnswerSet("partial", "wai-sr", answers, {}))
    lhc.stable_values(["bond", "goal"])
    assert lhc.values(["total", "task"]) == {"total": "", "task": ""}
    result = score_response(_with_our_canonical(lhc.export_response(), "wai-sr"), catalog())
    # Answered 5+4+3+2+1+5+4+3+2+1+5 = 35 over 11 items; 35 / 11 x 12 = 38.18... -> 38.2.
    assert result.total.value == Decimal("38.2") and result.total.prorated
    # Bond (3,5,7,9) 3+1+4+2 = 10 and Goal (4,6,8,11) 2+5+3+5 = 15, as LHC-Forms shows; no Task.
    assert (
        {s.scale.id: s.value for s in result.scores[1:]}
        == {"bond": 10, "goal": 15}
        == {k: _number(v) for k, v in lhc.values(["bond", "goal"]).items()}
    )
    assert result.omitted == ("task",)
    lhc.assert_clean()


@pytest.mark.parametrize("answers", API_SETS, ids=lambda s: s.id)
def test_loaded_by_api_scores_agree(lhc: LhcPage, answers: AnswerSet) -> None:
    """addFormToPage with the questionnaireResponse option; a stale stored total is recomputed."""
    lhc.add_form(_questionnaire(answers.instrument), _response_for(answers, stale_total=99))
    # The loaded answers are what the form shows.
    questions = _questions(_questionnaire(answers.instrument))
    choice = [q["linkId"] for q in questions if q["type"] == "choice"]
    assert lhc.page.locator("#formContainer input[type=radio]:checked").count() == len(choice)
    for link_id, value in answers.answers.items():
        if link_id in choice:
            system, code = _option_for(answers.instrument, link_id, value)
            assert lhc.option_label(link_id, system, code).locator("input[type=radio]").is_checked(), f"item {link_id}"
        else:
            assert _number(lhc.field(link_id).input_value()) == Decimal(value)
    _assert_scores_agree(lhc, answers)
    lhc.assert_clean()


# --- validation (negative) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("10.5", "less than or equal to 10"),  # beyond the 10 cm line
        ("-0.5", "greater than or equal to 0"),  # before its start
        ("7.35", "decimal place"),  # finer than the 1 mm the line is read to
    ],
)
def test_out_of_range_vas_value_is_invalid(lhc: LhcPage, typed: str, message: str) -> None:
    """LHC-Forms flags the value (it still exports it); our scorer refuses the response."""
    lhc.add_form(_questionnaire("srs"))
    _fill_by_ui(lhc, AnswerSet("bad", "srs", _series(typed, "8", "9.5", "6.2"), {}))
    problems = lhc.check_validity()
    assert problems, f"LHC-Forms accepted the VAS value {typed}"
    assert any(message in p for p in problems), problems
    qr = _with_our_canonical(lhc.export_response(), "srs")
    with pytest.raises(ScoringError, match=r"item '1'"):
        score_response(qr, catalog())
    lhc.assert_clean()


# --- text packs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instrument_id", "pack_file", "answers"),
    [
        ("srs", "srs-en.json", _series("7.3", "8", "9.5", "6.2")),
        ("wai-sr", "wai-sr-fr.json", _series(1, 5, 3, 3, 3, 3, 3, 3, 3, 3, 3, 5)),
    ],
)
def test_text_pack_wording_shows(lhc: LhcPage, instrument_id: str, pack_file: str, answers: dict[str, str]) -> None:
    """A licensed/translated text pack's wording is what LHC-Forms renders; scoring is unchanged."""
    pack = load_text_pack(TEXT_PACKS / pack_file)
    questionnaire = apply_text_packs(catalog().get(instrument_id), [pack])
    lhc.add_form(questionnaire)
    page = lhc.page

    if pack.title:
        assert pack.title in page.locator(".lhc-form-title").inner_text()
    shipped = {q["linkId"]: q["text"] for q in _questions(_questionnaire(instrument_id))}
    for link_id, text in pack.texts.items():
        label = page.locator(f'[id="label-{lhc.dom_id(link_id)}"]').inner_text()
        assert text in label and shipped[link_id] not in label, f"item {link_id}: {label!r}"
    for question in _questions(questionnaire):
        for option in question.get("answerOption", []):
            coding = option["valueCoding"]
            expected = pack.answers.get(coding["code"], coding["display"])
            assert (
                lhc.option_label(question["linkId"], coding["system"], coding["code"]).inner_text().strip() == expected
            )

    # The re-worded form still scores the same: fill it and compare as for the shipped form.
    # SRS: 7.3+8+9.5+6.2 = 31.0. WAI-SR: 1+5+3x9+5 = 38; Task (1,2,10,12) 1+5+3+5 = 14;
    # Bond (3,5,7,9) 3x4 = 12; Goal (4,6,8,11) 3x4 = 12.
    expected = (
        {"total": Decimal("31.0"), **_lines("7.3", "8", "9.5", "6.2")}
        if instrument_id == "srs"
        else {"total": Decimal(38), "task": Decimal(14), "bond": Decimal(12), "goal": Decimal(12)}
    )
    answer_set = AnswerSet("pack", instrument_id, answers, expected)
    _fill_by_ui(lhc, answer_set)
    _assert_scores_agree(lhc, answer_set)
    lhc.assert_clean()


# --- the docs screenshot -------------------------------------------------------------------------


def test_screenshot_of_a_filled_form(lhc: LhcPage, tmp_path: Path) -> None:
    """docs/img/wai-sr-lhc-forms.png; rewrite it with ALLIANCE_FHIR_UPDATE_SCREENSHOT=1."""
    answers = UI_SETS[0]
    lhc.add_form(_questionnaire(answers.instrument))
    _fill_by_ui(lhc, answers)
    lhc.stable_values(list(_score_items(answers.instrument).values()))
    shot = tmp_path / SCREENSHOT.name
    lhc.page.locator("#formContainer").screenshot(path=str(shot))
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    if UPDATE_SCREENSHOT:
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
    lhc.assert_clean()
