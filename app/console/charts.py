"""The console's charts as inline SVG (matplotlib): labels stay text (readable, translatable,
testable). The reasons of a score, tier movements, PSI per feature, a metric over time."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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
    from matplotlib.figure import Figure

    with _drawing():
        figure = Figure(figsize=(7, 3.2))
        axes = figure.add_subplot()
        bottom = [0.0] * len(periods)
        for one in series:
            axes.bar(
                list(periods), list(one.values), bottom=bottom, label=one.label, color=one.color
            )
            bottom = [b + v for b, v in zip(bottom, one.values, strict=True)]
        axes.set_ylabel(axis_label, fontsize=9)
        axes.tick_params(labelsize=8)
        axes.tick_params(axis="x", labelrotation=45)
        axes.legend(fontsize=8, frameon=False)
        for side in ("top", "right"):
            axes.spines[side].set_visible(False)
        figure.tight_layout()
        return _svg(figure)


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
