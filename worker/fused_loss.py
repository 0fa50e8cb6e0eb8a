"""Cross-entropy fused with the output layer ("linear cross-entropy"), a chunk of tokens
at a time, so a step's logits [tokens, vocab] are never all in memory at once.

The model runs with its output layer switched to identity (`hidden_out`), so its
"logits" are the final hidden states. `linear_cross_entropy` then takes only the
positions that have a label (the responses: loss only on responses), and for each chunk
of them computes the logits, the loss, and at once the gradients of the hidden states
and, when it trains, of the output layer; backward only scales those by the incoming
gradient. That is what Liger's fused linear cross-entropy does in Triton on CUDA; this is
the same arithmetic in plain torch, so it runs on every device.

Two gains: memory (at 4,096 tokens a 32k vocabulary's fp32 logits, their softmax and
gradient are 1.5 GB; one 64 MB chunk instead), and compute (prompt positions never go
through the output layer). Models whose logits are more than the output layer's product
(Gemma 2's soft-capping, Cohere's logit scale) keep the model's own loss: `applies` says.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Optional

import torch
import torch.nn.functional as F

from studio.core.estimate import LOSS_CHUNK_BYTES, plain_logits
from studio.core.templates import IGNORE_INDEX


def chunk_tokens(vocab: int) -> int:
    """Tokens per chunk for a vocabulary: LOSS_CHUNK_BYTES of fp32 logits (512 for 32k)."""
    return max(16, LOSS_CHUNK_BYTES // (4 * vocab))


def output_layer(model) -> Optional[torch.nn.Linear]:
    """The model's output layer when its logits are exactly that layer's product, else None."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    config = getattr(model, "config", None)
    if not isinstance(head, torch.nn.Linear) or config is None:
        return None
    if not plain_logits(config):
        return None
    if head.out_features != getattr(config, "vocab_size", head.out_features):
        return None
    return head


def applies(model) -> tuple[bool, str]:
    """Whether the fused loss can stand in for this model's own, and why not."""
    head = output_layer(model)
    if head is None:
        return False, "its logits are not just the output layer's product (soft-capping, a logit scale or no Linear head)"
    if type(head).forward is not torch.nn.Linear.forward:
        return False, "its output layer is adapted or quantized"
    return True, ""


@contextmanager
def hidden_out(head: torch.nn.Linear) -> Iterator[None]:
    """The output layer returns its input while inside: the model's logits are its hidden states.
    Only the instance's forward is shadowed, so its weights (and a save) are untouched."""
    head.forward = lambda hidden: hidden
    try:
        yield
    finally:
        del head.forward


class _LinearCrossEntropy(torch.autograd.Function):
    """Sum of the cross-entropy of (hidden @ weight.T + bias) against targets; the gradients
    are computed in forward, one chunk of logits alive at a time."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk):  # noqa: D401
        need_hidden, need_weight = hidden.requires_grad, weight.requires_grad
        need_bias = bias is not None and bias.requires_grad
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if need_bias else None
        for start in range(0, hidden.shape[0], chunk):
            h, y = hidden[start : start + chunk], targets[start : start + chunk]
            logits = F.linear(h, weight, bias).float()
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, y[:, None]).squeeze(1)).sum()
            if not (need_hidden or need_weight or need_bias):
                continue
            probs = logits.sub_(lse[:, None]).exp_()  # softmax, in the logits' memory
            probs[torch.arange(len(y), device=y.device), y] -= 1  # d loss / d logits
            g = probs.to(h.dtype)
            if need_hidden:
                grad_hidden[start : start + chunk] = g @ weight.to(h.dtype)
            if need_weight:
                grad_weight += (g.t() @ h).float()
            if need_bias:
                grad_bias += probs.sum(0)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        weight_dtype, bias_dtype = ctx.dtypes
        scale = grad_total.float()
        return (
            None if grad_hidden is None else grad_hidden * scale.to(grad_hidden.dtype),
            None if grad_weight is None else (grad_weight * scale).to(weight_dtype),
            None if grad_bias is None else (grad_bias * scale).to(bias_dtype),
            None,
            None,
        )


def linear_cross_entropy(hidden: torch.Tensor, head: torch.nn.Linear, labels: torch.Tensor,
                         chunk: Optional[int] = None) -> tuple[torch.Tensor, int]:
    """(sum of the next-token losses, number of labelled positions) for hidden [batch, seq,
    hidden] and labels [batch, seq] (IGNORE_INDEX where there is none): position t predicts
    labels[t + 1], as in transformers' causal LM loss."""
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX).reshape(-1)
    keep = targets != IGNORE_INDEX
    rows = hidden.reshape(-1, hidden.shape[-1])[keep]
    targets = targets[keep]
    if rows.shape[0] == 0:
        return hidden.sum() * 0.0, 0  # keeps the graph, so backward still runs
    chunk = chunk or chunk_tokens(head.out_features)
    return _LinearCrossEntropy.apply(rows, head.weight, head.bias, targets, chunk), int(targets.shape[0])


def forward_loss(model, head: torch.nn.Linear, batch: Mapping[str, torch.Tensor],
                 chunk: Optional[int] = None) -> tuple[Any, torch.Tensor, int]:
    """(the model's outputs, whose logits are its hidden states; the summed loss; the number
    of labelled positions) for a batch with labels, through the fused loss."""
    with hidden_out(head):
        outputs = model(**{k: v for k, v in batch.items() if k != "labels"})
    total, count = linear_cross_entropy(outputs.logits, head, batch["labels"], chunk)
    return outputs, total, count
