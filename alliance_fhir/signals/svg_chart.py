"""Small accessible line charts as inline SVG: values by session number, for the HTML report.

Why our own: the report link must work on the base install (``make demo`` installs no plotting
library), and a report opened on a clinical workstation must load nothing from the network. So a
chart is plain SVG text inside the page: no script, no font or stylesheet from elsewhere.

What a chart shows (:class:`Chart`): one y axis with the scale's declared range, sessions on the
x axis ("Session 1" .. "Session N"), one or more lines (a missed session is a gap in the line), an
optional shaded band for the level of concern, and markers (where a signal opened, where a rupture
was repaired) in a lane under the plot, each with its own shape and a text label, packed so that
no marker or label covers another. Every chart has ``role="img"``, a ``<title>`` and a ``<desc>``,
and :func:`chart_table` gives the same data as a table for screen readers and for reading values.

Every string that reaches the markup is escaped (names and titles come from a server: data, never
markup). Output depends only on the input: the same chart is the same bytes.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

__all__ = ["Band", "Chart", "Line", "Marker", "chart_table", "line_chart", "number_text"]

MarkerShape = Literal["opened", "repaired"]

WIDTH = 560  # viewBox units; the page draws the chart at 100 % of a column at most ~700 px wide
FONT = 13  # viewBox units: >= 12 px wherever the column is at least 520 px wide (a 600 px panel)
_LEFT, _RIGHT, _TOP = 44, 16, 12
_LANE_ROW = 22  # height of one row of markers under the axis
_CHAR = 0.6  # average glyph width of a sans-serif font, in em, to keep labels apart
_COLOURS = ("#1f4e79", "#8a4b08", "#4a148c", "#00695c")
_DASHES = ("", "6 4", "2 3", "8 3 2 3")
_SHAPE_COLOUR = {"opened": "#b71c1c", "repaired": "#1b5e20"}


@dataclass(frozen=True, slots=True)
class Line:
    """One series of values; ``values[k]`` is session k+1, None where the session has no score (a gap)."""

    label: str
    values: tuple[Decimal | None, ...]


@dataclass(frozen=True, slots=True)
class Marker:
    """A signal at a session: ``opened`` (a downward triangle) or ``repaired`` (an upward triangle in a ring)."""

    session: int
    shape: MarkerShape
    label: str


@dataclass(frozen=True, slots=True)
class Band:
    """A shaded range of the y axis, e.g. the level of concern (values from ``low`` to ``high``)."""

    low: float
    high: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    """Everything one chart shows. ``sessions`` is N: the x axis runs from Session 1 to Session N."""

    title: str
    description: str
    sessions: int
    y_min: float
    y_max: float
    lines: tuple[Line, ...]
    band: Band | None = None
    markers: tuple[Marker, ...] = ()
    dates: tuple[str, ...] = ()  # dates[k]: the date of session k+1 (the table shows them)
    height: int = 220
    key: str = "chart"  # the element id prefix: unique within a page (the report numbers its charts)


def line_chart(chart: Chart) -> str:
    """The chart as one ``<svg>`` element for an HTML page (a string), responsive: ``viewBox`` and ``width="100%"``.

    No ``xmlns``: inline SVG in HTML needs none, and the page then names no URL at all.
    """
    plot_h = chart.height - _TOP - 30
    rows = _lane_rows(chart)
    tick_h = _tick_height(chart)
    total_h = _TOP + plot_h + tick_h + _lane_height(rows)
    frame = _Frame(chart, plot_h)
    parts = [
        f'<svg viewBox="0 0 {WIDTH} {total_h}" width="100%" '
        f'role="img" aria-labelledby="{_id(chart)}-t {_id(chart)}-d" font-family="sans-serif" font-size="{FONT}">',
        f'<title id="{_id(chart)}-t">{_e(chart.title)}</title>',
        f'<desc id="{_id(chart)}-d">{_e(chart.description)}</desc>',
    ]
    if chart.band is not None:
        parts.append(_band(frame, chart.band))
    parts += _missed(frame)
    parts += _y_axis(frame)
    parts += _x_axis(frame)
    for index, line in enumerate(chart.lines):
        parts += _line(frame, line, index)
    parts += _markers(frame, rows, _TOP + plot_h + tick_h)
    parts.append("</svg>")
    return "".join(parts)


def chart_table(chart: Chart, *, caption: str | None = None) -> str:
    """The chart's data as an HTML table: one row per session, one column per line, then the markers."""
    head = ["Session", *(["Date"] if chart.dates else []), *(line.label for line in chart.lines)]
    with_markers = bool(chart.markers)
    if with_markers:
        head.append("Signals")
    rows = []
    for number in range(1, chart.sessions + 1):
        cells = [f"Session {number}"]
        if chart.dates:
            cells.append(chart.dates[number - 1] if number <= len(chart.dates) else "")
        for line in chart.lines:
            value = line.values[number - 1] if number <= len(line.values) else None
            cells.append("no score" if value is None else number_text(value))
        if with_markers:
            cells.append("; ".join(m.label for m in chart.markers if m.session == number) or "")
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    header = "".join(f'<th scope="col">{_e(h)}</th>' for h in head)
    title = _e(caption if caption is not None else chart.title)
    return f"<table><caption>{title}</caption><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def number_text(value: Decimal) -> str:
    """A score as people write it: 36, 35.5 (never 36.0 or 3.6E+1)."""
    return format(value.normalize(), "f")


# ---- geometry --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Frame:
    """Where the plot area is and how values and sessions map into it."""

    chart: Chart
    plot_h: int

    @property
    def left(self) -> int:
        return _LEFT

    @property
    def right(self) -> int:
        return WIDTH - _RIGHT

    @property
    def bottom(self) -> int:
        return _TOP + self.plot_h

    def x(self, session: int) -> float:
        """Sessions sit in the middle of equal slots, so Session 1 and Session N keep room for labels."""
        slot = (self.right - self.left) / max(1, self.chart.sessions)
        return self.left + slot * (session - 0.5)

    def slot(self) -> float:
        return (self.right - self.left) / max(1, self.chart.sessions)

    def y(self, value: float) -> float:
        low, high = self.chart.y_min, self.chart.y_max
        share = 0.0 if high == low else (min(max(value, low), high) - low) / (high - low)
        return _TOP + self.plot_h * (1 - share)


def _band(frame: _Frame, band: Band) -> str:
    top, bottom = frame.y(band.high), frame.y(band.low)
    return (
        f'<rect x="{frame.left}" y="{_n(top)}" width="{frame.right - frame.left}" height="{_n(bottom - top)}" '
        f'fill="#f9d6d5"><title>{_e(band.label)}</title></rect>'
        f'<text x="{frame.right - 4}" y="{_n(bottom - 5)}" text-anchor="end" fill="#8e1b1b">{_e(band.label)}</text>'
    )


def _y_axis(frame: _Frame) -> list[str]:
    low, high = frame.chart.y_min, frame.chart.y_max
    ticks = [low, low + (high - low) / 2, high] if high > low else [low]
    out = [f'<line x1="{frame.left}" y1="{_TOP}" x2="{frame.left}" y2="{frame.bottom}" stroke="#555"/>']
    for tick in ticks:
        y = _n(frame.y(tick))
        out.append(f'<line x1="{frame.left}" y1="{y}" x2="{frame.right}" y2="{y}" stroke="#ddd"/>')
        out.append(f'<text x="{frame.left - 6}" y="{y}" dy="0.35em" text-anchor="end">{_e(_g(tick))}</text>')
    return out


def _x_labels_fit(chart: Chart) -> bool:
    slot = (WIDTH - _LEFT - _RIGHT) / max(1, chart.sessions)
    return slot >= FONT * _CHAR * len(f"Session {chart.sessions}") + 4


def _tick_height(chart: Chart) -> int:
    return 30 if _x_labels_fit(chart) else 80


def _x_axis(frame: _Frame) -> list[str]:
    chart = frame.chart
    out = [f'<line x1="{frame.left}" y1="{frame.bottom}" x2="{frame.right}" y2="{frame.bottom}" stroke="#555"/>']
    fits = _x_labels_fit(chart)
    step = 1 if fits else max(1, int(FONT * 1.3 // frame.slot()) + 1)  # rotated labels need a line height each
    for number in range(1, chart.sessions + 1):
        x = _n(frame.x(number))
        out.append(f'<line x1="{x}" y1="{frame.bottom}" x2="{x}" y2="{frame.bottom + 4}" stroke="#555"/>')
        if (number - 1) % step and number != chart.sessions:
            continue
        label = _e(f"Session {number}")
        if fits:
            out.append(f'<text x="{x}" y="{frame.bottom + 18}" text-anchor="middle">{label}</text>')
        else:
            y = frame.bottom + 10
            out.append(
                f'<text x="{x}" y="{y}" text-anchor="end" dy="0.35em" transform="rotate(-45 {x} {y})">{label}</text>'
            )
    return out


def _missed(frame: _Frame) -> list[str]:
    """A light column where no line has a value: a session without a score."""
    chart = frame.chart
    out = []
    for number in range(1, chart.sessions + 1):
        if chart.lines and all(_at(line, number) is None for line in chart.lines):
            slot = frame.slot()
            x = frame.x(number) - slot / 2
            out.append(
                f'<rect x="{_n(x)}" y="{_TOP}" width="{_n(slot)}" height="{frame.plot_h}" fill="#eeeeee">'
                f"<title>{_e(f'Session {number}: no score')}</title></rect>"
            )
    return out


def _at(line: Line, number: int) -> Decimal | None:
    return line.values[number - 1] if 0 < number <= len(line.values) else None


def _line(frame: _Frame, line: Line, index: int) -> list[str]:
    colour, dash = _COLOURS[index % len(_COLOURS)], _DASHES[index % len(_DASHES)]
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    out = []
    run: list[str] = []
    for number in range(1, frame.chart.sessions + 2):  # one past the end closes the last run
        value = _at(line, number) if number <= frame.chart.sessions else None
        if value is None:
            if len(run) > 1:
                out.append(
                    f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}" stroke-width="2"{dash_attr}/>'
                )
            run = []
            continue
        x, y = _n(frame.x(number)), _n(frame.y(float(value)))
        run.append(f"{x},{y}")
        what = f"{line.label}, Session {number}: {number_text(value)}"
        out.append(f'<circle cx="{x}" cy="{y}" r="3.5" fill="{colour}"><title>{_e(what)}</title></circle>')
    return out


def _lane_rows(chart: Chart) -> dict[int, int]:
    """Row of each marker in the lane: the first row where its shape and label overlap no other."""
    taken: list[list[tuple[float, float]]] = []
    rows: dict[int, int] = {}
    slot = (WIDTH - _LEFT - _RIGHT) / max(1, chart.sessions)
    for index, marker in enumerate(chart.markers):
        x = _LEFT + slot * (marker.session - 0.5)
        width = 18 + FONT * _CHAR * len(marker.label)
        span = (x - width, x + 8) if _label_left(x, marker) else (x - 8, x + width)
        for row, spans in enumerate(taken):
            if all(span[1] <= a or span[0] >= b for a, b in spans):
                spans.append(span)
                rows[index] = row
                break
        else:
            taken.append([span])
            rows[index] = len(taken) - 1
    return rows


def _label_left(x: float, marker: Marker) -> bool:
    """A label that would run past the right edge goes on the marker's left."""
    return x + 18 + FONT * _CHAR * len(marker.label) > WIDTH - 2


def _lane_height(rows: dict[int, int]) -> int:
    return (max(rows.values()) + 1) * _LANE_ROW + 6 if rows else 4


def _markers(frame: _Frame, rows: dict[int, int], lane_top: int) -> list[str]:
    out = []
    for index, marker in enumerate(frame.chart.markers):
        x = frame.x(marker.session)
        y = lane_top + rows[index] * _LANE_ROW + _LANE_ROW / 2
        colour = _SHAPE_COLOUR[marker.shape]
        if rows[index] == min(r for i, r in rows.items() if frame.chart.markers[i].session == marker.session):
            # one guide per session, from the plot down to the lane: it never crosses a marker
            out.append(
                f'<line x1="{_n(x)}" y1="{_TOP}" x2="{_n(x)}" y2="{_n(y - 8)}" stroke="{colour}" '
                'stroke-width="1" stroke-dasharray="2 3"/>'
            )
        if marker.shape == "opened":  # a downward triangle: something fell or opened here
            shape = f'<path d="M{_n(x - 6)},{_n(y - 5)}h12l-6,11z" fill="{colour}"/>'
        else:  # an upward triangle in a ring: back up, repaired
            shape = (
                f'<circle cx="{_n(x)}" cy="{_n(y)}" r="7" fill="none" stroke="{colour}" stroke-width="1.5"/>'
                f'<path d="M{_n(x - 4)},{_n(y + 3)}h8l-4,-7z" fill="{colour}"/>'
            )
        left = _label_left(x, marker)
        anchor = f'x="{_n(x - 10)}" text-anchor="end"' if left else f'x="{_n(x + 10)}"'
        text = f'<text {anchor} y="{_n(y)}" dy="0.35em" fill="{colour}">{_e(marker.label)}</text>'
        out.append(f"<g>{shape}{text}</g>")
    return out


def _id(chart: Chart) -> str:
    return "".join(ch for ch in chart.key if ch.isalnum() or ch == "-") or "chart"


def _n(value: float) -> str:
    """A coordinate with at most one decimal: short, and the same text for the same value."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _g(value: float) -> str:
    return f"{value:g}"


def _e(text: str) -> str:
    return html.escape(text, quote=True)
