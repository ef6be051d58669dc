"""A campaign report as inline SVG: each arm's rate with its bootstrap interval, and uplift by
decile for a model-targeted campaign (matplotlib, as app/console/charts.py)."""

from __future__ import annotations

import io

from app.campaigns.schemas import CampaignReport

TREATED, HELD = "#1f618d", "#7f8c8d"


def report_svg(report: CampaignReport) -> str:
    """The report's chart as an <svg> element (no XML prolog)."""
    # Imported on first use: the app starts without matplotlib.
    import matplotlib
    from matplotlib.figure import Figure

    panels = 2 if report.uplift is not None else 1
    figure = Figure(figsize=(4.2 * panels, 3.4))
    axes = figure.add_subplot(1, panels, 1)
    labels = [arm.arm.value for arm in report.arms]
    rates = [arm.rate or 0.0 for arm in report.arms]
    errors = [
        [max((arm.rate or 0.0) - (arm.rate_low or 0.0), 0.0) for arm in report.arms],
        [max((arm.rate_high or 0.0) - (arm.rate or 0.0), 0.0) for arm in report.arms],
    ]
    axes.bar(labels, rates, yerr=errors, capsize=6, color=[TREATED, HELD])
    title = f"{report.code}: conversion rate per arm"
    if report.lift is not None and report.lift.relative is not None:
        mark = "significant" if report.lift.significant else "not significant"
        title += f"\nlift {report.lift.relative:+.1%} ({mark})"
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
            f"uplift by {report.uplift.score_task.value} score decile\nQini {qini}", fontsize=9
        )
        uplift_axes.set_xlabel("decile (highest scores first)", fontsize=8)
        uplift_axes.tick_params(labelsize=8)
    for ax in figure.axes:
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    figure.tight_layout()
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]
