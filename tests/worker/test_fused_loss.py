"""The fused loss (worker.fused_loss) is the model's own causal LM loss, with the same
gradients, on padded and packed steps, for LoRA and full fine-tunes, in chunks of any
size; a model whose logits are more than its output layer keeps its own loss; and a job
trains the same with it on or off."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from studio.core.config import TrainingSection
from studio.core.templates import IGNORE_INDEX
from studio.services import jobs
from tests.worker.test_packing import MAX_LENGTH, QUICK, _rows
from worker import fused_loss
from worker.packing import pack_rows
from worker.recipe import make_collator


def _fresh(model_dir, lora: bool):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = False
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                                 lora_dropout=0.0, init_lora_weights=False))
    return model


def _own(model, batch):
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _fused(model, batch, chunk):
    model.zero_grad()
    _, total, count = fused_loss.forward_loss(model, fused_loss.output_layer(model), batch, chunk)
    loss = total / count
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
@pytest.mark.parametrize("packed", [True, False], ids=["packed", "padded"])
@pytest.mark.parametrize("chunk", [7, None], ids=["chunks-of-7", "default-chunk"])
def test_fused_loss_and_gradients_are_the_models_own(tiny_model_dir, lora, packed, chunk):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = _rows(tokenizer, 12)
    if packed:
        batch = make_collator(tokenizer, TrainingSection(packing=True, max_length=MAX_LENGTH))([pack_rows(rows, MAX_LENGTH)])
    else:
        batch = make_collator(tokenizer, TrainingSection(packing=False))(rows)
    model = _fresh(tiny_model_dir, lora)
    assert fused_loss.applies(model) == (True, "")
    own_loss, own_grads = _own(model, batch)
    fused, fused_grads = _fused(model, batch, chunk)
    assert fused == pytest.approx(own_loss, abs=1e-5)
    assert own_grads.keys() == fused_grads.keys() and own_grads
    if not lora:  # the output layer is tied to the embeddings: both paths reach it
        assert any("embed_tokens" in n for n in fused_grads)
    for name, grad in own_grads.items():
        assert torch.allclose(fused_grads[name], grad, atol=1e-6, rtol=1e-4), name


def test_bias_and_a_trained_head_against_plain_cross_entropy():
    torch.manual_seed(1)
    head = torch.nn.Linear(8, 50, bias=True)
    hidden = torch.randn(3, 9, 8, requires_grad=True)
    labels = torch.randint(0, 50, (3, 9))
    labels[0, :4] = IGNORE_INDEX  # a prompt
    labels[2] = IGNORE_INDEX  # a bin of padding only
    total, count = fused_loss.linear_cross_entropy(hidden, head, labels, chunk=4)
    total.backward()
    got = (hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone())
    hidden.grad = head.weight.grad = head.bias.grad = None
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX).reshape(-1)
    want = F.cross_entropy(head(hidden).reshape(-1, 50), targets, reduction="sum")
    want.backward()
    assert count == int((targets != IGNORE_INDEX).sum())
    assert float(total) == pytest.approx(float(want), rel=1e-6)
    for mine, theirs in zip(got, (hidden.grad, head.weight.grad, head.bias.grad)):
        assert torch.allclose(mine, theirs, atol=1e-6)


def test_no_label_in_the_step_gives_zero_and_backward_runs():
    head = torch.nn.Linear(4, 10)
    hidden = torch.randn(1, 5, 4, requires_grad=True)
    total, count = fused_loss.linear_cross_entropy(hidden, head, torch.full((1, 5), IGNORE_INDEX))
    total.backward()
    assert count == 0 and float(total) == 0.0 and float(hidden.grad.abs().sum()) == 0.0


def test_models_whose_logits_are_more_than_the_head_keep_their_own(tiny_model_dir):
    model = _fresh(tiny_model_dir, lora=False)
    model.config.final_logit_softcapping = 30.0  # Gemma 2's
    fits, why = fused_loss.applies(model)
    assert not fits and "soft-capping" in why
    adapted = get_peft_model(_fresh(tiny_model_dir, lora=False), LoraConfig(r=2, target_modules=["lm_head"]))
    assert fused_loss.applies(adapted)[0] is False


def test_the_head_is_itself_again_after_the_forward(tiny_model_dir):
    model = _fresh(tiny_model_dir, lora=False)
    head = fused_loss.output_layer(model)
    ids = torch.tensor([[1, 2, 3]])
    with fused_loss.hidden_out(head):
        assert model(input_ids=ids).logits.shape[-1] == model.config.hidden_size
    assert model(input_ids=ids).logits.shape[-1] == model.config.vocab_size
    assert "forward" not in vars(head) and set(model.state_dict()) == set(_fresh(tiny_model_dir, False).state_dict())


def test_a_job_trains_the_same_with_the_fused_loss_on_or_off(run_here, ctx):
    """Through the real recipe, packed, with gradient accumulation: the same train loss at
    every step (so the same updates) and the same eval loss; the log says which loss ran."""
    curves = {}
    for fused in (False, True):
        training = {**QUICK["training"], "max_steps": 4, "grad_accum": 2, "fused_loss": fused, "sample_every": 4}
        job = run_here({**QUICK, "training": training})
        assert job.status.value == "succeeded", job.error
        metrics = jobs.job_metrics(ctx, job.id)
        curves[fused] = ([m.loss for m in metrics if m.split == "train"], [m.loss for m in metrics if m.split == "eval"])
        logs = jobs.job_logs(ctx, job.id)
        assert any(("loss: cross-entropy fused with the output layer" in line) == fused for line in logs
                   if " loss: " in line), logs
        assert any("torch.compile: off (on a CPU it did not pay" in line for line in logs), logs
    (train_off, eval_off), (train_on, eval_on) = curves[False], curves[True]
    assert len(train_on) == 4 and train_on == pytest.approx(train_off, abs=2e-4)
    assert eval_on == pytest.approx(eval_off, abs=2e-4)
