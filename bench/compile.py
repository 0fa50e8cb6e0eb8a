"""torch.compile for training, measured: does it pay on this device?

The ~28M Llama of bench/train_throughput.py (hidden 512, 6 layers, random init), LoRA r=8
on every linear layer, packed steps of 8 bins of up to 512 tokens, forward + backward +
AdamW, eager against `torch.compile(model, dynamic=True)` (packed steps change length, so
a static compile would compile again for each). Each in its own process. Printed: the
first step (the compile), the median step after two, and the steps it takes for the
compiled model to win back its compile time. The recipe keeps it off where this says it
does not pay (issue 13; worker/recipe.py logs the decision).

    python bench/compile.py [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)


def child(mode: str, steps: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from worker import recipe
    from worker.packing import PackedCollator, pack_rows

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = LlamaConfig(vocab_size=832, hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
                         intermediate_size=2304, max_position_embeddings=1024, use_cache=False,
                         attn_implementation="sdpa")
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(LlamaForCausalLM(config), lora).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    rng = random.Random(1)
    rows = []
    for _ in range(60 * steps):
        n = rng.randint(64, 512)
        ids = [rng.randrange(config.vocab_size) for _ in range(n)]
        rows.append({"input_ids": ids, "labels": [-100] * (n // 3) + ids[n // 3 :]})
    bins = pack_rows(rows, 512)
    rng.shuffle(bins)
    batches = [PackedCollator(0)([bins[i : i + 8]]) for i in range(0, 8 * steps, 8)]
    forward = torch.compile(model, dynamic=True) if mode == "compiled" else model
    times, tokens = [], []
    with recipe.freed_memory_kept(lambda _: None):
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            began = time.perf_counter()
            forward(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - began)
            tokens.append(int(batch["input_ids"].numel()))
    return {"device": device, "first_s": times[0], "step_s": statistics.median(times[2:]),
            "tokens_per_s": sum(tokens[2:]) / sum(times[2:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps)))
        return
    results = {}
    for mode in ("eager", "compiled"):
        done = subprocess.run([sys.executable, __file__, "--child", mode, "--steps", str(args.steps)],
                              capture_output=True, text=True)
        if done.returncode:
            sys.exit(done.stderr[-3000:])
        results[mode] = r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{mode:>8} on {r['device']}: first step {r['first_s']:.1f} s, then {r['step_s']:.2f} s a step, "
              f"{r['tokens_per_s']:,.0f} tokens/s")
    eager, compiled = results["eager"], results["compiled"]
    gain = eager["step_s"] - compiled["step_s"]
    cost = compiled["first_s"] - eager["first_s"]
    pays = f"it wins its compile time back after {cost / gain:,.0f} steps" if gain > 0 else "it never wins it back"
    print(f"compiled / eager: {eager['step_s'] / compiled['step_s']:.2f}x a step after {cost:.0f} s of compiling; {pays}")


if __name__ == "__main__":
    main()
