"""The Gradio UI: one Blocks with a tab per module. Every tab gets the StudioContext and
calls services with it; tabs talk to each other only through the handles their `build`
returns.

Each tab's event handlers get a role rule (UiRules) that the gate enforces on every call,
so hiding a tab is only for the eye: a hand-made call to a hidden tab's event is refused.
"""

from __future__ import annotations

import html
from contextlib import contextmanager
from typing import Iterator

import gradio as gr

from studio.access import Role
from studio.gate import UiRules
from studio.services import accounts
from studio.services.context import StudioContext
from studio.ui import admin_tab, chat_tab, compare_tab, dashboard_js, datasets_tab, evaluate_tab, jobs_tab, location, train_tab
from studio.ui.text import t

TRAINERS = frozenset({Role.trainer, Role.admin})
ADMINS = frozenset({Role.admin})
RATERS = frozenset({Role.rater, Role.trainer, Role.admin})
# Handler names whose calls go into the audit log, and under what action.
AUDITED = {
    "add_file": "upload dataset", "add_demo": "upload dataset", "launch": "launch job", "cancel": "cancel job",
    "clone": "clone job", "save_cell": "edit dataset", "add_new_row": "edit dataset", "delete_selected": "edit dataset",
    "revert": "edit dataset", "split": "edit dataset", "apply_quality_fix": "edit dataset", "start_export": "export",
    "delete_export": "delete export", "add_user": "add user", "change_user": "change user",
    "add_block_rule": "change blocklist", "remove_block_rule": "change blocklist",
    "start_eval": "start evaluation", "cancel_eval": "cancel evaluation",
}


@contextmanager
def _events_of(page: gr.Blocks, rules: UiRules, roles: frozenset[Role]) -> Iterator[None]:
    """Give every event handler registered inside this block the role rule `roles`."""
    before = set(page.fns)
    yield
    for fn_id in set(page.fns) - before:
        rules.roles[fn_id] = roles


def finish_rules(page: gr.Blocks, rules: UiRules) -> UiRules:
    for fn_id, fn in page.fns.items():
        if fn.name in AUDITED:
            rules.actions[fn_id] = AUDITED[fn.name]
        if isinstance(fn.api_name, str):
            rules.api_names[fn.api_name] = fn_id
    return rules


def user_bar_html(request: gr.Request | None) -> str:
    name = getattr(request, "username", None) or accounts.LOCAL_USER
    if name == accounts.LOCAL_USER:
        return f'<div class="studio-banner" id="local-banner">{html.escape(t("app.local_mode"))}</div>'
    return (
        f'<form method="post" action="/logout" class="studio-userbar" id="user-bar-form">'
        f'<span>{html.escape(t("app.signed_in", name=name))}</span> '
        f'<button type="submit" id="logout">{html.escape(t("app.logout"))}</button></form>'
    )


def _role_of(ctx: StudioContext, request: gr.Request) -> Role:
    name = getattr(request, "username", None) or accounts.LOCAL_USER
    identity = accounts.identity_by_name(ctx.engine, name)
    return identity.role if identity else Role.rater


CSS = """
.studio-banner { background: #fef3c7; color: #78350f; padding: .5rem .8rem; border-radius: 6px; font-size: .9rem; }
.studio-userbar { display: flex; gap: .8rem; align-items: center; justify-content: flex-end; font-size: .9rem; }
.studio-hidden { display: none !important; }
.studio-userbar button { border: 1px solid #ccc; border-radius: 6px; padding: .2rem .7rem; background: white; cursor: pointer; }
"""
# The trainers' page only: the raters' page must not name jobs, not even in its CSS.
TRAINER_CSS = CSS + dashboard_js.CSS


def build_ui(ctx: StudioContext) -> tuple[gr.Blocks, UiRules]:
    """The trainers' and admins' UI, for gr.mount_gradio_app, and its role rules. Holds
    no state of its own: each browser session keeps its selections in gr.State, jobs
    live in the DB."""
    rules = UiRules()
    # delete_cache: Gradio's copies of uploads and exports older than a day, checked hourly
    with gr.Blocks(title=t("app.title"), delete_cache=(3600, 86400)) as page:
        with _events_of(page, rules, TRAINERS):
            with gr.Row():
                gr.Markdown(t("app.header"))
                header = gr.HTML(elem_id="user-bar")
            with gr.Tabs():
                with gr.Tab(t("tab.datasets"), id="datasets", elem_id="tab-datasets") as datasets_item:
                    data = datasets_tab.build(ctx, page)
                with gr.Tab(t("tab.train"), id="train", elem_id="tab-train") as train_tab_item:
                    train = train_tab.build(ctx, page, train_tab_item, data)
                with gr.Tab(t("tab.jobs"), id=jobs_tab.TAB_ID, elem_id="tab-jobs") as jobs_item:
                    jobs = jobs_tab.build(ctx, page, train.launched, jobs_item)
                with gr.Tab(t("tab.compare"), id="compare", elem_id="tab-compare") as compare_item:
                    compare_tab.build(ctx, page, compare_item)
                with gr.Tab(t("tab.chat"), id=chat_tab.TAB_ID, elem_id="tab-chat") as chat_item:
                    chat_tab.build(ctx, page, chat_item, jobs.selected, jobs.picker, jobs.chat)
                with gr.Tab(t("tab.evaluate"), id=evaluate_tab.TAB_ID, elem_id="tab-evaluate") as evaluate_item:
                    evaluate_tab.build(ctx, page, evaluate_item)
                admin_item = gr.Tab(t("tab.admin"), id="admin", elem_id="tab-admin", visible=False)

            def show_user(request: gr.Request):
                return user_bar_html(request), gr.Tab(visible=_role_of(ctx, request) == Role.admin)

            # Then the tab the URL names (?tab=jobs), in the browser: once the Admin tab is
            # shown or hidden (showing it in the same update resets the selection), and
            # for a user who is not an admin its button is not there to click.
            page.load(show_user, None, [header, admin_item], show_progress="hidden").then(
                None, None, None, js=location.READY_JS
            )
            # The URL follows the tab picked (a reload lands there).
            for item, tab_id in ((datasets_item, "datasets"), (train_tab_item, "train"), (jobs_item, jobs_tab.TAB_ID),
                                 (compare_item, "compare"), (chat_item, chat_tab.TAB_ID),
                                 (evaluate_item, evaluate_tab.TAB_ID), (admin_item, "admin")):
                item.select(None, None, None, js=location.set_param_js("tab", tab_id, wait_for_ready=True))
        with admin_item:
            with _events_of(page, rules, ADMINS):
                admin_tab.build(ctx, admin_item)
    return page, finish_rules(page, rules)


def build_rater_rules(page: gr.Blocks) -> UiRules:
    return finish_rules(page, UiRules(roles={fn_id: RATERS for fn_id in page.fns}))
