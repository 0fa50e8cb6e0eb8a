"""The safety filter: a blocklist of words and regular expressions, checked on what a
user sends and on what a model answers, plus a hook for a local classifier
(STUDIO_SAFETY_CLASSIFIER=module:function, called with a text, returning a reason to
block it or None)."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

KINDS = ("word", "regex")
MAX_PATTERN = 500
REFUSAL = "Sorry, I can't help with that request."

Classifier = Callable[[str], Optional[str]]


def check_rule(kind: str, pattern: str) -> Optional[str]:
    """What is wrong with a blocklist entry, or None."""
    if kind not in KINDS:
        return "kind: must be 'word' or 'regex'"
    if not pattern.strip():
        return "pattern: must not be empty"
    if len(pattern) > MAX_PATTERN:
        return f"pattern: at most {MAX_PATTERN} characters"
    if kind == "regex":
        try:
            re.compile(pattern)
        except re.error as exc:
            return f"pattern: not a regular expression ({exc})"
    return None


@dataclass(frozen=True)
class Blocklist:
    rules: tuple[tuple[str, str, re.Pattern], ...] = ()
    classifier: Optional[Classifier] = None

    @classmethod
    def compile(cls, rules: Iterable[tuple[str, str]], classifier: Optional[Classifier] = None) -> "Blocklist":
        """From (kind, pattern) pairs: a word matches whole, in any case; a regex anywhere."""
        compiled = []
        for kind, pattern in rules:
            if check_rule(kind, pattern) is not None:
                continue
            regex = re.compile(rf"(?<!\w){re.escape(pattern.strip())}(?!\w)", re.IGNORECASE) if kind == "word" else re.compile(pattern)
            compiled.append((kind, pattern, regex))
        return cls(tuple(compiled), classifier)

    def blocks(self, text: str) -> Optional[str]:
        """Why `text` is blocked ('word: ...', 'regex: ...', 'classifier: ...'), or None."""
        for kind, pattern, regex in self.rules:
            if regex.search(text):
                return f"{kind}: {pattern}"
        if self.classifier is not None:
            reason = self.classifier(text)
            if reason:
                return f"classifier: {reason}"
        return None


def load_classifier(spec: Optional[str]) -> Optional[Classifier]:
    """The classifier hook named 'module:function', or None when unset."""
    if not spec:
        return None
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"STUDIO_SAFETY_CLASSIFIER: '{spec}' is not module:function")
    return getattr(importlib.import_module(module), name)
