"""A campaign report as inline SVG: each arm's rate with its bootstrap interval, and uplift by
decile for a model-targeted campaign (matplotlib, as app/console/charts.py)."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from typing import Any

from app.campaigns.schemas import CampaignReport

TREATED, HELD = "#1f618d", "#7f8c8d"
# Text stays <text>, not paths; a CJK font first when one is installed (fonts-wqy-microhei),
# so a translated chart reads in Chinese too.
TEXT_AS_TEXT: dict[str, Any] = {
    "svg.fonttype": "none",
    "font.family": ["sans-serif"],
    "font.sans-serif": ["WenQuanYi Micro Hei", "Noto Sans CJK SC", "DejaVu Sans"],
}


def _same(message: str) -> str:
    return message


def report_svg(report: CampaignReport, translate: Callable[[str], str] = _same) -> str:
    """The report's chart as an <svg> element (no XML prolog); ``translate`` turns its English
    words into the reader's language (the console passes its catalogue's)."""
    # Imported on first use: the app starts without matplotlib.
    import matplotlib
    from matplotlib.figure import Figure

    panels = 2 if report.uplift is not None else 1
    figure = Figure(figsize=(4.2 * panels, 3.4))
    axes = figure.add_subplot(1, panels, 1)
    labels = [translate(arm.arm.value) for arm in report.arms]
    rates = [arm.rate or 0.0 for arm in report.arms]
    errors = [
        [max((arm.rate or 0.0) - (arm.rate_low or 0.0), 0.0) for arm in report.arms],
        [max((arm.rate_high or 0.0) - (arm.rate or 0.0), 0.0) for arm in report.arms],
    ]
    axes.bar(labels, rates, yerr=errors, capsize=6, color=[TREATED, HELD])
    title = translate("%(code)s: conversion rate per arm") % {"code": report.code}
    if report.lift is not None and report.lift.relative is not None:
        mark = translate("significant" if report.lift.significant else "not significant")
        title += "\n" + translate("lift %(lift)s (%(mark)s)") % {
            "lift": f"{report.lift.relative:+.1%}",
            "mark": mark,
        }
    axes.set_title(title, fontsize=9)
    axes.tick_params(labelsize=8)
    if report.uplift is not None:
        deciles = report.uplift.deciles
        uplift_axes = figure.add_subplot(1, panels, 2)
        uplift_axes.bar(
            [str(d.decile) for d in deciles],
            [d.uplift or 0.0 for d in deciles],
            color=TREATED,
        )
        uplift_axes.axhline(0, color="#555555", linewidth=0.8)
        qini = "n/a" if report.uplift.qini is None else f"{report.uplift.qini:.3f}"
        uplift_axes.set_title(
            translate("uplift by %(task)s score decile")
            % {"task": translate(report.uplift.score_task.value)}
            + f"\nQini {qini}",
            fontsize=9,
        )
        uplift_axes.set_xlabel(translate("decile (highest scores first)"), fontsize=8)
        uplift_axes.tick_params(labelsize=8)
    for ax in figure.axes:
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    buffer = io.StringIO()
    with matplotlib.rc_context(TEXT_AS_TEXT), warnings.catch_warnings():  # type: ignore[arg-type]
        # Translated labels stay <text> the browser draws with its own CJK font; without one
        # installed here matplotlib only misjudges their width, and says so per glyph.
        warnings.filterwarnings("ignore", "Glyph .* missing from font", UserWarning)
        figure.tight_layout()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]
