"""The quality report of a dataset version, and the token preview of one row, for a
tokenizer and a template: what the model will actually see and learn.

Checks: exact and near duplicates, empty and very short responses, token lengths against
the cutoff (rows truncated and by how much), category balance, and template markers
leaking into the data. Near duplicates are rows whose text is equal once case,
punctuation and spacing are ignored: cheap, exact to explain, and safe to drop.

No DB, no Gradio: plain rows in, a JSON-able report out (plotly figures as JSON).
"""

from __future__ import annotations

import re
import statistics
import time
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

from studio.core.config import TemplateSection
from studio.core.datasets import ALPACA_FIELDS, response_text, row_text
from studio.core.templates import IGNORE_INDEX, TEMPLATE_MARKERS, TemplateError, encode_rows, token_counts

UNLIMITED = 10**9  # encode without a cut to learn each row's full length (the preview)
CHUNK = 2000  # rows tokenized per batch: bounded memory for 50k-row datasets
SHORT_CHARS = 2  # responses shorter than this (after trimming) are flagged as very short
EXAMPLES = 20  # row indices listed per finding
FIXES = {
    "drop_duplicates": "drop exact duplicates (keep the first)",
    "drop_near_duplicates": "drop near duplicates (same text ignoring case, punctuation, spacing)",
    "drop_empty": "drop rows with an empty or whitespace-only response",
}
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)


def exact_key(row: Mapping[str, Any]) -> str:
    """What makes two rows the same example (extra fields like category do not)."""
    return row_text(row)


def near_key(row: Mapping[str, Any]) -> str:
    return " ".join(_NOT_WORD.sub(" ", row_text(row).lower()).split())


def duplicate_groups(rows: Sequence[Mapping[str, Any]], key) -> list[list[int]]:
    """Groups of row indices sharing a key, each in row order, groups by first row."""
    seen: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        seen.setdefault(key(row), []).append(index)
    return [group for group in seen.values() if len(group) > 1]


def is_empty_response(row: Mapping[str, Any]) -> bool:
    if "messages" in row:
        return any(m["role"] == "assistant" and not m["content"].strip() for m in row["messages"])
    return not str(row.get("output") or "").strip()


def rows_to_drop(rows: Sequence[Mapping[str, Any]], fix: str) -> list[int]:
    """Indices a safe fix removes: all but the first of each duplicate group, or empties."""
    if fix == "drop_empty":
        return [i for i, row in enumerate(rows) if is_empty_response(row)]
    if fix in ("drop_duplicates", "drop_near_duplicates"):
        key = exact_key if fix == "drop_duplicates" else near_key
        return sorted(i for group in duplicate_groups(rows, key) for i in group[1:])
    raise ValueError(f"fix: '{fix}' is not one of {', '.join(FIXES)}")


def _text_fields(row: Mapping[str, Any]) -> Iterable[str]:
    if "messages" in row:
        return (m["content"] for m in row["messages"])
    return (str(row.get(f) or "") for f in ALPACA_FIELDS)


def marker_leaks(rows: Sequence[Mapping[str, Any]], markers: Sequence[str]) -> tuple[dict[str, int], list[int]]:
    """How many rows hold each marker, and which rows hold any."""
    counts: Counter[str] = Counter()
    leaking = []
    for index, row in enumerate(rows):
        text = "\n".join(_text_fields(row))
        found = [m for m in markers if m in text]
        if found:
            counts.update(found)
            leaking.append(index)
    return dict(counts.most_common()), leaking


def token_stats(tokenizer, rows: Sequence[Mapping[str, Any]], template: TemplateSection) -> tuple[list[int], list[int], list[int]]:
    """Per row: full token length, trained tokens, and the position of the first trained
    token (a row cut before it has nothing left to learn)."""
    lengths, trained, first = [], [], []
    for start in range(0, len(rows), CHUNK):
        for length, n_trained, first_trained in token_counts(tokenizer, rows[start : start + CHUNK], template):
            lengths.append(length)
            trained.append(n_trained)
            first.append(first_trained)
    return lengths, trained, first


def length_figure(lengths: list[int], max_length: int) -> dict:
    """Histogram of row lengths in tokens with the cutoff marked (bins computed here, so
    the figure stays small for 50k rows)."""
    import plotly.graph_objects as go

    top = max(max(lengths), max_length + 1)
    width = max(1, -(-top // 60))
    counts = Counter(length // width for length in lengths)
    bins = range(0, top // width + 1)
    colours = ["#d62728" if (b + 1) * width > max_length else "#1f77b4" for b in bins]
    fig = go.Figure(go.Bar(x=[b * width for b in bins], y=[counts.get(b, 0) for b in bins], width=width,
                           marker_color=colours, offset=0, name="rows"))
    fig.add_vline(x=max_length, line_dash="dash", line_color="#d62728", annotation_text=f"cutoff {max_length}")
    fig.update_layout(title="Tokens per row", xaxis_title="tokens", yaxis_title="rows", bargap=0.05,
                      margin=dict(l=40, r=20, t=50, b=40), height=320)
    return fig.to_plotly_json()


def category_figure(counts: Mapping[str, int], column: str) -> dict:
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=list(counts), y=list(counts.values()), name=column))
    fig.update_layout(title=f"Rows per {column}", yaxis_title="rows", margin=dict(l=40, r=20, t=50, b=80), height=320)
    return fig.to_plotly_json()


def _jsonable(figure: dict) -> dict:
    """plotly JSON with numpy values turned into lists."""
    import json

    import plotly.io as pio

    return json.loads(pio.to_json(figure))


def build_report(
    rows: Sequence[Mapping[str, Any]],
    tokenizer,
    template: TemplateSection,
    max_length: int,
    category_column: str = "category",
) -> dict[str, Any]:
    """The quality report (a JSON-able dict) for rows under a tokenizer and template."""
    started = time.perf_counter()
    lengths, trained, first = token_stats(tokenizer, rows, template)
    truncated = [i for i, n in enumerate(lengths) if n > max_length]
    cuts = [lengths[i] - max_length for i in truncated]
    dropped = [i for i, f in enumerate(first) if f >= max_length]
    exact = duplicate_groups(rows, exact_key)
    near = [g for g in duplicate_groups(rows, near_key) if len({exact_key(rows[i]) for i in g}) > 1]
    empty = [i for i, row in enumerate(rows) if is_empty_response(row)]
    empty_set = set(empty)
    short = [i for i, row in enumerate(rows) if i not in empty_set and len(response_text(row).strip()) < SHORT_CHARS]
    specials = [t for t in (tokenizer.bos_token, tokenizer.eos_token) if t]
    leak_counts, leaking = marker_leaks(rows, list(dict.fromkeys([*TEMPLATE_MARKERS, *specials])))
    categories = Counter(str(r[category_column]) for r in rows if category_column in r)
    report = {
        "rows": len(rows),
        "template": template.name,
        "max_length": max_length,
        "tokens": {
            "total": sum(lengths),
            "trained": sum(trained),
            "mean": round(statistics.fmean(lengths), 1) if lengths else 0,
            "median": statistics.median(lengths) if lengths else 0,
            "max": max(lengths, default=0),
        },
        "truncated": {
            "rows": len(truncated),
            "share": round(len(truncated) / max(1, len(rows)), 4),
            "mean_tokens_cut": round(statistics.fmean(cuts), 1) if cuts else 0,
            "max_tokens_cut": max(cuts, default=0),
            "rows_with_nothing_left": len(dropped),
            "examples": truncated[:EXAMPLES],
        },
        "exact_duplicates": {
            "rows": sum(len(g) - 1 for g in exact),
            "groups": len(exact),
            "examples": exact[:EXAMPLES],
        },
        "near_duplicates": {
            "rows": sum(len(g) - 1 for g in near),
            "groups": len(near),
            "examples": near[:EXAMPLES],
        },
        "empty_responses": {"rows": len(empty), "examples": empty[:EXAMPLES]},
        "short_responses": {"rows": len(short), "under_chars": SHORT_CHARS, "examples": short[:EXAMPLES]},
        "marker_leaks": {"rows": len(leaking), "markers": leak_counts, "examples": leaking[:EXAMPLES]},
        "categories": {"column": category_column, "counts": dict(categories.most_common())} if categories else None,
        "figures": {
            "lengths": _jsonable(length_figure(lengths, max_length)) if lengths else None,
            "categories": _jsonable(category_figure(dict(categories.most_common()), category_column)) if categories else None,
        },
        "fixes": {
            name: FIXES[name]
            for name, found in (("drop_duplicates", exact), ("drop_near_duplicates", near), ("drop_empty", empty))
            if found
        },
    }
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report


def preview_tokens(
    tokenizer, row: Mapping[str, Any], template: TemplateSection, max_length: int
) -> dict[str, Any]:
    """A row as spans of text, each trained or masked and kept or cut at max_length, with
    token counts: what the model sees and learns from this row."""
    enc = encode_rows(tokenizer, [row], UNLIMITED, template)[0]
    if enc is None:
        raise TemplateError(
            f"the {template.name} template leaves no token of this row to train on: it must write the "
            "assistant replies (messages with role 'assistant')"
        )
    ids, labels = enc.input_ids, enc.labels
    spans: list[dict[str, Any]] = []
    start = 0
    for end in range(1, len(ids) + 1):
        state = (labels[start] != IGNORE_INDEX, start >= max_length)
        if end == len(ids) or (labels[end] != IGNORE_INDEX, end >= max_length) != state:
            text = tokenizer.decode(ids[start:end], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            spans.append({"text": text, "trained": state[0], "cut": state[1], "tokens": end - start})
            start = end
    kept = labels[:max_length]
    trained_kept = len(kept) - kept.count(IGNORE_INDEX)
    return {
        "spans": spans,
        "tokens": len(ids),
        "kept_tokens": min(len(ids), max_length),
        "cut_tokens": max(0, len(ids) - max_length),
        "trained_tokens": trained_kept,
        "masked_tokens": len(kept) - trained_kept,
        "truncated": len(ids) > max_length,
        "nothing_to_learn": trained_kept == 0,
    }
