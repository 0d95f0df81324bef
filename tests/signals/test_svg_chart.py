"""The report's own SVG charts: sessions on the x axis, one y axis, gaps, a concern band, markers that never overlap."""

from __future__ import annotations

import re
from decimal import Decimal

from alliance_fhir.signals.svg_chart import Band, Chart, Line, Marker, chart_table, line_chart

D = Decimal


def srs_chart(**changes: object) -> Chart:
    """SRS 38, 37, (no score), 32, 37 over five sessions; a drop at 4, its repair at 5."""
    base: dict[str, object] = dict(
        title="SRS total by session",
        description="SRS total for sessions 1 to 5",
        sessions=5,
        y_min=0,
        y_max=40,
        lines=(Line("SRS total", (D(38), D(37), None, D(32), D(37))),),
        band=Band(0, 36, "level of concern: below 36"),
        markers=(Marker(4, "opened", "drop"), Marker(4, "opened", "below level"), Marker(5, "repaired", "repaired")),
        dates=("2026-11-01", "2026-11-08", "2026-11-15", "2026-11-22", "2026-11-29"),
    )
    base.update(changes)
    return Chart(**base)  # type: ignore[arg-type]


def test_the_x_axis_is_sessions_and_the_y_axis_the_scales_range():
    svg = line_chart(srs_chart())
    assert [f"Session {n}" for n in range(1, 6)] == re.findall(r">(Session \d+)</text>", svg)
    # one y axis: ticks at the declared minimum, middle and maximum (0, 20, 40), nothing else
    assert re.findall(r'text-anchor="end">(\d+)</text>', svg) == ["0", "20", "40"]
    assert svg.count("<svg") == 1 and 'role="img"' in svg and 'width="100%"' in svg and "viewBox" in svg
    assert "<title" in svg and "<desc" in svg and "<script" not in svg and "http" not in svg


def test_a_missed_session_is_a_gap_in_the_line():
    svg = line_chart(srs_chart())
    # sessions 1-2 and 4-5 are two separate polylines; session 3 has no point, only a "no score" column
    assert len(re.findall(r"<polyline ", svg)) == 2
    assert svg.count("<circle cx=") == 4 + 1  # four scores, plus the ring of the repair marker
    assert "Session 3: no score" in svg


def test_the_concern_band_covers_the_scale_below_the_cutoff():
    svg = line_chart(srs_chart())
    band = re.search(r'<rect x="44" y="([\d.]+)" width="500" height="([\d.]+)" fill="#f9d6d5">', svg)
    assert band is not None
    # plot area: y from 12 (value 40) to 190 (value 0), 178 units for 40 points; 36 sits at 12 + 178 * 4/40 = 29.8
    assert (float(band.group(1)), float(band.group(2))) == (29.8, 160.2)
    assert "level of concern: below 36" in svg


def test_markers_at_one_session_are_stacked_not_on_top_of_each_other():
    svg = line_chart(srs_chart())
    shapes = re.findall(r'<path d="M([\d.]+),([\d.]+)h', svg)
    # two markers opened at session 4 (x = 44 + 100 * 3.5 = 394, shape starts 6 to the left): two rows
    opened = [(float(x), float(y)) for x, y in shapes if float(x) == 388]
    assert len(opened) == 2 and opened[0][1] != opened[1][1]
    labels = re.findall(r'fill="#[0-9a-f]{6}">(drop|below level|repaired)</text>', svg)
    assert labels == ["drop", "below level", "repaired"]


def test_the_table_mirrors_the_chart():
    table = chart_table(srs_chart())
    rows = re.findall(r"<tr><td>(Session \d)</td><td>([\d-]+)</td><td>([^<]+)</td><td>([^<]*)</td></tr>", table)
    assert rows == [
        ("Session 1", "2026-11-01", "38", ""),
        ("Session 2", "2026-11-08", "37", ""),
        ("Session 3", "2026-11-15", "no score", ""),
        ("Session 4", "2026-11-22", "32", "drop; below level"),
        ("Session 5", "2026-11-29", "37", "repaired"),
    ]
    assert "<caption>SRS total by session</caption>" in table


def test_text_from_data_is_escaped_everywhere():
    hostile = "<img src=x onerror=alert(1)>"
    chart = srs_chart(title=hostile, description=hostile, lines=(Line(hostile, (D(30),) * 5),))
    for markup in (line_chart(chart), chart_table(chart)):
        assert "<img" not in markup and "&lt;img src=x onerror=alert(1)&gt;" in markup


def test_the_same_chart_is_the_same_bytes():
    assert line_chart(srs_chart()) == line_chart(srs_chart())


def test_many_sessions_turn_the_labels_and_keep_the_last():
    chart = srs_chart(sessions=30, lines=(Line("SRS total", tuple(D(30) for _ in range(30))),), markers=(), dates=())
    svg = line_chart(chart)
    assert 'transform="rotate(-45' in svg and ">Session 30</text>" in svg and ">Session 1</text>" in svg


def test_a_label_at_the_right_edge_goes_left_of_its_marker():
    svg = line_chart(srs_chart(markers=(Marker(5, "repaired", "repaired"),)))
    # session 5 of 5 sits at x = 494; the label would run past 560, so it ends at 484
    assert '<text x="484" text-anchor="end"' in svg
