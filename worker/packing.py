"""Packing: encoded rows into sequences of at most max_length tokens ("bins").

Each bin is one sequence whose position_ids restart at 0 for every row; transformers
(sdpa, eager, flex) turns restarting positions into a block-causal mask when no
attention_mask is given and no KV cache is used, so rows never attend to each other.
A step is a batch of bins, padded to its longest bin; the padding is a segment of its
own (positions from 0 again, labels masked), so it needs no attention_mask either.
Attention costs at most max_length^2 per bin: a step's cost is linear in its bins,
where joining a whole batch into one sequence made it quadratic in the batch.

Bins are grouped into steps here, once, bins of about the same length together: the
part-filled bins that best fit leaves (rows too long to pair up) then pad each other
instead of padding up to a full one (on the bench's rows 3.3% -> 0.9% at 8 bins a step).
The Trainer's item is a whole step, so its own seeded sampler shuffles whole steps and a
resumed job sees the same steps in the same order (a length-grouped sampler did not).

TRL's `pack_dataset(strategy="bfd")` does the same best-fit decreasing over a
`datasets.Dataset` (pyarrow), one map batch (1,000 rows) at a time; the studio trains on
plain lists with the HF Trainer, so the few lines are here, over every row at once.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from typing import Sequence

import torch

from studio.core.templates import IGNORE_INDEX


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Row indices per bin, no bin over capacity: longest rows first, each into the open
    bin it fills best. O(n log n); deterministic (equal lengths keep their order)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins: list[list[int]] = []
    free_sizes: list[int] = []  # sorted, distinct free space of the open bins
    bins_by_free: dict[int, list[int]] = {}
    for i in order:
        n = lengths[i]
        if not 0 < n <= capacity:
            raise ValueError(f"row {i} has {n} tokens; a bin holds 1 to {capacity}")
        k = bisect.bisect_left(free_sizes, n)
        if k == len(free_sizes):
            b, free = len(bins), capacity
            bins.append([])
        else:
            free = free_sizes[k]
            b = bins_by_free[free].pop()
            if not bins_by_free[free]:
                del bins_by_free[free]
                free_sizes.pop(k)
        bins[b].append(i)
        free -= n
        if free:
            if free not in bins_by_free:
                bisect.insort(free_sizes, free)
                bins_by_free[free] = []
            bins_by_free[free].append(b)
    return bins


def pack_rows(rows: Sequence[dict], max_length: int) -> list[dict]:
    """Encoded rows (input_ids, labels) as bins: input_ids, labels and position_ids of the
    rows end to end. The first label of each row is masked, so no row is trained to
    predict the next row's first token (a padded row never predicts its first token either)."""
    packed = []
    for members in best_fit_decreasing([len(r["input_ids"]) for r in rows], max_length):
        input_ids, labels, positions = [], [], []
        for i in members:
            row = rows[i]
            input_ids += row["input_ids"]
            labels += [IGNORE_INDEX, *row["labels"][1:]]
            positions += range(len(row["input_ids"]))
        packed.append({"input_ids": input_ids, "labels": labels, "position_ids": positions})
    return packed


def pack_steps(rows: Sequence[dict], max_length: int, per_step: int, seed: int) -> list[list[dict]]:
    """Encoded rows as steps of per_step bins (the last one may hold fewer), the bins of a
    step of about the same length. Deterministic for a seed: equal lengths are ordered by
    a seeded shuffle, so a step's rows are not chosen by the order of the dataset."""
    bins = pack_rows(rows, max_length)
    random.Random(seed).shuffle(bins)
    bins.sort(key=lambda b: -len(b["input_ids"]))  # stable: the shuffle breaks ties
    return [bins[start : start + per_step] for start in range(0, len(bins), per_step)]


@dataclass(frozen=True)
class PackedCollator:
    """Steps of bins as one batch of tensors [bins, longest bin]; no attention_mask (it
    would turn off the block-causal mask that the position_ids give). The Trainer hands
    it one step per device (per_device_train_batch_size 1)."""

    pad_token_id: int

    def __call__(self, steps: Sequence[Sequence[dict]]) -> dict[str, torch.Tensor]:
        bins = [b for step in steps for b in step]
        longest = max(len(b["input_ids"]) for b in bins)
        input_ids, labels, positions = [], [], []
        for b in bins:
            pad = longest - len(b["input_ids"])
            input_ids.append(b["input_ids"] + [self.pad_token_id] * pad)
            labels.append(b["labels"] + [IGNORE_INDEX] * pad)
            positions.append(list(b["position_ids"]) + list(range(pad)))
        return {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "position_ids": torch.tensor(positions, dtype=torch.long),
        }


def padding_share(steps: Sequence[Sequence[dict]]) -> float:
    """Share of the computed positions of steps that are padding (each padded to its longest bin)."""
    computed = real = 0
    for step in steps:
        lengths = [len(b["input_ids"]) for b in step]
        computed += max(lengths) * len(lengths)
        real += sum(lengths)
    return 1 - real / computed if computed else 0.0
