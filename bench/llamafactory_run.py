"""Runs LLaMA-Factory's own CLI (`llamafactory-cli train <yaml>`) inside its venv and
measures it the way bench/train_throughput.py measures the studio. Imports nothing from
the studio: it runs under LLaMA-Factory's python.

    PATH/bin/python bench/llamafactory_run.py TRAIN_YAML RESULT_JSON HELD_OUT_JSONL

Added around the CLI, without changing what it trains:
- a counting wrapper on LLaMA-Factory's data collator (rows, computed, non-pad and
  trained tokens of each batch while training runs);
- a callback passed to run_exp (the CLI's own `train` entry) that times the training
  steps from on_train_begin to the end of the last step, as the bench's timer does for
  the studio, so model loading and tokenizing stay out of tokens/s;
- after training, the held-out rows encoded by LLaMA-Factory's own template and
  processor (the prompt it trained on), for the bench to score with its held_out_loss.

PyPI's torchaudio is a CUDA build that cannot load against the CPU torch; LLaMA-Factory
imports it only for audio inputs (llamafactory/data/mm_plugin.py), so where it is missing
an empty module stands in for it.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
import time
import types

sys.path.pop(0)  # this folder holds bench scripts named like packages (export, inference, ...)

if importlib.util.find_spec("torchaudio") is None:
    stub = types.ModuleType("torchaudio")
    stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    sys.modules["torchaudio"] = stub


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def main() -> None:
    yaml_path, result_path, held_path = sys.argv[1:4]
    from transformers import TrainerCallback

    from llamafactory import launcher
    from llamafactory.data import collator as lf_collator
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor
    from llamafactory.train import tuner
    from llamafactory.train.sft import workflow

    counts = {"counting": False, "rows": 0, "computed": 0, "real": 0, "trained": 0}
    result: dict = {}
    seen: dict = {}

    collate = lf_collator.SFTDataCollatorWith4DAttentionMask.__call__

    def counting_collate(self, features):
        if counts["counting"]:
            for f in features:
                mask = f["attention_mask"]
                counts["real"] += sum(1 for m in mask if m)
                # neat packing numbers the rows of a sequence 1, 2, ...; otherwise one row an item
                counts["rows"] += max(mask) if mask else 0
        batch = collate(self, features)
        if counts["counting"]:
            counts["computed"] += batch["input_ids"].numel()
            counts["trained"] += int((batch["labels"][:, 1:] != -100).sum())
        return batch

    lf_collator.SFTDataCollatorWith4DAttentionMask.__call__ = counting_collate

    get_dataset = workflow.get_dataset

    def capturing_get_dataset(template, model_args, data_args, training_args, stage, **tokenizer_module):
        seen.update(template=template, data_args=data_args, tokenizer=tokenizer_module["tokenizer"])
        return get_dataset(template, model_args, data_args, training_args, stage, **tokenizer_module)

    workflow.get_dataset = capturing_get_dataset

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            result["rss_loaded_mb"] = rss_mb()
            counts["counting"] = True
            result["start"], result["cpu_start"] = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == state.max_steps:
                result["seconds"] = time.perf_counter() - result["start"]
                result["cpu_seconds"] = time.process_time() - result["cpu_start"]
                result["steps"] = state.global_step
                counts["counting"] = False

    run_exp = tuner.run_exp
    tuner.run_exp = lambda args=None, callbacks=None: run_exp(args, [*(callbacks or []), Timer()])
    sys.argv = ["llamafactory-cli", "train", yaml_path]
    launcher.launch()  # what `llamafactory-cli train TRAIN_YAML` runs

    processor = SupervisedDatasetProcessor(
        template=seen["template"], tokenizer=seen["tokenizer"], processor=None, data_args=seen["data_args"]
    )
    held = []
    for line in open(held_path):
        row = json.loads(line)
        query = "\n".join(part for part in (row["instruction"], row.get("input", "")) if part)
        input_ids, labels = processor._encode_data_example(
            prompt=[{"role": "user", "content": query}], response=[{"role": "assistant", "content": row["output"]}],
            system=None, tools=None, images=[], videos=[], audios=[],
        )
        held.append({"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels})
    counts.pop("counting")
    result.pop("start"), result.pop("cpu_start")
    with open(result_path, "w") as f:
        json.dump({**result, **counts, "held_out": held}, f)


if __name__ == "__main__":
    main()
