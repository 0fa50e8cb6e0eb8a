"""Exports: merge time, peak memory and folder size of a merged export, and GGUF F16 / Q8_0
size, time and greedy agreement with the merged model, for the demo base and the ~28M
Llama of bench/train_throughput.py.

For each model a short real job is trained (the studio's recipe, in this process), then
each export runs through worker/export.py's own path (claim, build, fresh-process checks)
in a child process of its own, so peak RSS is per export. GGUF agreement is counted on
50 of the job's prompts, by transformers' GGUF loader and, where llama-cpp-python is
installed, by llama.cpp itself. Goals: 100% agreement for F16, >= 95% for Q8_0.

    python bench/export.py [--steps 30] [--prompts 50] [--models demo,28m]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def settings_for(data_dir: Path, model_root: Path):
    from studio.migrate import upgrade
    from studio.settings import Settings

    access = {"model_dirs": [model_root]} if "model_dirs" in Settings.model_fields else {}
    settings = Settings(data_dir=data_dir, **access)
    upgrade(settings.db_url)
    return settings


def train_job(settings, base_model: str, data_file: Path, steps: int, max_length: int, lr: float) -> int:
    """A short real job on the studio's recipe, run here (no broker)."""
    from studio.services import datasets, jobs
    from studio.services.context import StudioContext
    from worker import tasks

    ctx = StudioContext.from_settings(settings)
    tasks.get_settings = lambda: settings
    dataset_id = datasets.create_dataset(ctx, data_file.name, data_file.read_bytes())[0].id
    config = {
        "training": {"max_steps": steps, "batch_size": 8, "sample_every": steps, "max_length": max_length,
                     "max_new_tokens": 8, "learning_rate": lr},
        "data": {"probe_count": 1, "exact_match_rows": 2},
    }
    job = jobs.create_job(ctx, dataset_id, base_model, config, preset="")
    tasks.run_job(job.id)
    finished = jobs.get_job(ctx, job.id)
    assert finished.status.value == "succeeded", finished.error
    return job.id


def run_export(settings, job_id: int, kind: str, quantization: str | None, prompts: int) -> dict:
    """One export in a child process; returns its record, stage times and peak RSS."""
    from studio.services import exports
    from studio.services.context import StudioContext

    ctx = StudioContext.from_settings(settings)
    export = exports.create_export(ctx, job_id, kind, quantization)
    request = {"data_dir": str(settings.data_dir), "model_root": str(settings.model_dirs[0]) if getattr(settings, "model_dirs", None) else "",
               "export_id": export.id, "prompts": prompts}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(request)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["seconds"] = time.perf_counter() - started
    result["export"] = exports.get_export(ctx, export.id).model_dump(mode="json")
    return result


def child(request: dict) -> None:
    """The worker side of one export, with its stages timed."""
    from worker import export

    settings = settings_for(Path(request["data_dir"]), Path(request["model_root"] or "."))
    export.VERIFY_PROMPTS["gguf"] = request["prompts"]
    stages: list[tuple[float, str]] = []
    original = export._update_ours

    def timed(engine, export_id, owner, **values):
        if "stage" in values:
            stages.append((time.perf_counter(), values["stage"]))
        return original(engine, export_id, owner, **values)

    export._update_ours = timed
    outcome = export.run(settings, request["export_id"])
    spans = {stage: round(later[0] - at, 2) for (at, stage), later in zip(stages, stages[1:])}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"outcome": outcome, "stages": spans, "peak_rss_mb": round(peak, 1)}))


def folder_mb(result: dict) -> float:
    return result["export"]["size_bytes"] / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--models", default="demo,28m")
    parser.add_argument("--kinds", default="merged,f16,q8_0", help="which exports to measure")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    from worker.export import gguf_available

    gguf_problem = gguf_available()
    workdir = Path(tempfile.mkdtemp(prefix="bench-export-"))
    from studio.core.demo import demo_base_dir, write_demo_dataset

    rows: list[str] = []
    for name in args.models.split(","):
        if name == "demo":
            base, data, length, lr = "demo", write_demo_dataset(workdir / "demo.jsonl", n=400), 128, 2e-4
            model_root = demo_base_dir().parent
        else:
            sys.path.insert(0, str(ROOT / "bench"))
            from train_throughput import build_assets

            model_dir, data = build_assets(workdir / "28m", 400)
            # a random-init base: the throughput bench's learning rate, so the adapter moves it
            base, length, lr, model_root = str(model_dir), 512, 1e-3, model_dir.parent
        settings = settings_for(workdir / f"data-{name}", model_root)
        started = time.perf_counter()
        job_id = train_job(settings, base, data, args.steps, length, lr)
        print(f"[{name}] trained job {job_id} ({args.steps} steps) in {time.perf_counter() - started:.1f}s", flush=True)
        kinds = args.kinds.split(",")
        if "merged" in kinds:
            rows.append(merged_row(name, run_export(settings, job_id, "merged", None, args.prompts)))
            print(rows[-1], flush=True)
        if gguf_problem:
            rows.append(f"{name:5} gguf     skipped: {gguf_problem}")
            continue
        for quantization in [k for k in ("f16", "q8_0") if k in kinds]:
            result = run_export(settings, job_id, "gguf", quantization, args.prompts)
            checks = result["export"]["checks"]
            native = checks.get("llama_cpp")
            native_text = f"{native['greedy_agreement']:.0%}" if isinstance(native, dict) else "n/a"
            rows.append(
                f"{name:5} {quantization:5}    convert {checks.get('converter', {}).get('seconds', float('nan')):6.2f}s  "
                f"export total {result['seconds']:6.1f}s  peak RSS {result['peak_rss_mb']:7.1f} MB  "
                f"file {folder_mb(result):7.2f} MB  agreement {checks.get('greedy_agreement', 0):.0%} "
                f"(llama.cpp {native_text}) of {checks.get('prompts')} prompts  {result['export']['status']}"
                + (f" ({result['export']['error']})" if result["export"]["error"] else "")
            )
            print(rows[-1], flush=True)
    print("\n".join(["", "results:", *rows]))


def merged_row(name: str, merged: dict) -> str:
    checks = merged["export"]["checks"]
    return (
        f"{name:5} merged   merge+save {merged['stages'].get('merging the adapter into the base', 0):6.2f}s  "
        f"export total {merged['seconds']:6.1f}s  peak RSS {merged['peak_rss_mb']:7.1f} MB  "
        f"folder {folder_mb(merged):7.2f} MB  max logit diff {checks.get('max_logit_diff', float('nan')):.1e}  "
        f"{merged['export']['status']}"
    )


if __name__ == "__main__":
    main()
