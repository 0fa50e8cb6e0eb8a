"""The page's place in its URL, so a reload lands where the user was: `?tab=jobs&job=3`,
`?tab=train&dataset=2`. The server reads the query at page load (gr.Request); the browser
writes it with history.replaceState when the user picks a tab, a job or a dataset (no
reload, no history entry per click)."""

from __future__ import annotations

import gradio as gr

TABS = ("datasets", "train", "jobs", "compare", "chat", "evaluate", "admin")


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


# Tabs are switched in the browser, by clicking the tab's button (Gradio gives it the id
# "<tab elem_id>-button"), never by a server event with gr.Tabs as an output: once the
# Tabs are any event's output, Gradio re-reads every component of the page at each loading
# status change of every event after it (Blocks' update_loading_stati_state), which cost
# a watched job's page a fifth of a core. Tab elem_ids are "tab-<id>".
_CLICK_TAB = "(id) => { const b = document.getElementById(`tab-${id}-button`); if (b) b.click(); }"


def open_tab_js(tab_id: str, when_input: bool = False, when_ok: bool = False) -> str:
    """A browser function that opens the tab `tab_id`; with when_input, only when the
    event's input is set (a picked job); with when_ok, only when its input is a message
    that says it worked (studio.ui.text.notice "ok": a launch)."""
    guard = "if (arguments[0] === null || arguments[0] === undefined || arguments[0] === '') return [];" if when_input else ""
    if when_ok:
        guard += "if (!String(arguments[0] ?? '').includes('notice-ok')) return [];"
    return f"""function() {{
    {guard}
    ({_CLICK_TAB})({tab_id!r});
    return [];
}}"""


# At page load, after the Admin tab was shown or hidden: open the tab the URL names (as
# wanted_tab reads it), then mark the page ready. The tabs' select events fire as the page
# mounts, and the page-load handlers read the URL (Gradio sends it as the Referer), so the
# tab must not be written before then.
READY_JS = f"""() => {{
    const query = new URLSearchParams(window.location.search);
    const tabs = {list(TABS)!r};
    const job = query.get("job") || "";
    const tab = tabs.includes(query.get("tab")) ? query.get("tab") : (/^[1-9][0-9]{{0,17}}$/.test(job) ? "jobs" : null);
    if (tab) ({_CLICK_TAB})(tab);
    window.studioUrlReady = true;
    return [];
}}"""


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
