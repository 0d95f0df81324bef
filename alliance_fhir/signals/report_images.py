"""The report as PNG, SVG or PDF (``report --out x.png``): matplotlib, an optional extra.

The HTML report (:mod:`.report`) needs none of this. Plots use matplotlib's object API on an Agg
canvas (no pyplot global state, no display, safe in a server). The x axis is the session number
(dates are in the HTML tables), and every panel has one y axis: the total in its own panel, the
parts (WAI-SR subscales, SRS lines) together in a second panel on their common range. Image output
carries no creation date or software version, so the same data give the same bytes. Names come
from :class:`~.names.Names`: a panel never shows a FHIR reference.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

from . import MISSING_MATPLOTLIB

try:
    from matplotlib import rc_context
    from matplotlib.axes import Axes
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator
except ModuleNotFoundError as exc:  # an optional extra: say how to get it, not just "No module named"
    raise ModuleNotFoundError(MISSING_MATPLOTLIB, name=exc.name) from exc

from .names import Names
from .report import OverviewRow, practitioner_overview
from .rules import EARLY_WARNING, GAP, LOW_ALLIANCE, RUPTURE, SIGNAL_KINDS, SPLIT, Signal, gap_pairs, percent_of_maximum
from .situations import number
from .trajectory import ScorePoint, Series, Trajectories

__all__ = ["PANEL_HEIGHT_IN", "PANEL_WIDTH_IN", "render_client_png", "render_image"]

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


def render_image(
    fmt: str,
    trajectories: Trajectories,
    signals: Sequence[Signal],
    *,
    subject: str | None,
    practitioner: str | None,
    names: Names,
) -> bytes:
    """The client view (``subject``) or the caseload view (``practitioner``) as PNG, SVG or PDF bytes."""
    if practitioner is not None:
        rows = practitioner_overview(trajectories, signals, practitioner)
        return _save(_practitioner_figure(rows, practitioner, names), fmt, 100)
    assert subject is not None
    return _save(_client_figure(trajectories, signals, subject, 100, names), fmt, 100)


def render_client_png(
    trajectories: Trajectories, signals: Sequence[Signal], subject: str, *, dpi: int = 100, names: Names | None = None
) -> bytes:
    """One panel per instrument, one more for its parts where it has them, and a client-vs-therapist panel
    where both forms exist, as PNG bytes.

    The image is PANEL_WIDTH_IN x (PANEL_HEIGHT_IN x panels) inches at ``dpi``.
    """
    return _save(_client_figure(trajectories, signals, subject, dpi, names or Names()), "png", dpi)


def _save(figure: Figure, fmt: str, dpi: int) -> bytes:
    buffer = io.BytesIO()
    with rc_context({"svg.hashsalt": "alliance-fhir", "svg.fonttype": "path"}):
        figure.savefig(buffer, format=fmt, dpi=dpi, metadata=_METADATA[fmt])
    return buffer.getvalue()


def _client_figure(
    trajectories: Trajectories, signals: Sequence[Signal], subject: str, dpi: int, names: Names
) -> Figure:
    panels = _panels(trajectories, subject)
    parts = [(instrument, group) for instrument, group in panels if _has_parts(group)]
    pairs = gap_pairs(trajectories, subject)
    count = max(1, len(panels) + len(parts) + len(pairs))
    figure = Figure(figsize=(PANEL_WIDTH_IN, PANEL_HEIGHT_IN * count), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    axes = list(figure.subplots(count, 1, squeeze=False)[:, 0])
    mine = [s for s in signals if s.subject == subject]
    figure.suptitle(f"Alliance report: {names.client(subject)}", x=0.01, ha="left", fontsize=11)
    for instrument, group in panels:
        _plot_instrument(axes.pop(0), group, [s for s in mine if s.instrument == instrument], names)
        if _has_parts(group):
            _plot_parts(axes.pop(0), group, names)
    for client, therapist in pairs:
        gap_signals = [s for s in mine if s.kind == GAP and s.focus == client.focus]
        _plot_gap(axes.pop(0), client, therapist, gap_signals, names)
    if not panels and not pairs:
        axes[0].text(0.5, 0.5, "No scores for this client", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    return figure


_CASELOAD_HEAD = ["Client", "Instrument", "Scored sessions", "Latest score", "Date", "Last change", "Open signals"]


def _caseload_cells(row: OverviewRow, names: Names) -> list[str]:
    change = "-" if row.change is None else ("+" if row.change > 0 else "") + number(row.change)
    kinds = ", ".join(SIGNAL_KINDS[k] for k in row.open_signals) or "none"
    client = names.known(row.subject) or "(no name on file)"
    when = row.latest_time.date().isoformat()
    return [client, row.instrument.upper(), str(row.sessions), number(row.latest), when, change, kinds]


def _practitioner_figure(rows: Sequence[OverviewRow], practitioner: str, names: Names) -> Figure:
    """The caseload table drawn as a figure (for PNG, SVG and PDF); open signals in red."""
    height = 1.2 + 0.32 * max(1, len(rows))
    figure = Figure(figsize=(PANEL_WIDTH_IN * 1.3, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    ax.set_axis_off()
    ax.set_title(f"Alliance caseload: {names.therapist(practitioner)}", loc="left", fontsize=11)
    if not rows:
        ax.text(0.5, 0.5, "No clients with alliance scores.", ha="center", va="center", transform=ax.transAxes)
        return figure
    table = ax.table(
        cellText=[_caseload_cells(r, names) for r in rows], colLabels=_CASELOAD_HEAD, loc="upper left", cellLoc="left"
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


def _has_parts(group: list[Series]) -> bool:
    return any(p.subscales for s in group for p in s.points)


def _with(series: Series, names: Names) -> str:
    who = names.known(series.focus)
    return f", with {who}" if who else ""


def _plot_instrument(ax: Axes, group: list[Series], signals: list[Signal], names: Names) -> None:
    mapping = group[0].mapping
    total = mapping.total
    for index, series in enumerate(group):
        colour = _COLOURS[index % len(_COLOURS)]
        ax.plot(
            [p.session_number for p in series.points],
            [float(p.value) for p in series.points],
            "-o",
            color=colour,
            label=f"{total.title}{_with(series, names)}",
            zorder=3,
        )
        for missing in series.missing:
            ax.axvline(
                missing.session_number, color="#9e9e9e", linestyle=":", linewidth=1.5, label="session without a score"
            )
    cutoff = mapping.low_alliance_cutoff()
    if cutoff is not None:
        where = "below" if cutoff.operator == "<" else "at or below"
        ax.axhspan(
            total.range.min, cutoff.threshold, color="#f9d6d5", label=f"level of concern: {where} {cutoff.threshold:g}"
        )
    _plot_markers(ax, signals, lambda p: float(p.value))
    ax.set_ylim(total.range.min, total.range.max + (total.range.max - total.range.min) * 0.05)
    ax.set_title(f"{mapping.name}: {mapping.title}", loc="left", fontsize=10)
    ax.set_ylabel(total.title)
    _session_axis(ax)
    ax.grid(alpha=0.3)
    _legend(ax)


def _plot_parts(ax: Axes, group: list[Series], names: Names) -> None:
    """The parts (subscales, SRS lines) in their own panel: one y axis, their common range."""
    subscales = group[0].mapping.subscales
    for spec, style in zip(subscales, ["-o", "--s", ":^", "-.D"], strict=False):
        for series in group:
            points = [(p.session_number, p.scale(spec.id)) for p in series.points]
            shown = [(n, float(v)) for n, v in points if v is not None]
            ax.plot(
                [n for n, _ in shown],
                [v for _, v in shown],
                style,
                linewidth=1.4,
                label=f"{spec.title}{_with(series, names)}",
            )
    low = min(s.range.min for s in subscales)
    high = max(s.range.max for s in subscales)
    ax.set_ylim(low, high + (high - low) * 0.05)
    ax.set_title(f"{group[0].mapping.name}: the parts, each on the range {low:g} to {high:g}", loc="left", fontsize=10)
    ax.set_ylabel("part score")
    _session_axis(ax)
    ax.grid(alpha=0.3)
    _legend(ax)


def _plot_markers(ax: Axes, signals: list[Signal], y: Callable[[ScorePoint], float]) -> None:
    """Each signal where it opened; several at one session are fanned out sideways, so none hides another."""
    order = list(_MARKERS)
    at_session: dict[int, int] = {}
    for signal in sorted((s for s in signals if s.kind in _MARKERS), key=lambda s: order.index(s.kind)):
        marker, colour, size, label = _MARKERS[signal.kind]
        face = "none" if signal.kind == LOW_ALLIANCE else colour
        slot = at_session.get(signal.opened.session_number, 0)
        at_session[signal.opened.session_number] = slot + 1
        ax.plot(
            [signal.opened.session_number + 0.12 * slot],
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
                [signal.resolved_by.session_number],
                [y(signal.resolved_by)],
                "^",
                markersize=9,
                color="#2e7d32",
                linestyle="none",
                label="repair",
                zorder=9,
            )


def _plot_gap(ax: Axes, client: Series, therapist: Series, signals: list[Signal], names: Names) -> None:
    for series, colour, who in ((client, "#1f4e79", "client"), (therapist, "#ef6c00", "therapist")):
        values = [float(percent_of_maximum(p.value, series.mapping, "total")) for p in series.points]
        ax.plot(
            [p.session_number for p in series.points], values, "-o", color=colour, label=f"{who}: {series.mapping.name}"
        )
    _plot_markers(ax, signals, lambda p: float(percent_of_maximum(p.value, client.mapping, "total")))
    ax.set_ylim(0, 105)
    ax.set_ylabel("% of maximum")
    title = f"Client and therapist{_with(client, names)} (percent of each form's maximum)"
    ax.set_title(title, loc="left", fontsize=10)
    _session_axis(ax)
    ax.grid(alpha=0.3)
    _legend(ax)


def _session_axis(ax: Axes) -> None:
    """Sessions, not dates: "Session 1", "Session 2", ... (whole numbers only)."""
    ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True, min_n_ticks=1))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"Session {int(x)}" if x >= 1 and x == int(x) else ""))


def _legend(ax: Axes) -> None:
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))  # one entry per label (markers repeat)
    ax.legend(unique.values(), unique.keys(), loc="lower left", fontsize=7)
