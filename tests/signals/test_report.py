"""The client report (self-contained HTML with its own charts; PNG with matplotlib) and the caseload view."""

from __future__ import annotations

import io
import re
import struct
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from matplotlib.image import imread

from alliance_fhir import load_catalog
from alliance_fhir.signals.names import Names
from alliance_fhir.signals.report import practitioner_overview, render_client_html, render_practitioner_html
from alliance_fhir.signals.report_images import PANEL_HEIGHT_IN, PANEL_WIDTH_IN, render_client_png
from alliance_fhir.signals.rules import detect_signals
from alliance_fhir.signals.situations import current_situations
from alliance_fhir.signals.trajectory import build_trajectories, context_from_encounters

from ..trajectory_builders import CLIENT, THERAPIST, encounter, score_obs, series_obs

PAIR = Path(__file__).resolve().parents[1] / "fixtures" / "alliance-pair"


@pytest.fixture(scope="module")
def example():
    """SRS with a rupture and a repair, WAI-SR with subscales, ORS, and a client/therapist pair."""
    catalog = load_catalog([PAIR])
    obs = series_obs("srs", [36.5, 34.0, 37.5, None, 38.5])
    subscales: list[dict[str, float]] = [
        dict(task=13, bond=14, goal=13),
        dict(task=14, bond=15, goal=15),
        dict(task=12, bond=15, goal=12),
    ]
    obs += [score_obs("wai-sr", sum(s.values()), day=d, subscales=s) for d, s in enumerate(subscales, start=1)]
    obs += series_obs("ors", [18.2, 19.0, 21.5])
    obs += series_obs("pair-client", [16, 17])
    obs += [score_obs("pair-therapist", v, day=d, focus=None, performer=THERAPIST) for d, v in ((1, 12), (2, 16))]
    context = context_from_encounters([encounter(CLIENT, d) for d in range(1, 6)])
    trajectories = build_trajectories(obs, catalog, context)
    return trajectories, detect_signals(trajectories)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # IHDR: the first chunk, after length and type
    return width, height


def ink(data: bytes) -> float:
    """Share of pixels that are not white."""
    pixels = imread(io.BytesIO(data))[:, :, :3]
    return float((pixels.sum(axis=2) < 2.9).mean())


def test_png_has_one_panel_per_instrument_one_for_the_parts_and_the_gap_panel(example):
    trajectories, signals = example
    data = render_client_png(trajectories, signals, CLIENT)
    # instruments: srs, wai-sr, ors, pair-client, pair-therapist = 5 panels, WAI-SR's parts in a panel of their
    # own (no second y axis), plus 1 client-vs-therapist panel: 7
    # 10 in x 100 dpi = 1000 px wide; 7 x 3.2 in x 100 dpi = 2240 px high
    assert (PANEL_WIDTH_IN, PANEL_HEIGHT_IN) == (10.0, 3.2)
    assert png_size(data) == (1000, 2240)
    assert ink(data) > 0.02


def test_png_size_follows_dpi_and_is_deterministic(catalog):
    trajectories = build_trajectories(series_obs("srs", [38, 36.5, 38]), catalog)
    signals = detect_signals(trajectories)
    small = render_client_png(trajectories, signals, CLIENT, dpi=50)
    # one panel: 10 x 50 = 500 by 3.2 x 50 = 160
    assert png_size(small) == (500, 160)
    assert render_client_png(trajectories, signals, CLIENT, dpi=50) == small


def test_png_for_a_client_without_scores_says_so(catalog):
    data = render_client_png(build_trajectories([], catalog), [], "Patient/nobody")
    assert png_size(data) == (1000, 320)
    assert 0 < ink(data) < 0.05  # the sentence only


# ---- the HTML report (base install: no matplotlib) --------------------------------------------------

NAMES = Names({CLIENT: "Robin Rupture", THERAPIST: "Dana Therapist", "Patient/c2": "Jo Partner"})
AS_OF = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def rupture(catalog):
    """SRS 38, 38.5, (session 3 without a score), 32, 39 with one therapist.

    Session 4: 38.5 -> 32 is a drop of 6.5 (rupture) and 32 is below 36 (low alliance); session 5:
    39 is back above the pre-rupture 38.5 (repaired) and above 36 (the low alliance is over).
    """
    obs = series_obs("srs", [38, 38.5, None, 32, 39])
    context = context_from_encounters([encounter(CLIENT, d) for d in range(1, 6)])
    trajectories = build_trajectories(obs, catalog, context)
    return trajectories, detect_signals(trajectories)


def page_of(trajectories, signals, subject=CLIENT, **kwargs) -> str:
    return render_client_html(trajectories, signals, subject, names=kwargs.pop("names", NAMES), as_of=AS_OF, **kwargs)


def test_the_title_names_the_client_and_no_reference_appears(rupture):
    page = page_of(*rupture)
    assert "<title>Alliance report: Robin Rupture</title>" in page and "<h1>Alliance report: Robin Rupture</h1>" in page
    assert "Dana Therapist" in page
    for engineer_word in ("Patient/", "PractitionerRole/", "Encounter/", "Observation/", "C2", ">=", "episode"):
        assert engineer_word not in page
    assert '<p class="asof">As of 2026-12-01.</p>' in page


def test_without_names_the_page_says_this_client(rupture):
    page = page_of(*rupture, names=Names())
    assert "<h1>Alliance report: this client</h1>" in page and "Patient/c1" not in page


def test_the_chart_runs_by_session_and_the_table_mirrors_it(rupture):
    page = page_of(*rupture)
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) == 1 and svgs[0].count("<title id=") == 1  # SRS has no parts: one chart, with its title
    assert re.findall(r">(Session \d)</text>", svgs[0]) == [f"Session {n}" for n in range(1, 6)]
    rows = re.findall(r"<tr><td>(Session \d)</td><td>(2026-11-0\d)</td><td>([^<]+)</td><td>([^<]*)</td></tr>", page)
    assert rows == [
        ("Session 1", "2026-11-01", "38", ""),
        ("Session 2", "2026-11-02", "38.5", ""),
        ("Session 3", "2026-11-03", "no score", ""),
        ("Session 4", "2026-11-04", "32", "below level; drop"),
        ("Session 5", "2026-11-05", "39", "repaired"),
    ]
    assert "level of concern: below 36" in page  # the shaded band, from the instrument's authors' cutoff


def test_the_page_shows_the_situation_the_card_shows_and_the_history(rupture):
    page = page_of(*rupture)
    # the repair at the latest session, as the card says it: back to 39 at session 5 after the low of 32 at session 4
    assert "SRS back to 39 at session 5 after falling to 32 at session 4. Alliance repaired." in page
    assert "For information" in page
    assert "Alliance rupture: fell to 32 at session 4, from 38.5 at session 2; repaired at session 5 (39)." in page
    history = page.split("<h2>History</h2>", 1)[1]
    assert "<td>Session 4 (2026-11-04)</td><td>Session 5 (2026-11-05)</td>" in history


class Prompt:
    def __init__(self, text: str) -> None:
        self.text, self.source, self.whose = text, "Safran & Muran (2000)", "literature"


class Prompts:
    def situation(self, fact: str) -> Prompt | None:
        return Prompt(f"ask about the {fact}") if fact == "repair" else None

    def part(self, part: str) -> Prompt | None:
        return None


def test_a_prompt_set_adds_what_to_ask(rupture):
    assert "To ask:" not in page_of(*rupture)
    page = page_of(*rupture, prompts=Prompts())
    assert "<p>To ask: ask about the repair</p>" in page and "Safran &amp; Muran (2000)" in page


def test_the_split_shows_the_other_members_highest_score_but_never_who(catalog):
    """A couple in two joint sessions: c1 rates 30 and 31, the partner 38 and 37 (8 and 6 above: a split, 5 or more)."""
    obs = [score_obs("srs", v, day=d, encounter=f"Encounter/joint-{d}") for d, v in ((1, 30), (2, 31))]
    obs += [
        score_obs("srs", v, day=d, subject="Patient/c2", encounter=f"Encounter/joint-{d}")
        for d, v in ((1, 38), (2, 37))
    ]
    trajectories = build_trajectories(obs, catalog)
    signals = detect_signals(trajectories)
    page = page_of(trajectories, signals)
    assert "Split alliance: rated the joint session lower than the other members, from session 1" in page
    joint = page.split("<h3>Joint sessions</h3>", 1)[1]
    rows = re.findall(r"<tr><td>(Session \d)</td><td>[\d-]+</td><td>(\d+)</td><td>(\d+)</td></tr>", joint)
    assert rows == [("Session 1", "30", "38"), ("Session 2", "31", "37")]
    assert "Highest of the other members" in joint
    assert "Jo Partner" not in page and "Patient/c2" not in page


def test_parts_are_small_multiples_on_one_range(catalog):
    subscales: list[dict[str, float]] = [dict(task=13, bond=14, goal=13), dict(task=9, bond=15, goal=12)]
    obs = [score_obs("wai-sr", sum(s.values()), day=d, subscales=s) for d, s in enumerate(subscales, start=1)]
    trajectories = build_trajectories(obs, catalog)
    page = page_of(trajectories, detect_signals(trajectories))
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) == 4  # the total (12 to 60), then task, bond, goal each on 4 to 20
    assert re.findall(r'text-anchor="end">(\d+)</text>', svgs[0]) == ["12", "36", "60"]
    for svg in svgs[1:]:
        assert re.findall(r'text-anchor="end">(\d+)</text>', svg) == ["4", "12", "20"]
    assert "WAI-SR Task" in page and "<td>9</td>" in page  # the task part at session 2, in its table


def test_text_from_the_server_is_escaped(catalog):
    hostile = "<img src=x onerror=alert(1)>"
    trajectories = build_trajectories(series_obs("srs", [35]), catalog)
    page = page_of(trajectories, detect_signals(trajectories), names=Names({CLIENT: hostile, THERAPIST: hostile}))
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_the_page_is_self_contained_and_the_same_bytes_for_the_same_data(rupture, example):
    for trajectories, signals in (rupture, example):
        page = page_of(trajectories, signals)
        assert page.startswith("<!DOCTYPE html>")
        assert re.search(r"https?://", page) is None
        assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
        assert page == page_of(trajectories, signals)


def test_the_page_is_made_for_a_600_px_panel(rupture):
    page = page_of(*rupture)
    css = re.search(r"<style>(.*?)</style>", page, re.S)
    assert css is not None
    assert "max-width:46rem" in css.group(1) and "table-layout:fixed" in css.group(1)
    assert "overflow-wrap:anywhere" in css.group(1) and "svg{display:block;width:100%" in css.group(1)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page


def test_the_html_report_does_not_import_matplotlib():
    probe = (
        "import sys\n"
        "sys.modules['matplotlib'] = None\n"
        "from alliance_fhir.signals.report import render_report\n"
        "from alliance_fhir.service.cds import CdsService\n"
        "print(any(m.startswith('matplotlib') and sys.modules[m] for m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert run.stdout.strip() == "False"


def test_the_gap_chart_puts_client_and_therapist_side_by_side(example):
    trajectories, signals = example
    page = page_of(trajectories, signals)
    gap = page.split("<h2>Client and therapist ratings, with Dana Therapist</h2>", 1)[1]
    # pair-client (range 4-20): 16 -> 12/16 = 75 %, 17 -> 13/16 = 81.25 -> 81.3 %;
    # pair-therapist (range 3-21): 12 -> 9/18 = 50 %, 16 -> 13/18 = 72.2 %
    rows = re.findall(r"<tr><td>(Session \d)</td><td>[\d-]+</td><td>([\d.]+)</td><td>([\d.]+)</td>", gap)
    assert rows == [("Session 1", "75", "50"), ("Session 2", "81.3", "72.2")]


def test_practitioner_overview(catalog):
    obs = series_obs("srs", [38, 36.5])  # c1: rupture + early warning open, last change -1.5
    obs += series_obs("srs", [37, 38], subject="Patient/c2")  # c2: rising, nothing open
    obs += series_obs("srs", [30], subject="Patient/c3", focus="PractitionerRole/other")  # another therapist's client
    obs += series_obs("ors", [20, 21])  # outcome, not alliance: not listed
    trajectories = build_trajectories(obs, catalog)
    rows = practitioner_overview(trajectories, detect_signals(trajectories), THERAPIST)
    assert [(r.subject, r.instrument, r.sessions, r.latest, r.change, r.trend, r.open_signals) for r in rows] == [
        (CLIENT, "srs", 2, Decimal("36.5"), Decimal("-1.5"), "falling", ("alliance-rupture", "early-alliance-warning")),
        ("Patient/c2", "srs", 2, Decimal("38"), Decimal("1"), "rising", ()),
    ]
    names = Names({CLIENT: "Robin Rupture", "Patient/c2": "Cam Second", THERAPIST: "Dana Therapist"})
    situations = [s for s in current_situations(detect_signals(trajectories), trajectories, on_track=False)]
    page = render_practitioner_html(rows, THERAPIST, names=names, situations=situations)
    assert re.search(r"https?://", page) is None
    assert "<h1>Alliance caseload: Dana Therapist</h1>" in page
    assert "<td>Robin Rupture</td><td>SRS</td><td>2</td><td>36.5</td><td>2026-11-02</td><td>-1.5</td>" in page
    assert (
        "<td>Cam Second</td><td>SRS</td><td>2</td><td>38</td><td>2026-11-02</td><td>+1</td><td>nothing open</td>"
        in page
    )
    # c1's situation as its card says it: 36.5 at session 2, 1.5 down from 38 at session 1, in the first sessions
    assert "SRS 36.5 at session 2, down 1.5 from 38 in 1 session; in the first sessions. Moderate concern." in page
    assert "Patient/" not in page and "PractitionerRole/" not in page


def test_overview_single_session_and_stable(catalog):
    obs = series_obs("srs", [38]) + series_obs("srs", [37, 37], subject="Patient/c2")
    trajectories = build_trajectories(obs, catalog)
    rows = practitioner_overview(trajectories, [], THERAPIST)
    assert [(r.subject, r.change, r.trend) for r in rows] == [
        (CLIENT, None, "-"),
        ("Patient/c2", Decimal("0"), "stable"),
    ]
    assert "<td>1</td><td>38</td><td>2026-11-01</td><td>-</td>" in render_practitioner_html(rows, THERAPIST)
    assert "No clients" in render_practitioner_html([], THERAPIST)
