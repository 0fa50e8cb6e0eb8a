"""The model host against a plain transformers + peft baseline, in the same run.

On the demo base and on the ~28M Llama of bench/train_throughput.py, each with 4 LoRA
adapters (random, non-zero weights, saved as standard PEFT folders):

- Memory: the host's weights with one base and 4 adapters, against one base with one
  adapter (goal <= 1.15x) and against 4 separate models (the baseline's way).
- Throughput: 16 concurrent requests spread over the 4 adapters (the host batches them,
  mixing adapters) against the baseline, one model per checkpoint, one request at a time
  (goal >= 3x output tokens/s), every output identical under greedy decoding.
- Through real `studio infer` + `studio serve` processes and /v1/chat/completions
  (streamed) on the demo model: time to first token p50/p95 (goal p50 <= 250 ms), and
  a cache hit's answer time (goal <= 20 ms).

    python bench/inference.py [--requests 16] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

ADAPTERS = 4
QUESTIONS = [
    "Which word comes last in the input?\n\ncat dog owl",
    "Join the words with hyphens.\n\nred sun moon",
    "Which number comes just before 41?",
    "Subtract 3 from 17.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_adapters(base_dir: Path, root: Path) -> list[str]:
    """4 LoRA adapters on every linear layer (r 16), as jobs/N/final folders."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folders = []
    for i in range(ADAPTERS):
        folder = root / f"jobs/{i + 1}/final"
        torch.manual_seed(i)
        config = LoraConfig(r=16, lora_alpha=32, init_lora_weights=False,
                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), config)
        with torch.no_grad():  # small weights: answers change but stay the model's
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.mul_(0.05)
        model.save_pretrained(folder)
        folders.append(f"jobs/{i + 1}/final")
    return folders


def build_llama_28m(workdir: Path) -> Path:
    from bench.train_throughput import SHAPE
    from studio.core.demo import demo_dataset, make_llama, make_tokenizer
    from studio.core.templates import render_prompt

    corpus = [render_prompt(r) + r["output"] for r in demo_dataset(2000, seed=98)]
    tokenizer = make_tokenizer(corpus, vocab_size=2000)
    model = make_llama(tokenizer, seed=0, **SHAPE)
    out = workdir / "llama-28m"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def weight_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def baseline(base_dir: Path, root: Path, folders: list[str], requests: list[tuple[int, str]], max_tokens: int):
    """One model per checkpoint, one request at a time: (answers, tokens/s, bytes of 4 models)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.core.chat_prompt import messages_row
    from studio.core.templates import encode_prompt

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    models = [PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), root / f).eval()
              for f in folders]
    answers, tokens = [], 0
    started = time.perf_counter()
    with torch.no_grad():
        for adapter, question in requests:
            ids = torch.tensor([encode_prompt(tokenizer, messages_row([{"role": "user", "content": question}], "alpaca"))])
            out = models[adapter].generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                           do_sample=False, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
            new = out[0, ids.shape[1]:].tolist()
            if tokenizer.eos_token_id in new:
                new = new[: new.index(tokenizer.eos_token_id) + 1]
            tokens += len(new)
            answers.append(tokenizer.decode(new, skip_special_tokens=True))
    seconds = time.perf_counter() - started
    return answers, tokens / seconds, sum(weight_bytes(m) for m in models)


def host_run(base: str, root: Path, folders: list[str], requests: list[tuple[int, str]], max_tokens: int):
    """The engine, all requests submitted at once: (answers, tokens/s, bytes 1+1, bytes 1+4, batches)."""
    from studio.core.basemodels import ModelAccess
    from worker.infer.engine import Engine, GenerateRequest, ModelSpec

    access = ModelAccess((Path(base).parent.resolve(), (ROOT / "studio").resolve()), (), frozenset())
    engine = Engine(root, access, memory_gb=8, cache_entries=0, max_batch_rows=64, batch_window_s=0.02).start()
    specs = [ModelSpec(id=f"job-{i + 1}", base=base, adapter=f) for i, f in enumerate(folders)]

    def ask_all(batch):
        inboxes = []
        for adapter, question in batch:
            inbox: queue.Queue = queue.Queue()
            engine.submit(GenerateRequest(model=specs[adapter], messages=[{"role": "user", "content": question}],
                                          max_tokens=max_tokens), inbox.put)
            inboxes.append(inbox)
        results = []
        for inbox in inboxes:
            text, usage = "", {}
            while True:
                event = inbox.get(timeout=600)
                if event["type"] == "delta":
                    text += event["text"]
                elif event["type"] == "done":
                    usage = event["usage"]
                    break
                elif event["type"] == "error":
                    raise RuntimeError(event["message"])
            results.append((text, usage["completion_tokens"]))
        return results

    try:
        ask_all([(0, QUESTIONS[0])])
        one = engine.stats()["memory_used_bytes"]
        ask_all([(i, QUESTIONS[0]) for i in range(ADAPTERS)])  # attach all, warm up
        four = engine.stats()["memory_used_bytes"]
        started = time.perf_counter()
        results = ask_all(requests)
        seconds = time.perf_counter() - started
        batches = engine.stats()
    finally:
        engine.stop()
    return [r[0] for r in results], sum(r[1] for r in results) / seconds, one, four, batches


def compare(name: str, base: str, base_dir: Path, workdir: Path, n: int, max_tokens: int) -> dict:
    root = workdir / f"artifacts-{name}"
    folders = make_adapters(base_dir, root)
    requests = [(i % ADAPTERS, QUESTIONS[(i // ADAPTERS) % len(QUESTIONS)]) for i in range(n)]
    plain, plain_speed, plain_bytes = baseline(base_dir, root, folders, requests, max_tokens)
    hosted, host_speed, one, four, stats = host_run(base, root, folders, requests, max_tokens)
    same = sum(a == b for a, b in zip(plain, hosted))
    print(f"\n== {name}")
    print(f"memory (weights)   host 1 base + 1 adapter {one / 1e6:8.1f} MB | 1 base + 4 adapters {four / 1e6:8.1f} MB "
          f"= {four / one:.3f}x (goal <= 1.15x) | 4 separate models {plain_bytes / 1e6:8.1f} MB = {plain_bytes / four:.2f}x the host")
    print(f"throughput         {n} requests over {ADAPTERS} adapters: host {host_speed:7.1f} tokens/s, "
          f"baseline {plain_speed:7.1f} tokens/s = {host_speed / plain_speed:.2f}x (goal >= 3x); "
          f"mixed batches {stats['mixed_batches']}")
    print(f"greedy outputs     identical to the baseline's: {same}/{n}")
    return {"ratio_memory": four / one, "speedup": host_speed / plain_speed, "identical": same, "n": n}


def through_v1(workdir: Path, samples: int) -> None:
    """TTFT and a cache hit through real processes and /v1/chat/completions on `demo`."""
    import httpx

    data = workdir / "studio-data"
    web_port, infer_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env.update(STUDIO_DATA_DIR=str(data), STUDIO_INFER_URL=f"http://127.0.0.1:{infer_port}", PYTHONUNBUFFERED="1")
    procs = [subprocess.Popen([sys.executable, "-m", "studio", cmd, "--port", str(port)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=open(workdir / f"{cmd}.log", "wb"), start_new_session=True)
             for cmd, port in (("infer", infer_port), ("serve", web_port))]
    url = f"http://127.0.0.1:{web_port}/v1/chat/completions"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{web_port}/api/health", timeout=1).status_code == 200 and \
                        httpx.get(f"http://127.0.0.1:{infer_port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        ttft = []
        with httpx.Client(timeout=60) as client:
            for i in range(samples + 2):
                body = {"model": "demo", "messages": [{"role": "user", "content": QUESTIONS[i % 4]}], "temperature": 0,
                        "seed": 1000 + i, "max_tokens": 16, "stream": True}  # a new seed: never from the cache
                started = time.perf_counter()
                first = None
                with client.stream("POST", url, json=body) as response:
                    for line in response.iter_lines():  # read to the end; note the first content chunk
                        if first is None and line.startswith("data: ") and '"content": "' in line \
                                and '"content": ""' not in line:
                            first = (time.perf_counter() - started) * 1000
                if i >= 2 and first is not None:  # the first two warm up
                    ttft.append(first)
            same = {"model": "demo", "messages": [{"role": "user", "content": QUESTIONS[0]}], "temperature": 0,
                    "max_tokens": 16}
            client.post(url, json=same)
            hits = []
            for _ in range(samples):
                started = time.perf_counter()
                client.post(url, json=same).raise_for_status()
                hits.append((time.perf_counter() - started) * 1000)
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
    q = statistics.quantiles(ttft, n=20)
    print("\n== demo model through studio serve + studio infer, /v1/chat/completions")
    print(f"time to first streamed token  p50 {statistics.median(ttft):6.1f} ms, p95 {q[18]:6.1f} ms "
          f"over {len(ttft)} requests (goal p50 <= 250 ms)")
    print(f"cache hit (whole answer)      p50 {statistics.median(hits):6.1f} ms, max {max(hits):6.1f} ms (goal <= 20 ms)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--samples", type=int, default=20, help="requests timed through /v1")
    parser.add_argument("--only-v1", action="store_true", help="only the /v1 timings")
    args = parser.parse_args()
    import torch

    from studio.core.demo import demo_base_dir

    torch.set_num_threads(min(2, torch.get_num_threads()))
    workdir = Path(tempfile.mkdtemp(prefix="bench-infer-"))
    print(f"torch threads {torch.get_num_threads()}, device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    if not args.only_v1:
        compare("demo base (~1M)", "demo", demo_base_dir(), workdir, args.requests, args.max_tokens)
        llama = build_llama_28m(workdir)
        compare("Llama ~28M (bench/train_throughput.py)", str(llama), llama, workdir, args.requests, args.max_tokens)
    through_v1(workdir, args.samples)
    print(json.dumps({"workdir": str(workdir)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
