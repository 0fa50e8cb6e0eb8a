"""What the tab says after a service call: a refusal listing every problem, or the new version."""

from __future__ import annotations

import html

import gradio as gr

from studio.models import DatasetPublic
from studio.ui.text import notice, t


def refused(key: str, exc: Exception) -> str:
    """A service's refusal as a message listing every problem."""
    return notice("error", t(key), getattr(exc, "errors", None) or [str(exc)])


def saved_version(saved: DatasetPublic, base_version_id: int | None):
    """(message next to the control, changed) after a change: a new version empties the
    message (the status line and a toast announce it); a change that left the rows as
    they were makes none and says so."""
    if saved.version_id == base_version_id:
        return notice("ok", t("datasets.unchanged", name=saved.name, version=saved.version)), gr.skip()
    return "", {"dataset_id": saved.id, "version_id": saved.version_id}


def toast(text: str) -> None:
    """A confirmation where the eye is (a toast, top right), whatever panel is scrolled to.
    Gradio renders toast text as HTML, so the user's names in it are escaped."""
    gr.Info(html.escape(text))


def cleared() -> str:
    """An emptied message box (another dataset was picked)."""
    return ""
