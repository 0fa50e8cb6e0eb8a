"""The Jobs tab's live loss plot: drawn and extended in the browser (live_plot.js) from
the REST metrics route, a few points at a time, so a watched job trains at full speed.
The server sends no figure per tick; the page asks only for what it does not have."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from studio.ui.text import t

SCRIPT = (Path(__file__).parent / "live_plot.js").read_text()
# The page lives at /, so the route is relative to it (works under a proxy's prefix too).
HEAD = '<script src="api/assets/plotly.js"></script>'
SMOOTH_JS = "(on) => { if (window.studioLivePlot) window.studioLivePlot.smooth(on); return []; }"


def labels() -> dict[str, str]:
    return {
        "title": t("jobs.plot_title"), "empty": t("jobs.plot_empty"), "step": t("jobs.axis.step"),
        "loss": t("jobs.axis.loss"), "exact_match_axis": t("jobs.axis.exact_match"),
        "exact_match": t("jobs.trace.exact_match"),
        "train_loss": t("jobs.trace.train_loss"), "eval_loss": t("jobs.trace.eval_loss"),
        "smoothed": t("jobs.smooth"),
    }


def build() -> gr.HTML:
    """The plot's container; its script extends it at each of the dashboard's ticks."""
    return gr.HTML(
        '<div class="live-plot-canvas" style="min-height:380px"></div>',
        html_template="${value}",
        js_on_load=SCRIPT,
        head=HEAD,
        elem_id="loss-plot",
        labels=labels(),
    )
