"""The client report (PNG + self-contained HTML) and the practitioner's caseload view."""

from __future__ import annotations

import io
import re
import struct
from decimal import Decimal
from pathlib import Path

import pytest
from matplotlib.image import imread

from alliance_fhir import load_catalog
from alliance_fhir.signals.report import (
    PANEL_HEIGHT_IN,
    PANEL_WIDTH_IN,
    practitioner_overview,
    render_client_html,
    render_client_png,
    render_practitioner_html,
)
from alliance_fhir.signals.rules import detect_signals
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


def test_png_has_one_panel_per_instrument_plus_the_gap_panel(example):
    trajectories, signals = example
    data = render_client_png(trajectories, signals, CLIENT)
    # instruments: srs, wai-sr, ors, pair-client, pair-therapist = 5 panels, plus 1 client-vs-therapist panel
    # 10 in x 100 dpi = 1000 px wide; 6 x 3.2 in x 100 dpi = 1920 px high
    assert (PANEL_WIDTH_IN, PANEL_HEIGHT_IN) == (10.0, 3.2)
    assert png_size(data) == (1000, 1920)
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


def test_html_is_self_contained(example):
    trajectories, signals = example
    page = render_client_html(trajectories, signals, CLIENT)
    assert page.startswith("<!DOCTYPE html>")
    assert re.search(r"https?://", page) is None
    assert "<script" not in page and "<link" not in page
    assert page.count('src="data:image/png;base64,') == 1
    for text in (
        "Alliance rupture",
        "Early alliance warning",
        "Low alliance",
        "Client-therapist alliance gap",
        "resolved",
    ):
        assert text in page


def test_html_escapes_what_it_shows(catalog):
    subject = 'Patient/<b>"x"&y'
    trajectories = build_trajectories(series_obs("srs", [35], subject=subject), catalog)
    page = render_client_html(trajectories, detect_signals(trajectories), subject)
    assert "<b>" not in page and "Patient/&lt;b&gt;&quot;x&quot;&amp;y" in page


def test_scores_table_lists_every_counted_session(example):
    trajectories, signals = example
    page = render_client_html(trajectories, signals, CLIENT)
    # SRS sessions 1, 2, 3 and 5 (4 had no score): the table numbers sessions, not scores
    srs_rows = re.findall(r"<tr><td>srs</td><td>[^<]*</td><td>(\d+)</td>", page)
    assert srs_rows == ["1", "2", "3", "5"]
    assert "task 13, bond 14, goal 13" in page


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
    page = render_practitioner_html(rows, THERAPIST)
    assert re.search(r"https?://", page) is None
    assert "<td>-1.5</td><td>falling</td>" in page and "<td>+1</td><td>rising</td>" in page
    assert "Alliance rupture, Early alliance warning" in page and "Patient/c3" not in page


def test_overview_single_session_and_stable(catalog):
    obs = series_obs("srs", [38]) + series_obs("srs", [37, 37], subject="Patient/c2")
    trajectories = build_trajectories(obs, catalog)
    rows = practitioner_overview(trajectories, [], THERAPIST)
    assert [(r.subject, r.change, r.trend) for r in rows] == [
        (CLIENT, None, "-"),
        ("Patient/c2", Decimal("0"), "stable"),
    ]
    assert "<td>-</td><td>-</td>" in render_practitioner_html(rows, THERAPIST)
    assert "No clients" in render_practitioner_html([], THERAPIST)
