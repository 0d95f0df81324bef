"""The client's alliance report in a 600 px EHR panel: Debian's headless Chromium renders the page.

The page is the one ``render_report("html", ...)`` writes (the CLI's ``report --out x.html`` and the
CDS card's link), for a hand-built client with a rupture: SRS 38, 38.5, 32, 33, 34 over five
sessions, each score with its four lines. In a 600 px wide viewport the page must fit without
horizontal scrolling, every chart must fit the column, and each chart's x axis must read
"Session 1" .. "Session 5" (sessions, not dates).

Run with ``pytest -m browser``; ``make browser-deps`` installs Chromium.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from alliance_fhir import load_catalog
from alliance_fhir.signals.names import Names
from alliance_fhir.signals.prompts import load_prompts
from alliance_fhir.signals.report import render_report
from alliance_fhir.signals.rules import detect_signals
from alliance_fhir.signals.trajectory import build_trajectories, context_from_encounters

from ..trajectory_builders import CLIENT, encounter, score_obs

pytestmark = pytest.mark.browser

PANEL = 600  # px: the EHR side panel the issue names
# (total, relationship, goals and topics, approach or method, overall): each total is the sum of its lines
SESSIONS = [
    (38.0, 9.5, 9.5, 9.5, 9.5),
    (38.5, 9.5, 9.5, 10.0, 9.5),
    (32.0, 9.0, 8.5, 6.5, 8.0),  # the rupture: down 6.5 from 38.5, approach or method fell most
    (33.0, 9.0, 8.5, 7.5, 8.0),
    (34.0, 9.0, 8.5, 8.5, 8.0),
]


def report_html() -> str:
    observations = [
        score_obs(
            "srs",
            total,
            day=day,
            subscales={"relationship": rel, "goals": goals, "approach": approach, "overall": overall},
        )
        for day, (total, rel, goals, approach, overall) in enumerate(SESSIONS, start=1)
    ]
    encounters = [encounter(CLIENT, day) for day in range(1, len(SESSIONS) + 1)]
    trajectories = build_trajectories(observations, load_catalog(), context_from_encounters(encounters))
    patient = {"resourceType": "Patient", "id": "c1", "name": [{"given": ["Robin"], "family": "Panel"}]}
    page = render_report(
        "html",
        trajectories,
        detect_signals(trajectories),
        subject=CLIENT,
        names=Names.from_resources([patient]),
        prompts=load_prompts(),
        as_of=datetime(2026, 11, 6, tzinfo=UTC),
    )
    return page.decode("utf-8")


def test_the_report_fits_a_600_px_panel_with_sessions_on_the_x_axis(browser: Any) -> None:
    html = report_html()
    assert "Alliance report: Robin Panel" in html and "Patient/c1" not in html  # the name, never the reference
    context = browser.new_context(viewport={"width": PANEL, "height": 900})
    try:
        page = context.new_page()
        left: list[str] = []  # the page is self-contained: any request out of it is a failure

        def refuse(route: Any) -> None:
            left.append(route.request.url)
            route.abort()

        page.route("**/*", refuse)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.set_content(html, wait_until="load")
        assert page.evaluate("document.documentElement.scrollWidth") <= PANEL
        charts = page.evaluate(
            """() => Array.from(document.querySelectorAll('svg')).map(svg => {
                const box = svg.getBoundingClientRect();
                const labels = Array.from(svg.querySelectorAll('text')).map(t => t.textContent.trim());
                return {left: box.left, right: box.right, width: box.width, labels: labels};
            })"""
        )
        assert charts, "the report draws no chart"
        for chart in charts:
            assert chart["left"] >= 0 and chart["right"] <= PANEL and chart["width"] > 0, chart
            axis = [label for label in chart["labels"] if re.fullmatch(r"Session \d+", label)]
            assert axis == [f"Session {n}" for n in range(1, len(SESSIONS) + 1)], chart["labels"]
            assert not any(re.fullmatch(r"\d{4}-\d{2}-\d{2}", label) for label in chart["labels"])  # no date axis
        assert left == [] and errors == []
    finally:
        context.close()
