"""Packing trains on exactly what padded batches train on, and costs what padding costs.

Rows are packed into sequences ("bins") of at most max_length tokens (worker.packing).
Measured on transformers 5.x: packed rows are kept apart (block-causal mask from the
restarting position_ids) only when the model runs without a KV cache and without an
attention_mask; with the default `use_cache=True` they silently attend to each other.
The recipe turns the cache off and the collator sends no attention_mask.
"""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AttentionInterface, AttentionMaskInterface, AutoModelForCausalLM, AutoTokenizer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from studio.core.config import ConfigError, TrainingSection, build_config
from studio.core.demo import demo_dataset
from studio.core.templates import encode_example
from studio.services import jobs
from tests.conftest import upload_file
from worker.packing import PackedCollator, best_fit_decreasing, pack_rows, pack_steps, padding_share
from worker.recipe import make_collator

MAX_LENGTH = 128
QUICK = {
    "training": {
        "max_steps": 3, "batch_size": 8, "sample_every": 100, "max_length": MAX_LENGTH, "max_new_tokens": 2,
        "precision": "fp32",
    },
    "data": {"probe_count": 1, "exact_match_rows": 1},
}


def _rows(tokenizer, n: int = 12, seed: int = 11) -> list[dict]:
    rows = []
    for row in demo_dataset(n, seed=seed):
        ex = encode_example(tokenizer, row, MAX_LENGTH)
        rows.append({"input_ids": ex.input_ids, "attention_mask": [1] * len(ex.input_ids), "labels": ex.labels})
    assert len({len(r["input_ids"]) for r in rows}) > 1, "rows of one length would not need padding"
    return rows


def _model(model_dir, use_cache: bool = False, attention: str = "sdpa"):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attention).eval()
    model.config.use_cache = use_cache
    return model


def _row_spans(bin_: dict) -> list[tuple[int, int]]:
    starts = [i for i, p in enumerate(bin_["position_ids"]) if p == 0] + [len(bin_["position_ids"])]
    return list(zip(starts, starts[1:]))


# --- bin packing -----------------------------------------------------------------------


def test_best_fit_decreasing_fills_bins_without_overflow():
    rng = random.Random(0)
    lengths = [max(1, min(512, int(rng.lognormvariate(4.5, 0.7)))) for _ in range(3000)]
    bins = best_fit_decreasing(lengths, 512)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))  # every row once
    assert all(sum(lengths[i] for i in b) <= 512 for b in bins)
    assert len(bins) <= -(-sum(lengths) // 512) * 1.02  # within 2% of the bound
    assert best_fit_decreasing(lengths, 512) == bins  # deterministic: resumes see the same bins
    with pytest.raises(ValueError, match="row 1 has 9 tokens"):
        best_fit_decreasing([3, 9], 8)


def test_packed_bins_keep_every_token_and_mask_each_first_label(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = _rows(tokenizer, 30)
    bins = pack_rows(rows, MAX_LENGTH)
    assert len(bins) < len(rows) and all(len(b["input_ids"]) <= MAX_LENGTH for b in bins)
    pieces = sorted(
        (tuple(b["input_ids"][s:e]), tuple(b["labels"][s + 1 : e])) for b in bins for s, e in _row_spans(b)
    )
    assert pieces == sorted((tuple(r["input_ids"]), tuple(r["labels"][1:])) for r in rows)
    assert all(b["labels"][s] == -100 for b in bins for s, _ in _row_spans(b))


def test_steps_group_bins_of_a_length_so_they_pad_little():
    """Best fit leaves part-filled bins when many rows are long (here a median of ~240
    tokens, into bins of 512): at random in a step they pad up to its full bins; grouped by
    length, a step pads only the spread of its bins. Deterministic for a seed (a resume
    sees the same steps)."""
    rng = random.Random(3)
    lengths = [max(4, min(512, int(rng.lognormvariate(5.5, 0.4)))) for _ in range(600)]
    rows = [{"input_ids": [1] * n, "labels": [1] * n} for n in lengths]
    bins = pack_rows(rows, 512)
    fill = sum(len(b["input_ids"]) for b in bins) / (512 * len(bins))
    for per_step in (2, 8, 16):
        steps = pack_steps(rows, 512, per_step, seed=42)
        assert [len(s) for s in steps[:-1]] == [per_step] * (len(steps) - 1) and 0 < len(steps[-1]) <= per_step
        assert sorted(map(len, (b["input_ids"] for s in steps for b in s))) == sorted(len(b["input_ids"]) for b in bins)
        shuffled = bins[:]
        random.Random(0).shuffle(shuffled)
        at_random = padding_share([shuffled[i : i + per_step] for i in range(0, len(shuffled), per_step)])
        assert padding_share(steps) <= min(0.02, at_random / 3), (per_step, padding_share(steps), at_random, fill)
        assert pack_steps(rows, 512, per_step, seed=42) == steps
    assert pack_steps(rows, 512, 8, seed=1) != pack_steps(rows, 512, 8, seed=42)  # ties broken by the seed


# --- the guard: packed equals padded ---------------------------------------------------


def test_packed_logits_equal_each_row_run_alone(tiny_model_dir):
    """fp32, sdpa, a batch of several bins of several rows each, padded to the longest bin:
    every row's logits are those of the row run on its own."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = _model(tiny_model_dir)
    bins = pack_rows(_rows(tokenizer, 30), MAX_LENGTH)
    batch = PackedCollator(tokenizer.pad_token_id)([bins])  # one step of every bin
    assert batch["input_ids"].shape[0] == len(bins) and "attention_mask" not in batch
    assert any(len(b["input_ids"]) < batch["input_ids"].shape[1] for b in bins), "no padding to test"
    assert max(len(_row_spans(b)) for b in bins) >= 2, "no bin holds two rows"
    with torch.no_grad():
        packed = model(**batch).logits
        leaky = model(**batch, attention_mask=torch.ones_like(batch["input_ids"])).logits
        worst = leak = 0.0
        for index, b in enumerate(bins):
            for start, end in _row_spans(b):
                alone = model(input_ids=torch.tensor([b["input_ids"][start:end]])).logits[0]
                worst = max(worst, float((packed[index, start:end] - alone).abs().max()))
                leak = max(leak, float((leaky[index, start:end] - alone).abs().max()))
    assert worst < 1e-4
    assert leak > 1e-3  # the control: with a plain attention_mask the rows would see each other


def _losses(model_dir, use_cache: bool) -> tuple[float, float]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = _model(model_dir, use_cache)
    rows = _rows(tokenizer, 16)
    padded = make_collator(tokenizer, TrainingSection(packing=False))(rows)
    training = TrainingSection(packing=True, max_length=MAX_LENGTH)
    packed = make_collator(tokenizer, training)([pack_rows(rows, training.max_length)])
    assert 1 < packed["input_ids"].shape[0] < len(rows) and "attention_mask" not in packed
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


# --- cost: linear in the number of bins ------------------------------------------------


@pytest.fixture
def recorded_attention():
    """sdpa, as the models call it, recording the (batch, query, key) lengths of every call."""
    calls: list[tuple[int, int, int]] = []

    def recording(module, query, key, value, attention_mask, **kwargs):
        calls.append((query.shape[0], query.shape[2], key.shape[2]))
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("studio_recorded_sdpa", recording)
    AttentionMaskInterface.register("studio_recorded_sdpa", sdpa_mask)
    return calls


def test_attention_runs_per_bin_so_cost_is_linear(tiny_model_dir, recorded_attention):
    """Four times the rows: four times the bins, each attended over at most max_length
    tokens (attention cost bins x max_length^2); the old join of a batch into one
    sequence attended over all of it (cost rows^2)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = _model(tiny_model_dir, attention="studio_recorded_sdpa")
    rows = _rows(tokenizer, 160, seed=5)
    collate = PackedCollator(tokenizer.pad_token_id)
    cost = {}
    for n in (40, 160):
        recorded_attention.clear()
        bins = pack_rows(rows[:n], MAX_LENGTH)
        with torch.no_grad():
            model(**collate([bins]))
        assert recorded_attention and all(q <= MAX_LENGTH and k <= MAX_LENGTH for _, q, k in recorded_attention)
        assert {b for b, _, _ in recorded_attention} == {len(bins)}
        cost[n] = sum(b * q * k for b, q, k in recorded_attention)
    assert cost[160] / cost[40] == pytest.approx(4, rel=0.15)


# --- tokens_per_step -------------------------------------------------------------------


def test_tokens_per_step_sets_sequences_per_step():
    assert TrainingSection(batch_size=8, max_length=512).step_tokens == 4096
    assert TrainingSection(batch_size=8, max_length=512).sequences_per_step == 8
    assert TrainingSection(tokens_per_step=1000, max_length=256).sequences_per_step == 3
    assert TrainingSection(packing=False, batch_size=5).sequences_per_step == 5


@pytest.mark.parametrize(
    ("training", "message"),
    [
        ({"tokens_per_step": 100, "max_length": 512}, "tokens_per_step: 100 is less than max_length (512)"),
        ({"tokens_per_step": 4096, "packing": False}, "tokens_per_step: a token budget needs packing"),
        ({"tokens_per_step": -1}, "config.training.tokens_per_step"),
    ],
)
def test_bad_tokens_per_step_is_named(training, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_config({"training": training})


# --- through the real recipe -----------------------------------------------------------


def test_packed_job_trains_like_a_padded_job(run_here, ctx):
    """Through the real recipe, one step holding every training row either way: the same
    first-step loss and step-0 eval loss, packed or padded."""
    everything = {"max_steps": 0, "epochs": 1, "batch_size": 120}
    results = {}
    for packing in (False, True):
        budget = {"tokens_per_step": 120 * MAX_LENGTH} if packing else {}
        config = {**QUICK, "training": {**QUICK["training"], **everything, **budget, "packing": packing}}
        job = run_here(config)
        assert job.status.value == "succeeded", job.error
        assert job.total_steps == 1
        metrics = jobs.job_metrics(ctx, job.id)
        train = {m.step: m.loss for m in metrics if m.split == "train"}
        evals = {m.step: m.loss for m in metrics if m.split == "eval"}
        results[packing] = (train[1], evals[0])
        logs = jobs.job_logs(ctx, job.id)
        assert any("packed rows" in line for line in logs) == packing
        assert any("sdpa attention, optimizer adamw_torch" in line for line in logs), logs
    assert results[True][0] == pytest.approx(results[False][0], abs=1e-4)
    assert results[True][1] == pytest.approx(results[False][1], abs=1e-4)


def test_steps_follow_the_token_budget(run_here, ctx, tiny_model_dir, alpaca_file):
    """The Trainer's step count (LR schedule, total steps, ETA) is the packed one: twice
    the budget, half the steps (within a step for the last, partial one); the pre-launch
    preview, which has only the mean row length, counts about as many."""
    dataset_id = upload_file(ctx, alpaca_file)
    steps = {}
    for budget in (2 * MAX_LENGTH, 4 * MAX_LENGTH):
        config = {**QUICK, "training": {**QUICK["training"], "max_steps": 0, "epochs": 1, "warmup_ratio": 0.0, "tokens_per_step": budget}}
        job = run_here(config)
        assert job.status.value == "succeeded", job.error
        logs = jobs.job_logs(ctx, job.id)
        packed = next(line for line in logs if " packing: " in line)
        sequences = int(packed.split(" into ")[1].split()[0])
        per_step = budget // MAX_LENGTH
        assert f"{per_step} per step" in packed
        assert job.total_steps == -(-sequences // per_step)
        lrs = [m.learning_rate for m in jobs.job_metrics(ctx, job.id) if m.split == "train"]
        assert len(lrs) == job.total_steps and lrs[-1] < lrs[0]  # the linear decay reaches the end
        steps[budget] = job.total_steps
        preview = jobs.preview_launch(ctx, dataset_id, str(tiny_model_dir), config)
        # from the mean row length: rows just over max_length / 2 (as here) pack worse than it says
        assert abs(preview.steps - job.total_steps) <= max(1, 0.2 * job.total_steps), (preview.steps, job.total_steps)
    assert abs(steps[2 * MAX_LENGTH] - 2 * steps[4 * MAX_LENGTH]) <= 1
