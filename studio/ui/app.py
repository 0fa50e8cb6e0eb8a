"""The Gradio UI: one Blocks with a tab per module. Every tab gets the StudioContext and
calls services with it; tabs talk to each other only through the handles their `build`
returns."""

from __future__ import annotations

import gradio as gr

from studio.services.context import StudioContext
from studio.ui import datasets_tab, jobs_tab, train_tab
from studio.ui.text import t


def build_ui(ctx: StudioContext) -> gr.Blocks:
    """The whole UI, for gr.mount_gradio_app. Holds no state of its own: each browser
    session keeps its selections in gr.State, jobs live in the DB."""
    # delete_cache: Gradio's copies of uploads and exports older than a day, checked hourly
    with gr.Blocks(title=t("app.title"), delete_cache=(3600, 86400)) as page:
        gr.Markdown(t("app.header"))
        with gr.Tabs() as tabs:
            with gr.Tab(t("tab.datasets"), id="datasets", elem_id="tab-datasets"):
                data = datasets_tab.build(ctx, page)
            with gr.Tab(t("tab.train"), id="train", elem_id="tab-train") as train_tab_item:
                train = train_tab.build(ctx, page, train_tab_item, tabs, data)
            with gr.Tab(t("tab.jobs"), id=jobs_tab.TAB_ID, elem_id="tab-jobs"):
                jobs_tab.build(ctx, page, train.launched)
    return page
