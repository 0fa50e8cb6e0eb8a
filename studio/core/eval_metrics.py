"""Automatic metrics of an evaluation run, per row and per model (overall and per category).

- exact match: studio.core.metrics.exact_match, the training recipe's own (whitespace
  around the answer ignored);
- ROUGE-1/2/L F-measures (Google's `rouge-score`, Porter stemming), mean over rows;
- BLEU and chrF (`sacrebleu`): corpus-level over the rows, as sacrebleu reports them (a
  mean of sentence BLEUs is not BLEU); the rows' own sentence scores are kept per row;
- perplexity on the references: exp of the mean negative log-likelihood per reference
  token over all the rows (token-weighted, like the training's eval loss);
- length: words in the answer.

Metrics that need a reference are None for rows without one (typed prompts). Nothing is
fetched from a hub: no `evaluate.load`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Optional, Sequence

from studio.core.metrics import exact_match

METRICS = ("perplexity", "exact_match", "rouge1", "rouge2", "rougeL", "bleu", "chrf", "length")
LOWER_IS_BETTER = frozenset({"perplexity"})
REFERENCE_METRICS = frozenset(METRICS) - {"length"}


@lru_cache(maxsize=1)
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


@dataclass(frozen=True)
class Scored:
    """One answer with what it is scored against; nll/tokens from teacher forcing."""

    output: str
    reference: Optional[str]
    category: Optional[str] = None
    nll: Optional[float] = None  # summed over the reference's trained tokens
    tokens: int = 0


def row_scores(item: Scored) -> dict[str, Optional[float]]:
    """The metrics of one answer (what the row view shows)."""
    import sacrebleu

    scores: dict[str, Optional[float]] = {m: None for m in METRICS}
    scores["length"] = float(len(item.output.split()))
    if item.nll is not None and item.tokens > 0:
        scores["perplexity"] = math.exp(item.nll / item.tokens)
    if item.reference is None:
        return scores
    scores["exact_match"] = exact_match(item.output, item.reference)
    rouge = _rouge().score(item.reference, item.output)
    for name in ("rouge1", "rouge2", "rougeL"):
        scores[name] = rouge[name].fmeasure
    scores["bleu"] = sacrebleu.sentence_bleu(item.output.strip(), [item.reference.strip()]).score
    scores["chrf"] = sacrebleu.sentence_chrf(item.output.strip(), [item.reference.strip()]).score
    return scores


def _mean(values: Iterable[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def aggregate(items: Sequence[Scored], per_row: Sequence[dict[str, Optional[float]]]) -> dict[str, Optional[float]]:
    """A model's metrics over `items` (per_row: their row_scores, in the same order)."""
    import sacrebleu

    out: dict[str, Optional[float]] = {m: None for m in METRICS}
    out["rows"] = float(len(items))
    out["length"] = _mean(s["length"] for s in per_row)
    nll = sum(i.nll for i in items if i.nll is not None and i.tokens > 0)
    tokens = sum(i.tokens for i in items if i.nll is not None and i.tokens > 0)
    if tokens:
        out["perplexity"] = math.exp(nll / tokens)
    referenced = [(i, s) for i, s in zip(items, per_row) if i.reference is not None]
    if not referenced:
        return out
    for name in ("exact_match", "rouge1", "rouge2", "rougeL"):
        out[name] = _mean(s[name] for _, s in referenced)
    outputs = [i.output.strip() for i, _ in referenced]
    references = [[i.reference.strip() for i, _ in referenced]]
    out["bleu"] = sacrebleu.corpus_bleu(outputs, references).score
    out["chrf"] = sacrebleu.corpus_chrf(outputs, references).score
    return out


def summarize(items: Sequence[Scored]) -> tuple[list[dict], dict[str, Optional[float]], dict[str, dict]]:
    """(per-row scores, overall metrics, metrics per category) for one model's answers."""
    per_row = [row_scores(i) for i in items]
    overall = aggregate(items, per_row)
    categories: dict[str, dict] = {}
    names = sorted({i.category for i in items if i.category is not None})
    for name in names:
        picked = [k for k, i in enumerate(items) if i.category == name]
        categories[name] = aggregate([items[k] for k in picked], [per_row[k] for k in picked])
    return per_row, overall, categories
