"""Evaluation metrics for generated responses.

Exact match is the demo's headline number: a response counts only when it equals the
reference, ignoring surrounding whitespace (generation often ends with a newline).
"""

from __future__ import annotations

from typing import Iterable


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when prediction equals reference after stripping surrounding whitespace, else 0.0."""
    return 1.0 if prediction.strip() == reference.strip() else 0.0


def mean_exact_match(pairs: Iterable[tuple[str, str]]) -> float:
    """Mean exact_match over (prediction, reference) pairs; 0.0 when there are none."""
    scores = [exact_match(prediction, reference) for prediction, reference in pairs]
    return sum(scores) / len(scores) if scores else 0.0
