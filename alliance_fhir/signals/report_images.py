"""Reports for clinicians: a client's trajectories and a practitioner's caseload, each as a
self-contained HTML page or as a PNG, SVG or PDF (:data:`REPORT_FORMATS`, :func:`render_report`).

Input is plain data (:class:`~alliance_fhir.signals.trajectory.Trajectories` and
:class:`~alliance_fhir.signals.Signal`), so the same report works from local Observation files
and from a server. Plots use matplotlib's object API on an Agg canvas (no pyplot global state,
no display, safe in a server); the HTML embeds the PNG as a data URI and loads nothing from the
network, because reports are opened on clinical workstations and carry patient data. Image
output carries no creation date or software version, so the same data give the same bytes.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from . import MISSING_MATPLOTLIB

try:
    from matplotlib import rc_context
    from matplotlib.axes import Axes
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator
except ModuleNotFoundError as exc:  # an optional extra: say how to get it, not just "No module named"
    raise ModuleNotFoundError(MISSING_MATPLOTLIB, name=exc.name) from exc

from .rules import EARLY_WARNING, GAP, LOW_ALLIANCE, RUPTURE, SIGNAL_KINDS, SPLIT, Signal, percent_of_maximum
from .trajectory import ScorePoint, Series, Trajectories

__all__ = [
    "REPORT_FORMATS",
    "OverviewRow",
    "practitioner_overview",
    "render_client_html",
    "render_client_png",
    "render_practitioner_html",
    "render_report",
]

REPORT_FORMATS = ("html", "png", "svg", "pdf")
"""What ``report --out`` writes, chosen by the file's suffix."""
# No dates or versions in the files: the same report is the same bytes (and leaks nothing about the host).
_METADATA: dict[str, dict[str, str | None]] = {
    "png": {"Software": None},
    "svg": {"Date": None, "Creator": None},
    "pdf": {"CreationDate": None, "Creator": None, "Producer": None},
}

PANEL_WIDTH_IN = 10.0
PANEL_HEIGHT_IN = 3.2
_COLOURS = ["#1f4e79", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f"]
# kind -> (marker, colour, size, label); drawn largest first so markers on one session nest visibly
_MARKERS = {
    LOW_ALLIANCE: ("o", "#c62828", 19, "low alliance (ring)"),
    EARLY_WARNING: ("D", "#ef6c00", 13, "early warning"),
    SPLIT: ("s", "#6a1b9a", 10, "split alliance"),
    GAP: ("P", "#6a1b9a", 12, "client-therapist gap"),
    RUPTURE: ("v", "#c62828", 9, "rupture"),
}
_CSS = (
    "body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:1em 0}"
    "th,td{border:1px solid #bbb;padding:.3em .6em;text-align:left;vertical-align:top}th{background:#eee}"
    ".active{color:#b71c1c;font-weight:bold}.resolved{color:#2e7d32}img{max-width:100%}"
)


@dataclass(frozen=True, slots=True)
class OverviewRow:
    """One client-instrument line of a practitioner's caseload."""

    subject: str
    instrument: str
    episode: str | None
    sessions: int
    latest: Decimal
    latest_time: datetime
    change: Decimal | None
    trend: str
    open_signals: tuple[str, ...]


def render_report(
    fmt: str,
    trajectories: Trajectories,
    signals: Sequence[Signal],
    *,
    subject: str | None = None,
    practitioner: str | None = None,
) -> bytes:
    """The client view (``subject``) or the caseload view (``practitioner``) in ``fmt`` (one of :data:`REPORT_FORMATS`).

    Raises:
        ValueError: an unknown format, or not exactly one of subject and practitioner.
    """
    if fmt not in REPORT_FORMATS:
        raise ValueError(f"unknown report format {fmt!r} (formats: {', '.join(REPORT_FORMATS)})")
    if (subject is None) == (practitioner is None):
        raise ValueError("give exactly one of subject or practitioner")
    if practitioner is not None:
        rows = practitioner_overview(trajectories, signals, practitioner)
        if fmt == "html":
            return render_practitioner_html(rows, practitioner).encode("utf-8")
        return _save(_practitioner_figure(rows, practitioner), fmt, 100)
    assert subject is not None
    if fmt == "html":
        return render_client_html(trajectories, signals, subject).encode("utf-8")
    return _save(_client_figure(trajectories, signals, subject, 100), fmt, 100)


def render_client_png(trajectories: Trajectories, signals: Sequence[Signal], subject: str, *, dpi: int = 100) -> bytes:
    """One panel per instrument (plus a client-vs-therapist panel where both forms exist), as PNG bytes.

    The image is PANEL_WIDTH_IN x (PANEL_HEIGHT_IN x panels) inches at ``dpi``.
    """
    return _save(_client_figure(trajectories, signals, subject, dpi), "png", dpi)


def _save(figure: Figure, fmt: str, dpi: int) -> bytes:
    buffer = io.BytesIO()
    with rc_context({"svg.hashsalt": "alliance-fhir", "svg.fonttype": "path"}):
        figure.savefig(buffer, format=fmt, dpi=dpi, metadata=_METADATA[fmt])
    return buffer.getvalue()


def _client_figure(trajectories: Trajectories, signals: Sequence[Signal], subject: str, dpi: int) -> Figure:
    panels = _panels(trajectories, subject)
    pairs = _gap_pairs(trajectories, subject)
    count = max(1, len(panels) + len(pairs))
    figure = Figure(figsize=(PANEL_WIDTH_IN, PANEL_HEIGHT_IN * count), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(count, 1, squeeze=False)[:, 0]
    mine = [s for s in signals if s.subject == subject]
    for ax, (instrument, group) in zip(axes, panels, strict=False):
        _plot_instrument(ax, group, [s for s in mine if s.instrument == instrument])
    for ax, (client, therapist) in zip(axes[len(panels) :], pairs, strict=False):
        _plot_gap(ax, client, therapist, [s for s in mine if s.kind == GAP and s.focus == client.focus])
    if not panels and not pairs:
        axes[0].text(0.5, 0.5, f"No scores for {subject}", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    return figure


def render_client_html(trajectories: Trajectories, signals: Sequence[Signal], subject: str) -> str:
    """A self-contained HTML page: the plot (inline PNG), the signals table and the scores table."""
    png = base64.b64encode(render_client_png(trajectories, signals, subject)).decode("ascii")
    mine = [s for s in signals if s.subject == subject]
    body = [
        f"<h1>Alliance report: {_e(subject)}</h1>",
        f'<img alt="Alliance scores per session for {_e(subject)}" src="data:image/png;base64,{png}">',
        "<h2>Signals</h2>",
        _signals_table(mine) if mine else "<p>No signals.</p>",
        "<h2>Scores</h2>",
        _scores_table(trajectories.for_subject(subject)),
    ]
    return _page(f"Alliance report: {subject}", body)


def practitioner_overview(
    trajectories: Trajectories, signals: Iterable[Signal], practitioner: str
) -> list[OverviewRow]:
    """The practitioner's clients (alliance measures): latest score, last change, trend and open signals.

    Rows with more open signals come first, so the clients who need attention head the list.
    """
    open_by_series: dict[tuple[str, str, str | None], list[str]] = {}
    for signal in signals:
        if signal.status == "active" and signal.focus == practitioner:
            open_by_series.setdefault((signal.subject, signal.instrument, signal.episode), []).append(signal.kind)
    rows = []
    for series in trajectories.series:
        if series.focus != practitioner or series.mapping.measures != "alliance" or not series.points:
            continue
        last = series.points[-1]
        change = last.value - series.points[-2].value if len(series.points) > 1 else None
        kinds = tuple(sorted(set(open_by_series.get((series.subject, series.instrument, series.episode), []))))
        count, trend = len(series.points), _trend(change)
        rows.append(
            OverviewRow(
                series.subject, series.instrument, series.episode, count, last.value, last.time, change, trend, kinds
            )
        )
    return sorted(rows, key=lambda r: (-len(r.open_signals), r.subject, r.instrument, r.episode or ""))


_CASELOAD_HEAD = [
    "Client",
    "Instrument",
    "Episode",
    "Scored sessions",
    "Latest score",
    "Date",
    "Last change",
    "Trend",
    "Open signals",
]


def _caseload_cells(row: OverviewRow) -> list[str]:
    change = "-" if row.change is None else ("+" if row.change > 0 else "") + _num(row.change)
    cells = [
        row.subject,
        row.instrument,
        row.episode or "-",
        str(row.sessions),
        _num(row.latest),
        row.latest_time.date().isoformat(),
    ]
    return [*cells, change, row.trend, ", ".join(SIGNAL_KINDS[k] for k in row.open_signals) or "none"]


def render_practitioner_html(rows: Sequence[OverviewRow], practitioner: str) -> str:
    """The organisation view for one practitioner as a self-contained HTML table."""
    lines = []
    for r in rows:
        *cells, signals = _caseload_cells(r)
        cls = ' class="active"' if r.open_signals else ""
        lines.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + f"<td{cls}>{_e(signals)}</td></tr>")
    table = _table(_CASELOAD_HEAD, lines) if rows else "<p>No clients with alliance scores.</p>"
    return _page(f"Caseload: {practitioner}", [f"<h1>Alliance caseload: {_e(practitioner)}</h1>", table])


def _practitioner_figure(rows: Sequence[OverviewRow], practitioner: str) -> Figure:
    """The caseload table drawn as a figure (for PNG, SVG and PDF); open signals in red."""
    height = 1.2 + 0.32 * max(1, len(rows))
    figure = Figure(figsize=(PANEL_WIDTH_IN * 1.3, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    ax.set_axis_off()
    ax.set_title(f"Alliance caseload: {practitioner}", loc="left", fontsize=11)
    if not rows:
        ax.text(0.5, 0.5, "No clients with alliance scores.", ha="center", va="center", transform=ax.transAxes)
        return figure
    table = ax.table(
        cellText=[_caseload_cells(r) for r in rows], colLabels=_CASELOAD_HEAD, loc="upper left", cellLoc="left"
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(_CASELOAD_HEAD))))
    for column in range(len(_CASELOAD_HEAD)):
        table[0, column].set_facecolor("#eeeeee")
    for index, row in enumerate(rows, start=1):
        if row.open_signals:
            table[index, len(_CASELOAD_HEAD) - 1].get_text().set_color("#b71c1c")
    return figure


# ---- plotting ------------------------------------------------------------------------------


def _panels(trajectories: Trajectories, subject: str) -> list[tuple[str, list[Series]]]:
    grouped: dict[str, list[Series]] = {}
    for series in trajectories.for_subject(subject):
        grouped.setdefault(series.instrument, []).append(series)
    return sorted(grouped.items(), key=lambda item: (item[1][0].mapping.measures != "alliance", item[0]))


def _plot_instrument(ax: Axes, group: list[Series], signals: list[Signal]) -> None:
    mapping = group[0].mapping
    total = mapping.total
    for index, series in enumerate(group):
        colour = _COLOURS[index % len(_COLOURS)]
        label = f"{total.title}, with {series.focus or 'unknown therapist'}" + (
            f" ({series.episode})" if series.episode else ""
        )
        ax.plot(
            [_x(p.time) for p in series.points],
            [float(p.value) for p in series.points],
            "-o",
            color=colour,
            label=label,
            zorder=3,
        )
        for missing in series.missing:
            ax.axvline(_x(missing.time), color="#9e9e9e", linestyle=":", linewidth=1.5, label="session without a score")
    for cutoff in (c for c in total.cutoffs if c.confidence == "C2"):
        rule = f"{cutoff.operator} {cutoff.threshold:g}"
        ax.axhline(
            cutoff.threshold, color="#c62828", linestyle="--", linewidth=1, label=f"cutoff: {rule} ({cutoff.id})"
        )
    _plot_subscales(ax, group)
    _plot_markers(ax, signals, lambda p: float(p.value))
    ax.set_ylim(total.range.min, total.range.max + (total.range.max - total.range.min) * 0.05)
    ax.set_title(f"{mapping.name}: {mapping.title} ({mapping.measures})", loc="left", fontsize=10)
    ax.set_ylabel(total.title)
    _date_axis(ax)
    ax.grid(alpha=0.3)
    _legend(ax)


def _plot_subscales(ax: Axes, group: list[Series]) -> None:
    subscales = group[0].mapping.subscales
    if not subscales or not any(p.subscales for s in group for p in s.points):
        return
    twin = ax.twinx()
    for spec, style in zip(subscales, [":", "-.", "--", ":"], strict=False):
        points = [(p.time, p.scale(spec.id)) for s in group for p in s.points if p.scale(spec.id) is not None]
        twin.plot(
            [_x(t) for t, _ in points],
            [float(v) for _, v in points if v is not None],
            style,
            linewidth=1.2,
            label=spec.title,
        )
    twin.set_ylim(
        subscales[0].range.min, subscales[0].range.max + (subscales[0].range.max - subscales[0].range.min) * 0.05
    )
    twin.set_ylabel("subscales")
    twin.legend(loc="lower right", fontsize=7)


def _plot_markers(ax: Axes, signals: list[Signal], y: Callable[[ScorePoint], float]) -> None:
    order = list(_MARKERS)
    for signal in sorted((s for s in signals if s.kind in _MARKERS), key=lambda s: order.index(s.kind)):
        marker, colour, size, label = _MARKERS[signal.kind]
        face = "none" if signal.kind == LOW_ALLIANCE else colour
        ax.plot(
            [_x(signal.opened.time)],
            [y(signal.opened)],
            marker,
            markersize=size,
            markerfacecolor=face,
            markeredgecolor=colour,
            markeredgewidth=1.8,
            linestyle="none",
            label=label,
            zorder=4 + order.index(signal.kind),
        )
        if signal.kind == RUPTURE and signal.resolved_by is not None:
            ax.plot(
                [_x(signal.resolved_by.time)],
                [y(signal.resolved_by)],
                "^",
                markersize=9,
                color="#2e7d32",
                linestyle="none",
                label="repair",
                zorder=9,
            )


def _gap_pairs(trajectories: Trajectories, subject: str) -> list[tuple[Series, Series]]:
    """(client series, therapist series) pairs declared by a gap rule, for this client."""
    mine = trajectories.for_subject(subject)
    pairs = []
    for series in mine:
        rule = series.mapping.signals.gap if series.mapping.signals else None
        if rule is None:
            continue
        for other in (s for s in mine if s.instrument == rule.pairs_with and s.focus == series.focus):
            pairs.append((other, series) if series.mapping.respondent == "therapist" else (series, other))
    return pairs


def _plot_gap(ax: Axes, client: Series, therapist: Series, signals: list[Signal]) -> None:
    for series, colour, who in ((client, "#1f4e79", "client"), (therapist, "#ef6c00", "therapist")):
        values = [float(percent_of_maximum(p.value, series.mapping, "total")) for p in series.points]
        ax.plot([_x(p.time) for p in series.points], values, "-o", color=colour, label=f"{who}: {series.mapping.name}")
    _plot_markers(ax, signals, lambda p: float(percent_of_maximum(p.value, client.mapping, "total")))
    ax.set_ylim(0, 105)
    ax.set_ylabel("% of maximum")
    title = f"Client vs therapist, with {client.focus or 'unknown therapist'} (percent of each form's maximum)"
    ax.set_title(title, loc="left", fontsize=10)
    _date_axis(ax)
    ax.grid(alpha=0.3)
    _legend(ax)


def _x(time: datetime) -> float:
    """Days since 1970-01-01 UTC: matplotlib's date unit, computed here to keep the plotting typed."""
    return time.timestamp() / 86400


def _date_axis(ax: Axes) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: datetime.fromtimestamp(x * 86400, UTC).date().isoformat()))


def _legend(ax: Axes) -> None:
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))  # one entry per label (markers repeat)
    ax.legend(unique.values(), unique.keys(), loc="lower left", fontsize=7)


# ---- HTML ----------------------------------------------------------------------------------


def _signals_table(signals: Sequence[Signal]) -> str:
    head = ["Signal", "Status", "Severity", "Instrument", "Therapist", "Opened", "Resolved", "Evidence", "Detail"]
    lines = []
    for s in signals:
        resolved = s.resolved_at.date().isoformat() if s.resolved_at else "-"
        cells = [
            SIGNAL_KINDS[s.kind],
            s.status,
            s.severity,
            s.instrument,
            s.focus or "-",
            s.opened_at.date().isoformat(),
            resolved,
        ]
        cells.append(f"{len(s.evidence)} score(s)")
        row = "".join(f"<td{_status_class(c, s.status)}>{_e(c)}</td>" for c in cells)
        lines.append(f"<tr>{row}<td>{_e(s.detail)}</td></tr>")
    return _table(head, lines)


def _scores_table(series_list: Sequence[Series]) -> str:
    head = ["Instrument", "Therapist", "Session", "Date", "Score", "Subscales", "Status"]
    lines = []
    for series in series_list:
        for p in series.points:
            subs = ", ".join(f"{name} {_num(v)}" for name, v in p.subscales) or "-"
            cells = [
                series.instrument,
                series.focus or "-",
                str(p.session_number),
                p.time.date().isoformat(),
                _num(p.value),
                subs,
            ]
            cells.append(p.status)
            lines.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    return _table(head, lines)


def _status_class(cell: str, status: str) -> str:
    return f' class="{status}"' if cell == status else ""


def _table(head: list[str], lines: list[str]) -> str:
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def _page(title: str, body: list[str]) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _trend(change: Decimal | None) -> str:
    if change is None:
        return "-"
    return "rising" if change > 0 else "falling" if change < 0 else "stable"


def _num(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _e(text: str) -> str:
    return html.escape(text, quote=True)
