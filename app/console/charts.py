"""The reasons bar chart as inline SVG: labels stay text (readable, translatable, testable)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

RAISES, LOWERS = "#b03a2e", "#1f618d"


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
