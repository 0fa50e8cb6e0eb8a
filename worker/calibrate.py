"""A few seconds of LoRA training on a small model built here, timed: the effective FLOP/s
this worker's device reaches, for the pre-launch time estimate before any job like the one
being planned has finished (studio/services/speed.py). Runs in a one-shot child of the
registry process (worker/registry.py), so no process keeps its memory or a CUDA context.

    python -m worker.calibrate      # prints {"flops": ...}
"""

from __future__ import annotations

import json
import time

# On a CPU, the shipped demo base at the demo job's step size (the rough rate this replaces
# was fitted on the demo job); on a GPU a bigger random-init model, since a tiny one would
# measure mostly kernel-launch overhead there.
GPU_SHAPE = dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=4, num_attention_heads=16, vocab_size=32000)
CPU_BATCH, GPU_BATCH = (16, 128), (8, 512)  # (rows, tokens per row)
WARMUP_STEPS = 2
SECONDS = 3.0  # timed steps run at least this long (and at least 3 of them)


def calibrate(seconds: float = SECONDS) -> float:
    """Effective training FLOP/s here: LoRA steps of a random-init Llama, counted at 4
    FLOPs per parameter per token (forward, and backward through frozen weights), the
    same count the estimate's rough rate uses."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from studio.core.demo import demo_base_dir

    cuda = torch.cuda.is_available()
    torch.manual_seed(0)
    if cuda:
        rows, length = GPU_BATCH
        config = LlamaConfig(**GPU_SHAPE, num_key_value_heads=GPU_SHAPE["num_attention_heads"], max_position_embeddings=length)
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        model = LlamaForCausalLM(config).to(device="cuda", dtype=dtype)
    else:
        rows, length = CPU_BATCH
        model = LlamaForCausalLM.from_pretrained(demo_base_dir(), dtype=torch.float32)
    vocab = model.config.vocab_size
    params = sum(p.numel() for p in model.parameters())
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, lora)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, vocab, (rows, length), device=model.device)

    def step() -> None:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(WARMUP_STEPS):
        step()
    if cuda:
        torch.cuda.synchronize()
    steps, started = 0, time.perf_counter()
    while steps < 3 or time.perf_counter() - started < seconds:
        step()
        steps += 1
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    return 4 * params * rows * length * steps / elapsed


if __name__ == "__main__":
    print(json.dumps({"flops": calibrate()}))
