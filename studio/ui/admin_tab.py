"""Admin tab: the studio's users (add, disable, enable, API tokens) and the audit log.
Its events are admin-only at the gate, which also writes them to the audit log; the tab
is shown only to admins."""

from __future__ import annotations

import re
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from studio.services import accounts
from studio.services.accounts import AccountError
from studio.services.context import StudioContext
from studio.ui.forms import bind
from studio.ui.text import notice, t

USER_COLUMNS = ["name", "role", "status", "last login", "created"]
AUDIT_COLUMNS = ["when", "who", "what", "target", "outcome", "address"]
SETTING_COLUMNS = ["setting", "value", "meaning"]
RULE_COLUMNS = ["id", "kind", "pattern", "added by", "added"]


@dataclass(frozen=True)
class AdminTab:
    users: gr.Dataframe


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def show_users(ctx: StudioContext) -> pd.DataFrame:
    rows = [
        [u.name, u.role, "disabled" if u.disabled else "active", _when(u.last_login_at), _when(u.created_at)]
        for u in accounts.list_users(ctx.engine)
    ]
    return pd.DataFrame(rows, columns=USER_COLUMNS)


def show_settings(ctx: StudioContext) -> pd.DataFrame:
    """The settings in force (from the environment, STUDIO_*), passwords in URLs hidden.
    They change by restarting with other values: a running studio never rewrites them."""
    rows = []
    for name, field in type(ctx.settings).model_fields.items():
        value = getattr(ctx.settings, name)
        if name == "admin_password_file" or value is None:
            value = "" if value is None else value
        text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        rows.append([f"STUDIO_{name.upper()}", _hide_password(text), field.description or ""])
    return pd.DataFrame(rows, columns=SETTING_COLUMNS)


def _hide_password(text: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]+@", r"\1***@", text)


def show_rules(ctx: StudioContext) -> pd.DataFrame:
    from studio.services import chat

    rows = [[r.id, r.kind, r.pattern, r.created_by, _when(r.created_at)] for r in chat.list_rules(ctx)]
    return pd.DataFrame(rows, columns=RULE_COLUMNS)


def add_block_rule(ctx: StudioContext, kind: str, pattern: str, by: str):
    from studio.services import chat

    try:
        rule = chat.add_rule(ctx, kind or "word", pattern or "", by)
    except chat.ChatError as exc:
        return notice("error", str(exc)), gr.update(), gr.update()
    return notice("ok", t("admin.rule_added", kind=rule.kind, pattern=rule.pattern)), show_rules(ctx), ""


def remove_block_rule(ctx: StudioContext, rule_id: float | None):
    from studio.services import chat
    from studio.services.context import NotFound

    if rule_id is None:
        return notice("error", t("admin.rule_pick")), gr.update()
    try:
        chat.delete_rule(ctx, int(rule_id))
    except NotFound as exc:
        return notice("error", str(exc)), gr.update()
    return notice("ok", t("admin.rule_removed", id=int(rule_id))), show_rules(ctx)


def show_audit(ctx: StudioContext) -> pd.DataFrame:
    rows = [[_when(e.at), e.actor, e.action, e.target, e.outcome, e.ip] for e in accounts.audit_log(ctx.engine, 300)]
    return pd.DataFrame(rows, columns=AUDIT_COLUMNS)


def add_user(ctx: StudioContext, name: str, role: str, password: str):
    try:
        user = accounts.add_user(ctx.engine, name or "", role or "", password or "")
    except AccountError as exc:
        return notice("error", str(exc)), gr.update(), gr.update(), gr.update()
    # Empty the form so a second press cannot add the same person again.
    return notice("ok", t("admin.added", name=user.name, role=user.role)), show_users(ctx), "", ""


def change_user(ctx: StudioContext, action: str, name: str):
    name = (name or "").strip()
    try:
        if action == "token":
            token = accounts.create_token(ctx.engine, name)
            message = notice("ok", t("admin.token", name=name, token=token))
        else:
            accounts.set_disabled(ctx.engine, name, action == "disable")
            message = notice("ok", t(f"admin.{action}d", name=name))
    except AccountError as exc:
        return notice("error", str(exc)), gr.update()
    return message, show_users(ctx)


def build(ctx: StudioContext, tab: gr.Tab) -> AdminTab:
    gr.Markdown(t("admin.users_title"))
    users = gr.Dataframe(headers=USER_COLUMNS, interactive=False, elem_id="admin-users")
    with gr.Row():
        name = gr.Textbox(label=t("admin.name"), max_lines=1, elem_id="admin-name")
        role = gr.Dropdown(["trainer", "rater", "admin"], value="trainer", label=t("admin.role"), elem_id="admin-role")
        password = gr.Textbox(label=t("admin.password"), type="password", max_lines=1, elem_id="admin-password")
    add = gr.Button(t("admin.add"), variant="primary", elem_id="admin-add")
    add_message = gr.HTML(elem_id="admin-add-message")
    with gr.Row():
        who = gr.Textbox(label=t("admin.who"), max_lines=1, elem_id="admin-who")
        disable = gr.Button(t("admin.disable"), elem_id="admin-disable")
        enable = gr.Button(t("admin.enable"), elem_id="admin-enable")
        token = gr.Button(t("admin.new_token"), elem_id="admin-token")
    change_message = gr.HTML(elem_id="admin-change-message")
    gr.Markdown(t("admin.audit_title"))
    audit = gr.Dataframe(headers=AUDIT_COLUMNS, interactive=False, elem_id="admin-audit")
    refresh = gr.Button(t("admin.refresh"), size="sm")
    gr.Markdown(t("admin.blocklist_title"))
    rules = gr.Dataframe(headers=RULE_COLUMNS, interactive=False, elem_id="admin-blocklist")
    with gr.Row():
        rule_kind = gr.Dropdown(["word", "regex"], value="word", label=t("admin.rule_kind"), elem_id="admin-rule-kind")
        rule_pattern = gr.Textbox(label=t("admin.rule_pattern"), max_lines=1, max_length=500, elem_id="admin-rule-pattern")
        rule_add = gr.Button(t("admin.rule_add"), elem_id="admin-rule-add")
    with gr.Row():
        rule_id = gr.Number(label=t("admin.rule_id"), precision=0, minimum=1, elem_id="admin-rule-id")
        rule_remove = gr.Button(t("admin.rule_remove"), elem_id="admin-rule-remove")
    rule_message = gr.HTML(elem_id="admin-rule-message")
    with gr.Accordion(t("admin.settings_title"), open=False):
        gr.Markdown(t("admin.settings_help"))
        settings = gr.Dataframe(headers=SETTING_COLUMNS, interactive=False, wrap=True, elem_id="admin-settings")

    tab.select(bind(show_users, ctx), None, users, show_progress="hidden")
    tab.select(bind(show_audit, ctx), None, audit, show_progress="hidden")
    tab.select(bind(show_settings, ctx), None, settings, show_progress="hidden")
    tab.select(bind(show_rules, ctx), None, rules, show_progress="hidden")

    def add_rule_as_admin(kind: str, pattern: str, request: gr.Request):
        return add_block_rule(ctx, kind, pattern, getattr(request, "username", None) or "admin")

    add_rule_as_admin.__name__ = "add_block_rule"  # the gate audits events by handler name
    rule_add.click(add_rule_as_admin, [rule_kind, rule_pattern], [rule_message, rules, rule_pattern]).then(
        bind(show_audit, ctx), None, audit, show_progress="hidden")
    rule_remove.click(bind(remove_block_rule, ctx), [rule_id], [rule_message, rules]).then(
        bind(show_audit, ctx), None, audit, show_progress="hidden")
    refresh.click(bind(show_audit, ctx), None, audit, show_progress="hidden")
    # The gate writes the audit line after the event; then the log is re-read.
    add.click(bind(add_user, ctx), [name, role, password], [add_message, users, name, password]).then(
        bind(show_audit, ctx), None, audit, show_progress="hidden")
    for button, action in ((disable, "disable"), (enable, "enable"), (token, "token")):
        button.click(bind(change_user, ctx, action), [who], [change_message, users]).then(
            bind(show_audit, ctx), None, audit, show_progress="hidden")
    return AdminTab(users=users)
