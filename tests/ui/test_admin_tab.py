"""The Admin tab's handlers on a real DB: users, tokens, the audit log, the settings view."""

from __future__ import annotations

from studio.services import accounts
from studio.settings import Settings
from studio.ui import admin_tab

PASSWORD = "correct horse battery"


def test_add_disable_and_token(ctx):
    message, users, name, password = admin_tab.add_user(ctx, "tess", "trainer", PASSWORD)
    assert "Added tess as trainer" in message and name == "" and password == ""
    assert users.values.tolist()[0][:3] == ["tess", "trainer", "active"]
    message, *_ = admin_tab.add_user(ctx, "tess", "trainer", PASSWORD)
    assert "already exists" in message
    message, *_ = admin_tab.add_user(ctx, "x", "rater", "short")
    assert "at least 8" in message
    message, users = admin_tab.change_user(ctx, "disable", "tess")
    assert "disabled" in message and users.values.tolist()[0][2] == "disabled"
    message, _users = admin_tab.change_user(ctx, "token", "tess")
    token = message.split(": ")[-1].split("<")[0]
    assert accounts.identity_for_token(ctx.engine, token) is None  # disabled
    admin_tab.change_user(ctx, "enable", "tess")
    assert accounts.identity_for_token(ctx.engine, token).name == "tess"
    message, _ = admin_tab.change_user(ctx, "disable", "nobody")
    assert "no user named" in message


def test_settings_view_hides_passwords(tmp_path):
    class Context:
        settings = Settings(data_dir=tmp_path, database_url="postgresql+psycopg://studio:s3cret@db/studio",
                            broker_url="redis://:hunter2@redis:6379/0")

    table = admin_tab.show_settings(Context).to_string()
    assert "s3cret" not in table and "hunter2" not in table and "STUDIO_DATABASE_URL" in table


def test_blocklist_panel(ctx):
    message, rules, pattern = admin_tab.add_block_rule(ctx, "regex", r"\bsecret\d+", "ada")
    assert "Blocked (regex)" in message and pattern == ""
    assert rules.values.tolist()[0][1:4] == ["regex", r"\bsecret\d+", "ada"]
    message, *_ = admin_tab.add_block_rule(ctx, "regex", "(unclosed", "ada")
    assert "notice-error" in message
    rule_id = rules.values.tolist()[0][0]
    message, rules = admin_tab.remove_block_rule(ctx, rule_id)
    assert "removed" in message and rules.empty
    message, _ = admin_tab.remove_block_rule(ctx, 999)
    assert "does not exist" in message
    assert "notice-error" in admin_tab.remove_block_rule(ctx, None)[0]
