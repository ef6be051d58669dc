"""The console's charts as inline SVG: labels stay text (readable, translatable, testable).
The reasons of a score, PSI per feature and a metric over time are drawn by matplotlib; the
tier movements' stacked bars are written directly (the pyramid page's time budget)."""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from html import escape
from typing import Any

RAISES, LOWERS = "#b03a2e", "#1f618d"
# Text stays <text>, not paths; a CJK font first when one is installed (fonts-wqy-microhei).
TEXT_AS_TEXT: dict[str, Any] = {
    "svg.fonttype": "none",
    "font.family": ["sans-serif"],
    "font.sans-serif": ["WenQuanYi Micro Hei", "Noto Sans CJK SC", "DejaVu Sans"],
}


@dataclass(frozen=True, slots=True)
class Bar:
    """One reason: its label and signed contribution."""

    label: str
    value: float


def reasons_svg(bars: Sequence[Bar], *, title: str) -> str:
    """A horizontal bar chart, largest push on top, as an <svg> element (no XML prolog)."""
    # Imported on first use: the app starts, and scoring commands run, without matplotlib.
    import matplotlib
    from matplotlib.figure import Figure

    ordered = sorted(bars, key=lambda bar: abs(bar.value))
    figure = Figure(figsize=(6, 0.45 * max(len(ordered), 1) + 0.9))
    axes = figure.add_subplot()
    axes.barh(
        [bar.label for bar in ordered],
        [bar.value for bar in ordered],
        color=[RAISES if bar.value > 0 else LOWERS for bar in ordered],
    )
    axes.axvline(0, color="#555555", linewidth=0.8)
    axes.set_title(title, fontsize=10)
    axes.tick_params(labelsize=9)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    figure.tight_layout()
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays <text>, not paths
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]


@dataclass(frozen=True, slots=True)
class Series:
    """One named series of counts over the same periods."""

    label: str
    values: Sequence[float]
    color: str


def stacked_svg(periods: Sequence[str], series: Sequence[Series], *, axis_label: str) -> str:
    """Vertical bars per period, the series stacked, with a legend, as an <svg> element."""
    # Written directly, not drawn by matplotlib: a figure cost the pyramid page 0.2-1.5 s a
    # request (issue 19 item 5 gives it 300 ms); a few rectangles and labels need no renderer.
    width, height = 700, 320
    left, right, top, bottom = 64, 150, 16, 70
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(one.values[i] for one in series) for i in range(len(periods))]
    step = _tick_step(max(totals, default=0.0))
    ceiling = step * max(1, math.ceil(max(totals, default=0.0) / step))
    slot = plot_w / max(len(periods), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" font-family="sans-serif">'
    ]
    for tick in range(round(ceiling / step) + 1):
        y = top + plot_h - tick * step / ceiling * plot_h
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}"'
            f' stroke="#dddddd" stroke-width="0.8"/>'
            f'<text x="{left - 6}" y="{y + 3:.1f}" font-size="8" text-anchor="end">'
            f"{tick * step:,.0f}</text>"
        )
    parts.append(
        f'<text transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" font-size="9"'
        f' text-anchor="middle">{escape(axis_label)}</text>'
    )
    for i, period in enumerate(periods):
        x, base = left + i * slot + slot * 0.1, 0.0
        for one in series:
            value = one.values[i]
            if value > 0:
                y = top + plot_h - (base + value) / ceiling * plot_h
                parts.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.8:.1f}"'
                    f' height="{value / ceiling * plot_h:.1f}" fill="{one.color}">'
                    f"<title>{escape(period)} {escape(one.label)}: {value:,.0f}</title></rect>"
                )
            base += value
        label_x, label_y = x + slot * 0.4, top + plot_h + 10
        parts.append(
            f'<text transform="translate({label_x:.1f} {label_y:.1f}) rotate(-45)"'
            f' font-size="8" text-anchor="end">{escape(period)}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}"'
        ' stroke="#555555" stroke-width="0.8"/>'
    )
    for i, one in enumerate(series):
        y = top + 6 + i * 16
        parts.append(
            f'<rect x="{left + plot_w + 16}" y="{y}" width="10" height="10" fill="{one.color}"/>'
            f'<text x="{left + plot_w + 32}" y="{y + 9}" font-size="8">{escape(one.label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _tick_step(highest: float) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving at most about five ticks."""
    if highest <= 0:
        return 1.0
    raw = highest / 5
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            return float(max(factor * power, 1))
    return float(10 * power)


BAND_COLOURS = {"stable": "#1e8449", "moderate": "#d4ac0d", "significant": "#b03a2e"}
# The conventional PSI bands: below 0.10 stable, below 0.25 moderate, else significant.
PSI_BANDS = (0.10, 0.25)


@dataclass(frozen=True, slots=True)
class Stability:
    """One feature's (or the score's) PSI and its band."""

    label: str
    psi: float
    band: str


@contextmanager
def _drawing() -> Iterator[None]:
    """Matplotlib settings for a chart: text as text, CJK font first."""
    import matplotlib

    with matplotlib.rc_context(TEXT_AS_TEXT), warnings.catch_warnings():  # type: ignore[arg-type]
        # Translated labels stay <text> that the browser draws with its own CJK font; without
        # one installed here matplotlib only misjudges their width, and says so per glyph.
        warnings.filterwarnings("ignore", "Glyph .* missing from font", UserWarning)
        yield


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]


def psi_svg(rows: Sequence[Stability], *, axis_label: str) -> str:
    """PSI per feature as horizontal bars coloured by band, the band limits drawn, the most
    shifted on top."""
    from matplotlib.figure import Figure

    ordered = sorted(rows, key=lambda row: row.psi)
    with _drawing():
        figure = Figure(figsize=(6.5, 0.24 * max(len(ordered), 1) + 1.0))
        axes = figure.add_subplot()
        axes.barh(
            [row.label for row in ordered],
            [row.psi for row in ordered],
            color=[BAND_COLOURS.get(row.band, "#7f8c8d") for row in ordered],
        )
        for limit in PSI_BANDS:
            axes.axvline(limit, color="#555555", linewidth=0.8, linestyle="--")
        axes.set_xlabel(axis_label, fontsize=9)
        axes.tick_params(labelsize=7)
        for side in ("top", "right"):
            axes.spines[side].set_visible(False)
        figure.tight_layout()
        return _svg(figure)


def interval_svg(
    periods: Sequence[str],
    values: Sequence[float | None],
    lows: Sequence[float | None],
    highs: Sequence[float | None],
    *,
    axis_label: str,
) -> str:
    """A metric per period with its 95% interval as a shaded band (gaps where undefined)."""
    from matplotlib.figure import Figure

    def floats(seq: Sequence[float | None]) -> list[float]:
        return [float("nan") if v is None else v for v in seq]

    with _drawing():
        figure = Figure(figsize=(7, 3.0))
        axes = figure.add_subplot()
        x = list(range(len(periods)))
        axes.fill_between(x, floats(lows), floats(highs), color="#aed6f1", linewidth=0)
        axes.plot(x, floats(values), marker="o", color="#1f618d")
        axes.set_xticks(x, list(periods))
        axes.set_ylabel(axis_label, fontsize=9)
        axes.tick_params(labelsize=8)
        axes.tick_params(axis="x", labelrotation=45)
        for side in ("top", "right"):
            axes.spines[side].set_visible(False)
        figure.tight_layout()
        return _svg(figure)
