"""How a stored value shows as text: in a table cell, in the edit form, inside Markdown."""

from __future__ import annotations

import json
import re
from typing import Any

CELL_CHARS = 400  # longer cells are shortened in the table; the edit form shows all
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def cell_text(value: Any, limit: int | None = None) -> str:
    """A cell as plain text: chat turns one per line, other lists and objects as JSON."""
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value):
        text = "\n".join(f"{m['role']}: {m.get('content', '')}" for m in value)
    elif isinstance(value, (list, dict)):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = "" if value is None else str(value)
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def field_text(value: Any) -> str:
    """A field as the edit form shows it: chat messages as indented JSON."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, indent=1)
    return "" if value is None else str(value)


def inert_markdown(value: Any) -> str:
    """User text made inert inside Markdown (a table cell): every ASCII punctuation mark
    backslash-quoted, so no tag, link or emphasis can start; newlines become spaces."""
    return _PUNCTUATION.sub(r"\\\1", " ".join(str(value).split()))
