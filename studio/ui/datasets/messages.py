"""What the tab says after a service call: a refusal listing every problem, or the new version."""

from __future__ import annotations

import gradio as gr

from studio.models import DatasetPublic
from studio.ui.text import notice, t


def refused(key: str, exc: Exception) -> str:
    """A service's refusal as a message listing every problem."""
    return notice("error", t(key), getattr(exc, "errors", None) or [str(exc)])


def saved_version(saved: DatasetPublic, base_version_id: int | None):
    """(message, changed) after a change: the history announces a new version; a change
    that left the rows as they were makes none."""
    if saved.version_id == base_version_id:
        return notice("ok", t("datasets.unchanged", version=saved.version)), gr.skip()
    return gr.skip(), {"dataset_id": saved.id, "version_id": saved.version_id}
