"""An idle page sends no events: nothing on screen changes, so nothing may run. A loop
between two handlers of the job picker once kept a core busy on every tab (issue 10)."""

from __future__ import annotations

import math
import time

import pytest

from studio.ui.jobs_tab import LIST_POLL_SECONDS
from tests.conftest import make_settings

pytestmark = pytest.mark.e2e

QUIET_S, SETTLE_LIMIT_S, WINDOW_MS = 3.0, 120.0, 4000  # the loop sent ~6 events/s


def test_idle_tabs_send_no_events(tmp_path, start_server, page):
    url = start_server(make_settings(tmp_path / "data"))
    events: list[str] = []
    last = [time.monotonic()]

    def sent(request) -> None:
        if "/queue/join" in request.url:
            events.append(request.post_data or "")
            last[0] = time.monotonic()

    page.on("request", sent)
    busy = {}
    for tab in ("datasets", "train", "jobs", "compare", "chat", "evaluate"):
        events.clear()
        last[0] = time.monotonic()
        page.goto(f"{url}/?tab={tab}")
        # The page's own load events first (slow on a loaded machine): wait for a quiet spell.
        # On the Jobs tab the list timer never lets one last longer than its period.
        quiet = min(QUIET_S, LIST_POLL_SECONDS * 0.8) if tab == "jobs" else QUIET_S
        started = time.monotonic()
        while (not events or time.monotonic() - last[0] < quiet) and time.monotonic() - started < SETTLE_LIMIT_S:
            page.wait_for_timeout(200)
        events.clear()
        page.wait_for_timeout(WINDOW_MS)
        # The Jobs tab lists new jobs on a slow timer; every other tab has nothing to ask.
        allowed = math.ceil(WINDOW_MS / 1000 / LIST_POLL_SECONDS) if tab == "jobs" else 0
        if len(events) > allowed:
            busy[tab] = events[:5]
    assert not busy, f"events in {WINDOW_MS} ms on idle tabs: {busy}"
