"""The page's place in its URL, so a reload lands where the user was: `?tab=jobs&job=3`,
`?tab=train&dataset=2`. The server reads the query at page load (gr.Request); the browser
writes it with history.replaceState when the user picks a tab, a job or a dataset (no
reload, no history entry per click)."""

from __future__ import annotations

import gradio as gr

TABS = ("datasets", "train", "jobs", "compare", "chat", "admin")


def wanted_id(request: gr.Request | None, name: str) -> int | None:
    """A positive id from the page's query (?job=3), or None when absent or not an id."""
    value = (request.query_params.get(name) or "") if request is not None else ""
    return int(value) if value.isdigit() and 0 < len(value) < 19 and int(value) > 0 else None


def wanted_tab(request: gr.Request | None) -> str | None:
    """The tab named in the query; a job alone means the Jobs tab."""
    tab = (request.query_params.get("tab") or "") if request is not None else ""
    if tab in TABS:
        return tab
    return "jobs" if wanted_id(request, "job") is not None else None


# Set once the page has opened the tab its URL names: the tabs' select events fire as the
# page mounts, and the page-load handler reads the URL (Gradio sends it as the Referer),
# so the tab must not be written before then.
READY_JS = "() => { window.studioUrlReady = true; return []; }"


def set_param_js(name: str, value: str | None = None, wait_for_ready: bool = False) -> str:
    """A browser function that writes ?name=value (value None: the function's input)
    into the URL; an empty value removes the parameter."""
    source = "String(arguments[0] ?? '')" if value is None else repr(value)
    guard = "if (!window.studioUrlReady) return [];" if wait_for_ready else ""
    return f"""function() {{
    {guard}
    const value = {source};
    const url = new URL(window.location.href);
    if (value === "" || value === "null") url.searchParams.delete({name!r});
    else url.searchParams.set({name!r}, value);
    window.history.replaceState(null, "", url);
    return [];
}}"""
