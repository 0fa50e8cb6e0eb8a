"""The fused loss (worker/fused_loss.py) against the model's own loss (transformers'
causal LM loss over full logits, what a plain Trainer + peft runs), on one training step.

A Llama with a big vocabulary (hidden 512, 2 layers, random init; vocab 32k and 128k, as
Llama 2 and Llama 3), LoRA r=8 on every linear layer, packed steps of 4,096 tokens (8 bins
of 512), about 40% of each row a prompt (no loss there, as in the studio). Each
configuration runs in its own subprocess: forward + backward + optimizer step, median of
--steps after 2 warm-up steps, and the peak RSS growth over the steps (the step's
transient memory, the model and optimizer excluded). Goal (issue 13): the logits of a big
vocabulary are never all in memory, and the step is no slower.

    python bench/fused_loss.py [--steps 6] [--vocabs 32000,128256] [--tokens 4096]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

MAX_LENGTH = 512
PROMPT_SHARE = 0.4


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(vocab: int, fused: bool, steps: int, tokens: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from worker import fused_loss
    from worker.packing import PackedCollator, pack_rows

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=512, num_hidden_layers=2, num_attention_heads=8,
                         intermediate_size=1408, max_position_embeddings=MAX_LENGTH, tie_word_embeddings=False,
                         use_cache=False, attn_implementation="sdpa")
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    rng = random.Random(1)
    rows = []
    while sum(len(r["input_ids"]) for r in rows) < 1.2 * tokens * (steps + 2):
        n = rng.randint(64, MAX_LENGTH)
        ids = [rng.randrange(vocab) for _ in range(n)]
        prompt = int(n * PROMPT_SHARE)
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    bins = pack_rows(rows, MAX_LENGTH)
    per_step = tokens // MAX_LENGTH
    collate = PackedCollator(0)
    batches = [collate([bins[i : i + per_step]]) for i in range(0, per_step * (steps + 2), per_step)]
    head = fused_loss.output_layer(model) if fused else None

    def step(batch) -> None:
        if head is None:
            loss = model(**batch).loss
        else:
            _, total, count = fused_loss.forward_loss(model, head, batch)
            loss = total / count
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)

    for batch in batches[:2]:
        step(batch)
    before = _rss_mb()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for batch in batches[2:]:
        began = time.perf_counter()
        step(batch)
        times.append(time.perf_counter() - began)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    real = sum(int((b["labels"] != -100).sum()) for b in batches[2:])
    return {"step_s": statistics.median(times), "peak_rss_mb": peak, "rest_mb": before,
            "peak_growth_mb": peak - min(before, peak_before), "trained_tokens_per_step": real / len(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--vocabs", default="32000,128256")
    parser.add_argument("--tokens", type=int, default=4096, help="tokens a step (bins of 512)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        vocab, fused = args.child.split(":")
        print(json.dumps(child(int(vocab), fused == "fused", args.steps, args.tokens)))
        return
    print(f"Llama hidden 512, 2 layers, LoRA r=8 all linear, {args.tokens} tokens a step (bins of {MAX_LENGTH}), "
          f"{PROMPT_SHARE:.0%} of each row a prompt; median of {args.steps} steps; threads "
          f"{os.environ.get('OMP_NUM_THREADS', os.cpu_count())}")
    for vocab in (int(v) for v in args.vocabs.split(",")):
        results = {}
        for mode in ("own", "fused"):
            done = subprocess.run([sys.executable, __file__, "--child", f"{vocab}:{mode}", "--steps", str(args.steps),
                                   "--tokens", str(args.tokens)], capture_output=True, text=True)
            if done.returncode:
                sys.exit(done.stderr[-3000:])
            results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        own, fused = results["own"], results["fused"]
        full_logits = args.tokens * vocab * 4 / 2**20
        for mode, r in results.items():
            print(f"vocab {vocab:>6} {mode:>5} loss: step {r['step_s']:.3f} s, "
                  f"{args.tokens / r['step_s']:,.0f} tokens/s; peak RSS {r['peak_rss_mb']:,.0f} MB, "
                  f"growth in the step {r['peak_growth_mb']:,.0f} MB")
        print(f"vocab {vocab:>6} fused / own: speed {own['step_s'] / fused['step_s']:.2f}x (goal >= 1.0x), step memory "
              f"{fused['peak_growth_mb'] / max(own['peak_growth_mb'], 1):.2f}x, peak RSS "
              f"{fused['peak_rss_mb'] / own['peak_rss_mb']:.2f}x (one copy of the step's fp32 logits: {full_logits:,.0f} MB)")


if __name__ == "__main__":
    main()
