"""Draw the documentation's screenshots of the CDS cards and the client report, from the demo caseload.

The docs show what a clinician sees; these images are made from the code, not by hand, so they
can be redrawn whenever the cards or the report change::

    PYTHONPATH=$PWD .venv/bin/python scripts/screenshots.py            # writes docs/img/*.png

Offline and pure until the browser: the demo caseload (``alliance_fhir.server.demo``) is scored
locally, as ``alliance-fhir signals FILE`` would, with the people's names from the demo's Patient
and Practitioner resources and the packaged English prompts. No FHIR server is needed.

- the cards (``alliance_cards``) of ``afdemo-couple-b`` and ``afdemo-rupture`` in a 560 px panel,
  laid out the way an EHR shows a card (indicator, summary, detail, source, link). The detail is
  rendered with markdown-it-py (CommonMark, which the card text is escaped for; raw HTML off):
  Python-Markdown would not read every CommonMark backslash escape and would show stray ``\\``;
- the client report (``render_report("html", ...)``) of both clients at 600 px.

Chromium is Debian's ``/usr/bin/chromium`` (``make browser-deps``; ``ALLIANCE_FHIR_CHROMIUM``
overrides it), driven by Playwright; Playwright never downloads a browser here. Every request
that leaves the page is aborted, so the shots show only what the page itself carries.
"""

from __future__ import annotations

import argparse
import html
import os
import sys
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt
from playwright.sync_api import Route, sync_playwright

from alliance_fhir import build_observation, load_catalog, score_response
from alliance_fhir.server.demo import demo_resources
from alliance_fhir.signals.cards import alliance_cards
from alliance_fhir.signals.names import Names
from alliance_fhir.signals.prompts import load_prompts
from alliance_fhir.signals.report import render_report
from alliance_fhir.signals.rules import Signal, detect_signals
from alliance_fhir.signals.trajectory import Trajectories, build_trajectories, context_from_encounters

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("ALLIANCE_FHIR_CHROMIUM", "/usr/bin/chromium"))
CLIENTS = {"couple-b": "Patient/afdemo-couple-b", "rupture": "Patient/afdemo-rupture"}
CARD_PANEL_PX = 560
REPORT_PX = 600
TIMEOUT_MS = 15_000
# The link target is irrelevant in a still image; a fixed one keeps the pictures reproducible.
REPORT_LINK = "https://alliance.example.org/cds-report?token=..."

_PANEL_CSS = """
body { margin: 0; background: #f3f4f6; font: 14px/1.45 system-ui, sans-serif; color: #1f2937; }
.panel { width: %(width)dpx; box-sizing: border-box; padding: 12px; }
.card { background: #fff; border: 1px solid #d1d5db; border-left: 6px solid var(--c);
        border-radius: 4px; padding: 10px 12px; margin-bottom: 12px; }
.card.warning { --c: #d97706; } .card.info { --c: #2563eb; } .card.critical { --c: #dc2626; }
.indicator { font-size: 11px; text-transform: uppercase; letter-spacing: .05em; color: var(--c); }
.summary { font-weight: 600; margin: 2px 0 8px; }
.detail p { margin: 6px 0; } .detail ul { margin: 6px 0; padding-left: 20px; }
.detail table { border-collapse: collapse; margin: 6px 0; font-size: 13px; }
.detail th, .detail td { border: 1px solid #d1d5db; padding: 2px 8px; text-align: left; }
.source { font-size: 12px; color: #6b7280; margin-top: 8px; }
.link { display: inline-block; margin-top: 8px; padding: 4px 10px; border: 1px solid #2563eb;
        border-radius: 4px; color: #2563eb; text-decoration: none; font-size: 13px; }
"""


def demo_caseload() -> tuple[Trajectories, list[Signal], Names]:
    """The demo caseload scored offline: its trajectories, signals and the people's names."""
    catalog = load_catalog()
    observations: list[dict[str, Any]] = []
    encounters: list[dict[str, Any]] = []
    people: list[dict[str, Any]] = []
    for resource in demo_resources(catalog):
        kind = resource["resourceType"]
        if kind == "Encounter":
            encounters.append(resource)
        elif kind in ("Patient", "Practitioner"):
            people.append(resource)
        elif kind == "QuestionnaireResponse":
            observation = build_observation(score_response(resource, catalog), resource)
            observations.append(dict(observation, id=f"obs-{resource['id']}"))
    trajectories = build_trajectories(observations, catalog, context_from_encounters(encounters))
    return trajectories, detect_signals(trajectories), Names.from_resources(people)


def cards_page(cards: list[dict[str, Any]]) -> str:
    """The cards as an EHR side panel shows them; every text is escaped or rendered without raw HTML."""
    renderer = MarkdownIt("commonmark", {"html": False}).enable("table")
    blocks = []
    for card in cards:
        indicator = html.escape(card["indicator"])
        link = "".join(f'<a class="link" href="#">{html.escape(item["label"])}</a>' for item in card.get("links", []))
        blocks.append(
            f'<div class="card {indicator}"><div class="indicator">{indicator}</div>'
            f'<div class="summary">{html.escape(card["summary"])}</div>'
            f'<div class="detail">{renderer.render(card.get("detail", ""))}</div>'
            f'<div class="source">Source: {html.escape(card["source"]["label"])}</div>{link}</div>'
        )
    css = _PANEL_CSS % {"width": CARD_PANEL_PX}
    return f'<!doctype html><meta charset="utf-8"><style>{css}</style><div class="panel">{"".join(blocks)}</div>'


def shoot(pages: dict[Path, tuple[str, int]]) -> None:
    """Render each HTML page at its width in Chromium and save a full-page PNG."""
    if not CHROMIUM.exists():
        raise SystemExit(f"error: no Chromium at {CHROMIUM} (run `make browser-deps`)")
    with sync_playwright() as manager:
        browser = manager.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            for out, (content, width) in pages.items():
                page = browser.new_page(viewport={"width": width, "height": 400}, device_scale_factor=1)
                page.set_default_timeout(TIMEOUT_MS)
                page.route("**/*", _abort)
                page.set_content(content, wait_until="load")
                page.screenshot(path=str(out), full_page=True)
                page.close()
                print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
        finally:
            browser.close()


def _abort(route: Route) -> None:
    route.abort()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img", help="folder for the PNGs")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    trajectories, signals, names = demo_caseload()
    prompts = load_prompts()
    pages: dict[Path, tuple[str, int]] = {}
    for short, patient in CLIENTS.items():
        cards = alliance_cards(
            signals, trajectories, patient, report_link=lambda _ref: REPORT_LINK, names=names, prompts=prompts
        )
        if not cards:
            print(f"error: no card for {patient}: the demo caseload changed", file=sys.stderr)
            return 1
        pages[args.out / f"cards-{short}.png"] = (cards_page(cards), CARD_PANEL_PX + 24)
        report = render_report("html", trajectories, signals, subject=patient, names=names, prompts=prompts)
        pages[args.out / f"report-{short}-600.png"] = (report.decode("utf-8"), REPORT_PX)
    shoot(pages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
