"""Training throughput: the studio's recipe against a plain HF Trainer, and the studio's
step-budget sweep.

All train the same local ~28M-parameter Llama (hidden 512, 6 layers, random init, a BPE
tokenizer trained on generated text) with the same LoRA settings (r=8, alpha 16, every
linear layer, max length 512, same learning rate, schedule and seed) for one epoch over
the same generated rows, whose lengths vary widely (as real instruction data does), so
all see exactly the same rows and trained tokens:

  plain: transformers Trainer + peft, batch 8, DataCollatorForSeq2Seq dynamic padding, fp32;
  studio Nk: worker/recipe.py's own path (prepare_data, load_model, build_trainer) on a
      real job record, the studio's default settings (packing) with
      training.tokens_per_step = N x 1024: rows packed into sequences of <= 512 tokens,
      N x 2 of them a step. 4k is the default (batch 8 x max length 512);
  4k own loss: studio 4k with training.fused_loss off (the model's own loss over full
      logits), to show what the fused loss saves;
  LF plain / LF neat (with --llamafactory PATH/bin/python): LLaMA-Factory's CLI under that
      venv, batch 8, padded or `neat_packing` (see run_llamafactory; the README says how to
      build the venv). Goals against its best: studio >= 1.3x tokens/s at <= 0.6x peak RSS.

Each runs in its own subprocess, so peak RSS is per configuration. Printed per config:
non-pad tokens/s, rows/s and trained (label) tokens/s over the training steps, the padding
share of the computed tokens, peak RSS (and its growth after the model was loaded), the
studio's pre-launch memory estimate for the job, and the held-out loss after training at
equal rows, scored the same way for all. Goals: studio 4k >= 1.4x plain tokens/s, peak
memory <= 1.0x, held-out loss no worse than 2%; tokens/s at a 4k step within 10% of a 1k
step (no quadratic cost); padding <= 2% at every budget; the estimate within 25% of the
peak RSS.

    python bench/train_throughput.py [--rows 640] [--budgets 1024,2048,4096,8192]
        [--studio '{"training": {"packing": true}}'] [--interleaved ROUNDS]
        [--llamafactory /work/lfvenv/bin/python]

--interleaved times single training steps of each budget in turn in one process (no
Trainer, no evaluation): on a shared machine, the steadier check that a bigger step is
not slower per token.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The repo root replaces this script's folder on the path, so a script here named like a
# package (bench/datasets.py once passed for the HF `datasets`) cannot break the Trainer.
sys.path[0] = str(ROOT)

SHAPE = {"hidden": 512, "layers": 6, "heads": 8, "intermediate": 2304, "max_positions": 1024}
MAX_LENGTH = 512
BATCH = 8
LEARNING_RATE = 1e-3  # both configs; high enough that a random-init base visibly learns
SEED = 42
HELD_OUT_FRACTION = 0.1


# --- assets: tokenizer, model, data (built once, in the parent) -----------------------


def long_rows(n: int, seed: int) -> list[dict]:
    """Alpaca rows whose inputs are word lists of long-tailed length (a few to ~200
    words), with answers that grow with them: padding matters, as with real data."""
    from studio.core.demo import WORDS

    rng = random.Random(seed)
    tasks = [
        ("Repeat the input exactly.", lambda w: " ".join(w)),
        ("Reverse the order of the words.", lambda w: " ".join(reversed(w))),
        ("Join the words with hyphens.", lambda w: "-".join(w)),
        ("Give the first letter of each word, separated by spaces.", lambda w: " ".join(x[0] for x in w)),
        ("Which word comes last in the input?", lambda w: w[-1]),
    ]
    rows = []
    for i in range(n):
        instruction, answer = tasks[i % len(tasks)]
        count = max(2, min(200, int(rng.lognormvariate(3.0, 0.8))))
        words = [rng.choice(WORDS) for _ in range(count)]
        rows.append({"instruction": instruction, "input": " ".join(words), "output": answer(words)})
    return rows


def build_assets(workdir: Path, n_rows: int) -> tuple[Path, Path]:
    from studio.core.demo import demo_dataset, make_llama, make_tokenizer
    from studio.core.templates import render_prompt

    rows = long_rows(n_rows, seed=1)
    corpus = [render_prompt(r) + r["output"] for r in long_rows(2000, seed=99) + demo_dataset(2000, seed=98)]
    tokenizer = make_tokenizer(corpus, vocab_size=2000)
    tokenizer.model_max_length = SHAPE["max_positions"]
    model = make_llama(tokenizer, seed=0, **SHAPE)
    model_dir = workdir / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = workdir / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return model_dir, data


# --- measuring (in each child) --------------------------------------------------------


class CountingCollator:
    """Wraps a collator to count the rows and the computed, non-pad and trained tokens of
    the batches. Its items are rows, or steps of packed sequences (worker.packing.pack_steps;
    a row starts at each position 0)."""

    def __init__(self, inner):
        self.inner = inner
        self.counting = False
        self.computed = self.real = self.trained = self.rows = 0

    def __call__(self, features):
        batch = self.inner(features)
        if self.counting:
            sequences = [s for f in features for s in (f if isinstance(f, list) else [f])]
            self.computed += batch["input_ids"].numel()
            self.real += sum(len(s["input_ids"]) for s in sequences)
            self.rows += sum(list(s["position_ids"]).count(0) if "position_ids" in s else 1 for s in sequences)
            self.trained += int((batch["labels"][:, 1:] != -100).sum())
        return batch


def timer_callback(counter: CountingCollator, result: dict):
    """Times the training steps only: from the start of training to the end of the last
    step, less the time the studio spends evaluating in between (see untimed_evaluation)."""
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            counter.counting = True
            result["start"], result["cpu_start"] = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == state.max_steps:
                result["seconds"] = time.perf_counter() - result["start"] - result.get("eval_seconds", 0.0)
                result["cpu_seconds"] = time.process_time() - result["cpu_start"] - result.get("eval_cpu_seconds", 0.0)
                counter.counting = False

    return Timer()


def untimed_evaluation(trainer, counter: CountingCollator, result: dict) -> None:
    """The studio evaluates the base model (step 0) right after the first step: keep that
    time out of the training time and its batches out of the trained-token count."""
    from worker.callbacks import StudioCallback

    callback = next(c for c in trainer.callback_handler.callbacks if isinstance(c, StudioCallback))
    evaluate = callback.evaluate

    def timed(step: int, base: bool = False) -> None:
        counting, counter.counting = counter.counting, False
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            evaluate(step, base=base)
        finally:
            result["eval_seconds"] = result.get("eval_seconds", 0.0) + time.perf_counter() - start
            result["eval_cpu_seconds"] = result.get("eval_cpu_seconds", 0.0) + time.process_time() - cpu_start
            counter.counting = counting

    callback.evaluate = timed


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def held_out_loss(model, tokenizer, rows: list[dict]) -> float:
    """Mean response-token loss over rows, fp32, padded batches: the same for (a) and (b)."""
    import torch
    from transformers import DataCollatorForSeq2Seq

    collate = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    model.eval()
    model.config.use_cache = False
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), BATCH):
            batch = collate(rows[start : start + BATCH])
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += float(model(**batch).loss) * n
            tokens += n
    return total / tokens


def encode_rows(tokenizer, rows: list[dict]) -> list[dict]:
    from studio.core.templates import encode_example

    encoded = []
    for row in rows:
        ex = encode_example(tokenizer, row, MAX_LENGTH)
        if ex is not None:
            encoded.append({"input_ids": ex.input_ids, "attention_mask": [1] * len(ex.input_ids), "labels": ex.labels})
    return encoded


def split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    from studio.core.config import DataSection
    from worker.recipe import split_rows

    return split_rows(rows, DataSection(validation_fraction=HELD_OUT_FRACTION), SEED)


def run_plain(model_dir: Path, rows: list[dict], out_dir: Path) -> dict:
    """(a) The HF Trainer + peft as a practitioner would write it, dynamic padding."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments
    from transformers import set_seed

    set_seed(SEED)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train_rows, held_rows = split(rows)
    train, held = encode_rows(tokenizer, train_rows), encode_rows(tokenizer, held_rows)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    rss_loaded = rss_mb()
    args = TrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=BATCH,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="linear",
        warmup_steps=0.03,
        num_train_epochs=1,
        seed=SEED,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
    )
    counter = CountingCollator(DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=counter)
    result: dict = {}
    trainer.add_callback(timer_callback(counter, result))
    trainer.train()
    return _report(result, counter, rss_loaded, held_out_loss(model, tokenizer, held), trainer.state.global_step)


def run_studio(model_dir: Path, data_file: Path, out_dir: Path, overrides: dict) -> dict:
    """(b) worker/recipe.py's path on a real job record (claimed like a worker does)."""
    from transformers import set_seed

    from studio import lifecycle
    from studio.core.config import JobConfig, deep_merge
    from studio.core.estimate import detect_device, preview_job
    from studio.core.paths import JobPaths, resolve_inside
    from studio.db import session_scope
    from studio.eventbus import make_sink
    from studio.migrate import upgrade
    from studio.models import DatasetVersion
    from studio.services import datasets, jobs
    from studio.services.context import StudioContext
    from studio.settings import Settings
    from worker import recipe
    from worker.callbacks import EventWriter, JobRun

    settings = Settings(data_dir=out_dir / "studio", model_dirs=[model_dir.parent])  # the built model may be loaded
    upgrade(settings.db_url)
    ctx = StudioContext.from_settings(settings)
    dataset = datasets.create_dataset(ctx, "rows.jsonl", data_file.read_bytes())[0]
    config = deep_merge(
        {
            "adapter": {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.05},
            "data": {"validation_fraction": HELD_OUT_FRACTION, "probe_count": 0, "exact_match_rows": 0},
            "training": {
                "batch_size": BATCH, "max_length": MAX_LENGTH, "epochs": 1, "learning_rate": LEARNING_RATE,
                "seed": SEED, "sample_every": 100_000, "save_every": 0,
            },
        },
        overrides,
    )
    job = jobs.create_job(ctx, dataset.id, str(model_dir), config)
    owner = lifecycle.owner_id()
    claimed = lifecycle.claim_job(ctx.engine, job.id, owner, 600)
    with session_scope(ctx.engine) as session:
        snapshot = session.get(DatasetVersion, claimed.dataset_version_id).snapshot_path
    run = JobRun(
        job_id=job.id, owner=owner, attempt=1, config=JobConfig.model_validate_json(claimed.config_json),
        paths=JobPaths(settings.artifacts_root, job.id), snapshot=resolve_inside(settings.artifacts_root, snapshot),
        engine=ctx.engine, lease_seconds=600, writer=EventWriter(make_sink(settings, ctx.engine)),
    )
    set_seed(run.config.training.seed)
    tokenizer = recipe.load_tokenizer(run.config.model)
    data = recipe.prepare_data(run, tokenizer)
    model = recipe.load_model(run.config.model, run.config.adapter, run.log)
    rss_loaded = rss_mb()
    trainer = recipe.build_trainer(model, tokenizer, data, run)
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    result: dict = {}
    untimed_evaluation(trainer, counter, result)
    trainer.add_callback(timer_callback(counter, result))
    with recipe.freed_memory_kept(run.log):  # as recipe.run trains
        trainer.train()
    run.writer.close()
    _, held_rows = split([json.loads(line) for line in data_file.read_text().splitlines()])
    held = encode_rows(tokenizer, held_rows)
    report = _report(result, counter, rss_loaded, held_out_loss(trainer.model, tokenizer, held), trainer.state.global_step)
    # the Train tab's pre-launch memory estimate for this job, against the peak measured here
    report["estimate_mb"] = preview_job(run.config, detect_device()).memory_bytes / 2**20
    report["settings"] = run.config.training.model_dump(
        include={"precision", "packing", "tokens_per_step", "group_by_length", "gradient_checkpointing"}
    )
    return report


def run_llamafactory(lf_python: str, model_dir: Path, data_file: Path, out_dir: Path, neat: bool) -> dict:
    """(c) LLaMA-Factory's CLI (`llamafactory-cli train`, through bench/llamafactory_run.py
    under its own venv's python) on the same model folder, tokenizer, training rows and
    settings: LoRA r=8 alpha 16 dropout 0.05 on all linear layers, batch 8, cutoff 512,
    fp32, one epoch, the same lr, schedule, warmup and seed, no gradient checkpointing (the
    studio's default), no evaluation. Template `alpaca`, the nearest of its built-in ones
    to the studio's default: same headers and EOS, but a shorter preamble and the input
    joined to the instruction by a newline instead of an `### Input:` block. neat: its
    `packing` + `neat_packing` (rows packed into sequences of <= 512 tokens that do not
    attend to each other); else dynamic padding. Tokens, rows and padding are counted in
    its collator, the time from its on_train_begin to the last step (its own model load
    and tokenizing stay out); peak RSS is its process's max RSS. Held-out loss: the bench's
    held_out_loss on base + its saved adapter (peft), rows encoded by its own template."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    train_rows, held_rows = split([json.loads(line) for line in data_file.read_text().splitlines()])
    data_dir = out_dir / "lf_data"
    data_dir.mkdir()
    (data_dir / "train.json").write_text(json.dumps(train_rows))
    (data_dir / "dataset_info.json").write_text(json.dumps({"bench_rows": {"file_name": "train.json"}}))
    (out_dir / "held.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held_rows))
    adapter_dir = out_dir / "lf_output"
    config = {
        "model_name_or_path": str(model_dir), "stage": "sft", "do_train": True,
        "finetuning_type": "lora", "lora_rank": 8, "lora_alpha": 16, "lora_dropout": 0.05, "lora_target": "all",
        "dataset": "bench_rows", "dataset_dir": str(data_dir), "template": "alpaca", "cutoff_len": MAX_LENGTH,
        "packing": neat, "neat_packing": neat, "overwrite_cache": True, "dataloader_num_workers": 0,
        "per_device_train_batch_size": BATCH, "gradient_accumulation_steps": 1, "num_train_epochs": 1.0,
        "learning_rate": LEARNING_RATE, "lr_scheduler_type": "linear", "warmup_steps": 0.03, "seed": SEED,
        "bf16": False, "fp16": False, "disable_gradient_checkpointing": True,
        "output_dir": str(adapter_dir), "overwrite_output_dir": True, "save_strategy": "no",
        "logging_steps": 10, "report_to": "none", "disable_tqdm": True, "plot_loss": False,
    }
    config_file = out_dir / "lf_train.yaml"  # JSON is YAML; 0.9.5's reader fails on a .json file
    config_file.write_text(json.dumps(config, indent=1))
    result_file = out_dir / "lf_result.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": ""}
    cmd = [lf_python, str(Path(__file__).with_name("llamafactory_run.py")), str(config_file), str(result_file),
           str(out_dir / "held.jsonl")]
    with open(out_dir / "lf.log", "w") as log:
        done = subprocess.run(cmd, env=env, cwd=out_dir, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"LLaMA-Factory failed ({done.returncode}):\n{(out_dir / 'lf.log').read_text()[-4000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # its process: our only child
    lf = json.loads(result_file.read_text())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), adapter_dir)
    return {
        "steps": lf["steps"],
        "seconds": lf["seconds"],
        "tokens_per_s": lf["real"] / lf["seconds"],
        "rows_per_s": lf["rows"] / lf["seconds"],
        "tokens_per_cpu_s": lf["real"] / lf["cpu_seconds"],
        "trained_tokens": lf["trained"],
        "trained_per_s": lf["trained"] / lf["seconds"],
        "padding_share": 1 - lf["real"] / lf["computed"],
        "peak_rss_mb": peak,
        "peak_growth_mb": peak - lf["rss_loaded_mb"],
        "held_out_loss": held_out_loss(model, tokenizer, lf["held_out"]),
        "rows": lf["rows"],
    }


def _report(result: dict, counter: CountingCollator, rss_loaded: float, loss: float, steps: int) -> dict:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "steps": steps,
        "seconds": result["seconds"],
        "tokens_per_s": counter.real / result["seconds"],
        "rows_per_s": counter.rows / result["seconds"],
        # CPU time of all the process's threads: steadier than wall time on a shared machine
        "tokens_per_cpu_s": counter.real / result["cpu_seconds"],
        "trained_tokens": counter.trained,
        "trained_per_s": counter.trained / result["seconds"],
        "padding_share": 1 - counter.real / counter.computed,
        "peak_rss_mb": peak,
        "peak_growth_mb": peak - rss_loaded,
        "held_out_loss": loss,
        "rows": counter.rows,
    }


def interleaved_steps(model_dir: Path, data_file: Path, budgets: list[int], rounds: int) -> dict:
    """Training steps (forward, backward, AdamW) of each budget in turn, round after round,
    on the studio's packed sequences: a shared machine's load drifts over minutes, and
    taking turns puts every budget under the same drift. Median non-pad tokens/s each."""
    import statistics

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from worker import recipe
    from worker.packing import PackedCollator, pack_rows

    torch.manual_seed(SEED)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = encode_rows(tokenizer, [json.loads(line) for line in data_file.read_text().splitlines()])
    bins = pack_rows(rows, MAX_LENGTH)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = False
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE)
    collate = PackedCollator(tokenizer.pad_token_id)
    rates: dict[int, list[float]] = {b: [] for b in budgets}
    with recipe.freed_memory_kept(lambda _: None):  # as recipe.run trains
        _interleave(model, optimizer, collate, bins, budgets, rounds, rates)
    return {str(b): statistics.median(r) for b, r in rates.items()}


def _interleave(model, optimizer, collate, bins, budgets, rounds, rates) -> None:
    for round_ in range(rounds + 1):  # round 0 warms up
        for budget in budgets:
            per_step = budget // MAX_LENGTH
            start = (round_ * per_step) % max(1, len(bins) - per_step)
            chunk = bins[start : start + per_step]
            began = time.perf_counter()
            model(**collate([chunk])).loss.backward()  # one step of bins
            optimizer.step()
            optimizer.zero_grad()
            if round_:
                rates[budget].append(sum(len(b["input_ids"]) for b in chunk) / (time.perf_counter() - began))


# --- the parent: build once, run each config in its own process, compare -----------


LLAMAFACTORY = {"LF plain": "lf-plain", "LF neat": "lf-neat"}  # config name -> child


def run_child(name: str, workdir: Path, overrides: dict, llamafactory: str | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 2))}
    child = LLAMAFACTORY.get(name) or ("plain" if name == "plain" else "studio")
    cmd = [sys.executable, __file__, "--child", child, "--workdir", str(workdir), "--studio", json.dumps(overrides)]
    cmd += ["--llamafactory", llamafactory] if llamafactory else []
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {name}: {report['steps']} steps, {report['seconds']:.0f} s", flush=True)
    return report


ROWS = [  # label, key, format, goal
    ("non-pad tokens/s", "tokens_per_s", "{:11.0f}", "4k >= 1.4x plain; 4k within 10% of 1k"),
    ("non-pad tokens/CPU s", "tokens_per_cpu_s", "{:11.0f}", "(steadier under load)"),
    ("rows/s", "rows_per_s", "{:11.2f}", ""),
    ("trained tokens/s", "trained_per_s", "{:11.0f}", ""),
    ("trained tokens", "trained_tokens", "{:11d}", "equal"),
    ("padding share", "padding_share", "{:11.2%}", "studio <= 2%"),
    ("peak RSS MB", "peak_rss_mb", "{:11.0f}", "4k <= 1.0x plain"),
    ("  growth after load MB", "peak_growth_mb", "{:11.0f}", ""),
    ("estimated memory MB", "estimate_mb", "{:11.0f}", "studio: within 25% of peak RSS"),
    ("held-out loss", "held_out_loss", "{:11.4f}", "4k <= 1.02x plain"),
    ("rows trained", "rows", "{:11d}", "equal (LF neat drops rows over its cutoff)"),
    ("steps", "steps", "{:11d}", ""),
    ("train seconds", "seconds", "{:11.1f}", ""),
]


def main() -> None:
    from studio.core.config import deep_merge

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=640, help="generated rows (10%% held out); sets the runtime")
    parser.add_argument("--budgets", default="1024,2048,4096,8192", help="studio tokens_per_step values to sweep")
    parser.add_argument("--studio", default="{}", help="JSON partial config laid over the studio's defaults")
    parser.add_argument("--interleaved", type=int, default=0, metavar="ROUNDS",
                        help="instead: time single steps of each budget in turn, ROUNDS rounds, in one process")
    parser.add_argument("--llamafactory", metavar="PATH/bin/python",
                        help="also run LLaMA-Factory's CLI (plain and neat packing) under this venv's python")
    parser.add_argument("--child", choices=["plain", "studio", "interleaved", "lf-plain", "lf-neat"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        import logging

        logging.disable(logging.WARNING)
        out = Path(tempfile.mkdtemp(dir=args.workdir))
        if args.child == "interleaved":
            budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
            report = interleaved_steps(args.workdir / "model", args.workdir / "rows.jsonl", budgets, int(args.studio))
        elif args.child in ("lf-plain", "lf-neat"):
            report = run_llamafactory(args.llamafactory, args.workdir / "model", args.workdir / "rows.jsonl", out,
                                      neat=args.child == "lf-neat")
        elif args.child == "plain":
            rows = [json.loads(line) for line in (args.workdir / "rows.jsonl").read_text().splitlines()]
            report = run_plain(args.workdir / "model", rows, out)
        else:
            report = run_studio(args.workdir / "model", args.workdir / "rows.jsonl", out, json.loads(args.studio))
        print(json.dumps(report))
        return

    started = time.perf_counter()
    base = json.loads(args.studio)
    configs = {"plain": {}}
    for budget in (int(b) for b in args.budgets.split(",") if b.strip()):
        configs[f"studio {budget / 1024:g}k"] = deep_merge(base, {"training": {"tokens_per_step": budget}})
    if "studio 4k" in configs:  # the same step with the model's own loss: what the fused loss saves
        configs["4k own loss"] = deep_merge(configs["studio 4k"], {"training": {"fused_loss": False}})
    if args.llamafactory:
        configs.update({name: {} for name in LLAMAFACTORY})
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model_dir, _ = build_assets(workdir, args.rows)
        from transformers import AutoModelForCausalLM

        params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters())
        print(f"model: {params / 1e6:.1f}M parameters {SHAPE}; {args.rows} rows; LoRA r=8 all linear, "
              f"max length {MAX_LENGTH}; plain: batch {BATCH}; threads {os.environ.get('OMP_NUM_THREADS', os.cpu_count())}")
        if args.interleaved:
            cmd = [sys.executable, __file__, "--child", "interleaved", "--workdir", str(workdir),
                   "--budgets", args.budgets, "--studio", str(args.interleaved)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"interleaved steps failed:\n{done.stderr[-3000:]}")
            rates = json.loads(done.stdout.strip().splitlines()[-1])
            first = next(iter(rates.values()))
            for budget, rate in rates.items():
                print(f"step of {int(budget):>5} tokens: {rate:7.0f} non-pad tokens/s (median of {args.interleaved}), "
                      f"{rate / first:.2f}x the first")
            return
        results = {name: run_child(name, workdir, overrides, args.llamafactory) for name, overrides in configs.items()}
    studio = [name for name in results if name != "plain" and name not in LLAMAFACTORY]
    for name in studio:
        print(f"{name} settings: {results[name].pop('settings')}")
    print(f"{'':22}" + "".join(f"{name:>11}" for name in results) + "  goal")
    for label, key, fmt, goal in ROWS:
        print(f"{label:22}" + "".join(fmt.format(r[key]) if key in r else f"{'-':>11}" for r in results.values()) + f"  {goal}")
    plain = results["plain"]
    for name in studio:
        r = results[name]
        print(f"{name} / plain: tokens/s {r['tokens_per_s'] / plain['tokens_per_s']:.2f}x, "
              f"peak RSS {r['peak_rss_mb'] / plain['peak_rss_mb']:.2f}x, "
              f"held-out loss {r['held_out_loss'] / plain['held_out_loss']:.3f}x, "
              f"memory estimate / peak RSS {r['estimate_mb'] / r['peak_rss_mb']:.2f}x")
    peers = [name for name in results if name in LLAMAFACTORY]
    if peers:
        best = max(peers, key=lambda name: results[name]["tokens_per_s"])
        print(f"LLaMA-Factory's best here: {best}")
        for name in studio:
            r, b = results[name], results[best]
            print(f"{name} / {best}: tokens/s {r['tokens_per_s'] / b['tokens_per_s']:.2f}x (goal >= 1.3x), "
                  f"rows/s {r['rows_per_s'] / b['rows_per_s']:.2f}x, "
                  f"peak RSS {r['peak_rss_mb'] / b['peak_rss_mb']:.2f}x (goal <= 0.6x), "
                  f"held-out loss {r['held_out_loss'] / b['held_out_loss']:.3f}x (goal <= 1.02x)")
    first = results[studio[0]] if studio else None
    for name in studio[1:]:
        r = results[name]
        print(f"{name} / {studio[0]}: tokens/s {r['tokens_per_s'] / first['tokens_per_s']:.2f}x, "
              f"tokens/CPU s {r['tokens_per_cpu_s'] / first['tokens_per_cpu_s']:.2f}x")
    print(f"total bench time {time.perf_counter() - started:.0f}s; load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
