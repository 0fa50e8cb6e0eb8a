"""The page a rater gets (mounted at /rate): only the Evaluation tab. Raters never load
the trainers' page, so nothing of it (datasets, jobs, model names) reaches them."""

from __future__ import annotations

import gradio as gr

from studio.services.context import StudioContext
from studio.ui.text import t


def build_rater_ui(ctx: StudioContext) -> gr.Blocks:
    with gr.Blocks(title=t("app.title")) as page:
        header = gr.HTML(elem_id="user-bar")
        with gr.Tabs():
            with gr.Tab(t("tab.evaluation"), id="evaluation", elem_id="tab-evaluation"):
                gr.Markdown(t("rater.none"), elem_id="rater-queue")
        page.load(user_bar, None, header, show_progress="hidden")
    return page


def user_bar(request: gr.Request) -> str:
    from studio.ui.app import user_bar_html

    return user_bar_html(request)
