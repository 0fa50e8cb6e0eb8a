"""Padding-free packing trains on exactly what padded batches train on.

Measured on transformers 5.x: packed rows are kept apart (block-causal mask from the
restarting position_ids) only when the model runs without a KV cache; with the default
`use_cache=True` they silently attend to each other. The recipe turns the cache off.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from studio.core.config import TrainingSection
from studio.core.demo import demo_dataset
from studio.core.templates import encode_example
from studio.services import jobs
from worker.recipe import make_collator

QUICK = {
    "training": {
        "max_steps": 3, "batch_size": 8, "sample_every": 100, "max_length": 128, "max_new_tokens": 2,
        "precision": "fp32",
    },
    "data": {"probe_count": 1, "exact_match_rows": 1},
}


def _batch_rows(tokenizer, n: int = 6) -> list[dict]:
    rows = []
    for row in demo_dataset(n, seed=11):
        ex = encode_example(tokenizer, row, 128)
        rows.append({"input_ids": ex.input_ids, "attention_mask": [1] * len(ex.input_ids), "labels": ex.labels})
    assert len({len(r["input_ids"]) for r in rows}) > 1, "rows of one length would not need padding"
    return rows


def _losses(model_dir, use_cache: bool) -> tuple[float, float]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    model.config.use_cache = use_cache
    rows = _batch_rows(tokenizer)
    padded = make_collator(tokenizer, TrainingSection(packing=False))(rows)
    packed = make_collator(tokenizer, TrainingSection(packing=True))(rows)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    targets = lambda batch: int((batch["labels"][:, 1:] != -100).sum())  # noqa: E731
    assert targets(packed) == targets(padded)  # no row predicts across a boundary
    with torch.no_grad():
        return float(model(**padded).loss), float(model(**packed).loss)


def test_packed_loss_equals_padded_loss_without_cache(tiny_model_dir):
    padded, packed = _losses(tiny_model_dir, use_cache=False)
    assert packed == pytest.approx(padded, abs=1e-5)


def test_with_a_cache_packed_rows_attend_to_each_other(tiny_model_dir):
    """The fact the recipe guards against; if this starts failing, transformers fixed it."""
    padded, packed = _losses(tiny_model_dir, use_cache=True)
    assert abs(packed - padded) > 1e-4


def test_packed_job_trains_like_a_padded_job(run_here, ctx):
    """Through the real recipe: same first-step loss and step-0 eval loss, packed or not."""
    results = {}
    for packing in (False, True):
        config = {**QUICK, "training": {**QUICK["training"], "packing": packing}}
        job = run_here(config)
        assert job.status.value == "succeeded", job.error
        metrics = jobs.job_metrics(ctx, job.id)
        train = {m.step: m.loss for m in metrics if m.split == "train"}
        evals = {m.step: m.loss for m in metrics if m.split == "eval"}
        results[packing] = (train[1], evals[0])
        assert any("packed rows" in line for line in jobs.job_logs(ctx, job.id)) == packing
    assert results[True][0] == pytest.approx(results[False][0], abs=1e-4)
    assert results[True][1] == pytest.approx(results[False][1], abs=1e-4)
