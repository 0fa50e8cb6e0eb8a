"""The quality report and the token preview on the tiny tokenizer: each finding counted
and located, figures as plotly JSON, and preview spans that match the label mask."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from studio.core.config import TemplateSection
from studio.core.quality import build_report, preview_tokens, rows_to_drop
from studio.core.templates import encode_example


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def row(i: int, **fields) -> dict:
    return {"instruction": f"Repeat the word {i}.", "input": "", "output": f"word {i}", "category": "a" if i % 3 else "b", **fields}


ROWS = [
    row(0),
    row(1),
    row(0),  # exact duplicate of 0 (category differs: still the same example)
    {**row(1), "instruction": "REPEAT the word 1 !"},  # near duplicate of 1
    row(4, output="x"),  # very short
    row(5, output="### Response: leaked"),  # template marker in the data
    row(6, input=" ".join(["long"] * 60)),  # over the cutoff
]


def test_report_finds_each_problem(tok):
    report = build_report(ROWS, tok, TemplateSection(), max_length=64)
    assert report["rows"] == 7
    assert report["exact_duplicates"] == {"rows": 1, "groups": 1, "examples": [[0, 2]]}
    assert report["near_duplicates"] == {"rows": 1, "groups": 1, "examples": [[1, 3]]}
    assert report["short_responses"]["examples"] == [4]
    assert report["marker_leaks"] == {"rows": 1, "markers": {"### Response:": 1}, "examples": [5]}
    assert report["empty_responses"]["rows"] == 0
    lengths = [len(encode_example(tok, r, 10**9).input_ids) for r in ROWS]
    over = [i for i, n in enumerate(lengths) if n > 64]
    assert over == [6] and report["truncated"]["examples"] == over
    assert report["truncated"]["max_tokens_cut"] == lengths[6] - 64
    assert report["tokens"]["max"] == max(lengths) and report["tokens"]["total"] == sum(lengths)
    assert report["categories"] == {"column": "category", "counts": {"a": 4, "b": 3}}
    assert set(report["fixes"]) == {"drop_duplicates", "drop_near_duplicates"}
    figure = report["figures"]["lengths"]
    json.dumps(report)  # JSON-able, figures included
    assert figure["data"][0]["type"] == "bar" and sum(figure["data"][0]["y"]) == 7
    assert report["figures"]["categories"]["data"][0]["x"] == ["a", "b"]


def test_report_for_chat_rows_and_no_category(tok):
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "<|im_start|>x"}]}
    report = build_report([chat, chat], tok, TemplateSection(name="chatml"), max_length=512)
    assert report["exact_duplicates"]["rows"] == 1 and report["categories"] is None
    assert report["marker_leaks"]["markers"] == {"<|im_start|>": 2}


def test_fixes_choose_rows():
    assert rows_to_drop(ROWS, "drop_duplicates") == [2]
    assert rows_to_drop(ROWS, "drop_near_duplicates") == [2, 3]
    assert rows_to_drop([row(1, output=" "), row(2)], "drop_empty") == [0]


@pytest.mark.parametrize("name", ["alpaca", "chatml", "model"])
def test_preview_spans_follow_the_mask(tok, name):
    template = TemplateSection(name=name)
    full = encode_example(tok, ROWS[0], 10**9, template)
    cutoff = len(full.input_ids) - 2
    preview = preview_tokens(tok, ROWS[0], template, cutoff)
    assert preview["tokens"] == len(full.input_ids) and preview["cut_tokens"] == 2
    assert preview["kept_tokens"] == cutoff and preview["truncated"]
    assert preview["trained_tokens"] == full.trained_tokens - 2
    assert sum(s["tokens"] for s in preview["spans"]) == len(full.input_ids)
    trained = [s for s in preview["spans"] if s["trained"]]
    assert [s["cut"] for s in trained] == [False, True]  # the reply runs past the cutoff
    assert "".join(s["text"] for s in preview["spans"]) == tok.decode(full.input_ids, skip_special_tokens=False)
    assert "word 0" in "".join(s["text"] for s in trained)
