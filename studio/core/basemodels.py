"""Where a base model comes from: 'demo', a local folder, or a Hugging Face hub id. All
three go through the same from_pretrained path."""

from __future__ import annotations

import re
from pathlib import Path

DEMO = "demo"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_like_path(value: str) -> bool:
    return value.startswith(("/", ".", "~")) or "\\" in value or value.count("/") > 1


def check_base_model(value: str) -> str | None:
    """A plain-language problem with a base model reference, or None when usable."""
    value = value.strip()
    if not value:
        return "model.base_model: choose a base model"
    if value == DEMO:
        return None
    if looks_like_path(value):
        folder = Path(value).expanduser()
        if not folder.is_dir():
            return f"model.base_model: folder '{value}' does not exist"
        if not (folder / "config.json").is_file():
            return f"model.base_model: folder '{value}' has no config.json (not a transformers model folder)"
        return None
    if not _HUB_ID.match(value):
        return f"model.base_model: '{value}' is neither a local folder nor a hub id like 'org/name'"
    return None


def resolve_base_model(value: str) -> str:
    """What to pass to from_pretrained."""
    if value == DEMO:
        from studio.core.demo import demo_base_dir

        return str(demo_base_dir())
    if looks_like_path(value):
        return str(Path(value).expanduser().resolve())
    return value
