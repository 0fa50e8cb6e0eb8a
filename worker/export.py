"""Exports, run on a worker: a merged model folder, an adapter folder (downloaded as zips)
or a GGUF file with an Ollama Modelfile, each verified by loading it back before it is
offered. Read `run` top to bottom.

claim the export (a conditional UPDATE with a lease, like a job) -> load the job's base
and adapter -> record the studio's own greedy answers (worker.generation) and logits ->
build into `<id>.partial` -> load the result in a fresh process (plain transformers /
peft / transformers' GGUF reader) and compare -> rename into place, record the checks.
A failed check fails the export with the reason; nothing half-built is ever offered.

GGUF files come from llama.cpp's own converter (convert_hf_to_gguf.py with its gguf-py),
which ships in the llama-cpp-python sdist on PyPI: `python -m worker.export
install-converter` fetches it (no compiler needed). Verification loads the GGUF with
transformers' `gguf_file=` (pip `gguf`), which dequantizes it to torch.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sqlalchemy.engine import Engine

from studio import lifecycle
from studio.core.basemodels import resolve_base_model
from studio.core.chat_templates import jinja_chat_template, modelfile
from studio.core.config import JobConfig
from studio.core.datasets import read_snapshot
from studio.core.paths import JobPaths, resolve_inside
from studio.core.templates import conversation, encode_prompt
from studio.db import engine_for, session_scope
from studio.leases import EXPORTS, Lease
from studio.models import DatasetVersion, Export, ExportStatus, Job, utcnow
from studio.settings import Settings

log = logging.getLogger(__name__)

KINDS = ("merged", "adapter", "gguf")
QUANTIZATIONS = ("f16", "q8_0")
LOGITS_TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2, "float16": 1e-2}  # merged vs base+adapter
GGUF_AGREEMENT = {"f16": 1.0, "q8_0": 0.75}  # greedy answers equal to the merged model's
VERIFY_PROMPTS = {"merged": 4, "adapter": 4, "gguf": 8}
MAX_NEW_TOKENS = 32
CONVERTER_ENV = "LLAMA_CPP_CONVERTER"  # a folder holding convert_hf_to_gguf.py, conversion/, gguf-py/
CONVERTER_SDIST = "llama-cpp-python==0.3.36"
CHECK_TIMEOUT_S = 3600


class ExportFailed(Exception):
    """A build step or check failed; the message is worded for the user."""


# --- the task -----------------------------------------------------------------------------


@dataclass
class Source:
    """What an export is made from: a job's final result or one of its checkpoints."""

    job_id: int
    step: int | None
    config: JobConfig
    folder: Path  # the adapter folder, or the full model folder for a full fine-tune
    rows: list[dict]  # the job's dataset rows, for verification prompts

    @property
    def label(self) -> str:
        return f"job-{self.job_id}" + (f"-checkpoint-{self.step}" if self.step is not None else "")

    @property
    def full(self) -> bool:
        return self.config.adapter.method == "full"


Report = Callable[[float, str], None]
_update_ours = EXPORTS.update_ours  # one name for the export's changes: bench/export.py times its stages here


def run(settings: Settings, export_id: int) -> str:
    """The Celery task's body: build, verify and record one export."""
    engine = engine_for(settings.db_url)
    owner = lifecycle.owner_id()
    export = EXPORTS.claim(engine, export_id, owner, settings.lease_seconds)
    if export is None:
        log.info("export %s: not claimable (finished or held by a live worker)", export_id)
        return "skipped"
    root = settings.artifacts_root
    final = root / "exports" / str(export_id)
    staging = final.with_name(final.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)

    def report(progress: float, stage: str) -> None:
        _update_ours(engine, export_id, owner, progress=progress, stage=stage[:200])

    checks: dict[str, Any] = {}
    try:
        with Lease(EXPORTS, engine, export_id, owner, settings.lease_seconds) as lease:
            source = load_source(settings, engine, export)
            artifact = build(export.kind, export.quantization, source, staging, checks, report)
        if lease.lost:
            return "lease lost"  # another attempt owns it now
        checks["files"] = file_list(staging)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        path = final / artifact.relative_to(staging)
        size = sum(f["bytes"] for f in checks["files"])
        _update_ours(
            engine, export_id, owner, status=ExportStatus.succeeded, progress=1.0, stage="verified",
            path=str(path.relative_to(root)), size_bytes=size, checks_json=json.dumps(checks),
            finished_at=utcnow(), lease_expires_at=None,
        )
        return "succeeded"
    except Exception as exc:
        log.exception("export %s failed", export_id)
        shutil.rmtree(staging, ignore_errors=True)
        reason = str(exc) if isinstance(exc, ExportFailed) else f"{type(exc).__name__}: {exc}"
        _update_ours(
            engine, export_id, owner, status=ExportStatus.failed, stage="failed", error=reason[:4000],
            checks_json=json.dumps(checks), finished_at=utcnow(), lease_expires_at=None,
        )
        return "failed"


def load_source(settings: Settings, engine: Engine, export: Export) -> Source:
    with session_scope(engine) as session:
        job = session.get(Job, export.job_id)
        snapshot = session.get(DatasetVersion, job.dataset_version_id).snapshot_path
        config = JobConfig.model_validate_json(job.config_json)
    paths = JobPaths(settings.artifacts_root, export.job_id)
    if export.checkpoint_step is None:
        folder = paths.final
    else:
        folder = paths.checkpoints / f"checkpoint-{export.checkpoint_step}"
    if not folder.is_dir():
        raise ExportFailed(f"{paths.relative(folder)} is gone (pruned or deleted); export another checkpoint")
    rows = read_snapshot(resolve_inside(settings.artifacts_root, snapshot))
    return Source(export.job_id, export.checkpoint_step, config, folder, rows)


def build(kind: str, quantization: str | None, source: Source, out: Path, checks: dict, report: Report) -> Path:
    """Build `kind` from source into out, filling checks; returns the artifact's path."""
    if kind == "gguf" and (problem := gguf_available()):
        raise ExportFailed(problem)
    report(0.05, "loading the model")
    tokenizer = load_tokenizer(source)
    model = load_model(source)
    prompts = verification_prompts(source, VERIFY_PROMPTS[kind])
    prompt_ids = [encode_prompt(tokenizer, row, source.config.template) for row in prompts]
    report(0.2, "recording the studio's answers")
    reference = studio_answers(model, tokenizer, prompt_ids)
    checks["prompts"] = len(prompts)
    try:
        return _build(kind, quantization, source, out, checks, report, tokenizer, model, prompts, prompt_ids, reference)
    finally:
        shutil.rmtree(reference.logits_file.parent, ignore_errors=True)


def _build(kind, quantization, source, out, checks, report, tokenizer, model, prompts, prompt_ids, reference) -> Path:
    if kind == "adapter":
        folder = out / f"{source.label}-adapter"
        report(0.4, "writing the adapter")
        write_adapter(source, tokenizer, folder)
        report(0.6, "loading it back in a fresh process")
        result = check_in_fresh_process("adapter", folder, source, prompts, reference.logits_file.parent)
        compare(checks, "adapter", result, prompt_ids, reference, tolerance=LOGITS_TOLERANCE["float32"])
        return folder
    folder = out / f"{source.label}-merged"
    report(0.4, "merging the adapter into the base")
    merged, dtype = save_merged(source, model, tokenizer, folder)
    del model
    if kind == "merged":
        report(0.6, "loading it back in a fresh process")
        result = check_in_fresh_process("merged", folder, source, prompts, reference.logits_file.parent)
        compare(checks, "merged", result, prompt_ids, reference, tolerance=LOGITS_TOLERANCE.get(dtype, 5e-2))
        checks["dtype"] = dtype
        return folder
    report(0.5, f"converting to GGUF {quantization}")
    gguf_path = out / f"{source.label}-{quantization}.gguf"
    checks["converter"] = convert_to_gguf(folder, gguf_path, quantization)
    checks["metadata"] = gguf_metadata(gguf_path)
    if checks["metadata"].get("chat_template") != tokenizer.chat_template:
        raise ExportFailed("the GGUF lost the chat template on the way (tokenizer.chat_template differs)")
    checks["metadata"]["chat_template"] = "the training template"  # shown, not the whole Jinja text
    report(0.75, "loading the GGUF back in a fresh process")
    # the merged model (as saved, just checked to match base + adapter) answers the way a
    # user elsewhere asks: its own chat template, plain generate, one prompt at a time
    merged_result = plain_answers(merged, tokenizer, [conversation(row) for row in prompts], MAX_NEW_TOKENS)
    del merged
    result = check_in_fresh_process("gguf", gguf_path, source, prompts, reference.logits_file.parent)
    shutil.rmtree(folder)  # only the GGUF and its Modelfile are kept
    agree = [a == b for a, b in zip(result["outputs"], merged_result["outputs"])]
    checks["greedy_agreement"] = sum(agree) / len(agree)
    checks["tokenizer_matches"] = result["prompt_ids"] == prompt_ids
    checks["max_logit_diff"] = result["max_logit_diff"]  # vs base + adapter, for information
    checks["disagreements"] = [
        {"prompt": i, "merged": merged_result["outputs"][i], "gguf": result["outputs"][i]}
        for i, same in enumerate(agree) if not same
    ][:3]
    needed = GGUF_AGREEMENT[quantization]
    if result.get("llama_cpp"):  # llama.cpp's own tokenizer and kernels, where installed
        native = result["llama_cpp"]
        same = [a == b for a, b in zip(native["outputs"], merged_result["outputs"])]
        checks["llama_cpp"] = {
            "tokenizer_matches": native["prompt_ids"] == prompt_ids,
            "greedy_agreement": sum(same) / len(same),
        }
        if not checks["llama_cpp"]["tokenizer_matches"]:
            raise ExportFailed("llama.cpp tokenizes the prompts differently from the trained tokenizer")
        if checks["llama_cpp"]["greedy_agreement"] < needed:
            raise ExportFailed(
                f"GGUF {quantization} check failed in llama.cpp: it answers {same.count(False)} of {len(same)} "
                f"prompts unlike the merged model (needed {needed:.0%} agreement)"
            )
    else:
        checks["llama_cpp"] = "not installed on this worker: checked with transformers' GGUF loader only"
    if checks["greedy_agreement"] < needed:
        raise ExportFailed(
            f"GGUF {quantization} check failed: its greedy answers match the merged model's on "
            f"{sum(agree)} of {len(agree)} prompts (needed {needed:.0%})"
        )
    (out / "Modelfile").write_text(
        modelfile(gguf_path.name, source.config.template, tokenizer.eos_token or "", tokenizer.bos_token or "")
    )
    return gguf_path


# --- loading and the studio's reference answers -------------------------------------------


def load_tokenizer(source: Source):
    """The tokenizer training used, carrying the training template as its chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        resolve_base_model(source.config.model.base_model), trust_remote_code=source.config.model.trust_remote_code
    )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # as training did (worker.recipe.load_tokenizer)
    tokenizer.chat_template = jinja_chat_template(source.config.template, tokenizer)
    return tokenizer


def load_model(source: Source):
    """Base + adapter (or the full model) in fp32 on the CPU: merging needs full precision."""
    import torch
    from transformers import AutoModelForCausalLM

    trust = source.config.model.trust_remote_code
    if source.full:
        return AutoModelForCausalLM.from_pretrained(source.folder, dtype=torch.float32, trust_remote_code=trust)
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(
        resolve_base_model(source.config.model.base_model), dtype=torch.float32, trust_remote_code=trust
    )
    return PeftModel.from_pretrained(base, source.folder)


def verification_prompts(source: Source, count: int) -> list[dict]:
    """Rows of the job's own data as prompts (without their answers)."""
    picked = source.rows[:: max(1, len(source.rows) // count)][:count]
    return [{"messages": conversation(row)[:-1]} if "messages" in row else {**row, "output": None} for row in picked]


@dataclass
class Reference:
    outputs: list[str]
    logits_file: Path


def studio_answers(model, tokenizer, prompt_ids: list[list[int]]) -> Reference:
    """Greedy answers from the studio's own generation code, and each prompt's logits."""
    import torch

    from worker.generation import generate

    outputs = generate(model, tokenizer, prompt_ids, MAX_NEW_TOKENS)
    with torch.no_grad():
        logits = [model(torch.tensor([ids])).logits[0].float() for ids in prompt_ids]
    scratch = Path(tempfile.mkdtemp(prefix="studio-export-"))
    torch.save(logits, scratch / "reference.pt")
    return Reference(outputs, scratch / "reference.pt")


def write_adapter(source: Source, tokenizer, folder: Path) -> None:
    """The PEFT folder as training wrote it, plus the tokenizer with its chat template."""
    folder.mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
        if (source.folder / name).is_file():
            shutil.copy2(source.folder / name, folder / name)
    tokenizer.save_pretrained(folder)
    write_job_file(source, folder)


def save_merged(source: Source, model, tokenizer, folder: Path):
    """merge_and_unload (or the full model as it is) into a standard transformers folder
    in the base model's own dtype; returns (the merged model, that dtype's name)."""
    import torch

    merged = model if source.full else model.merge_and_unload()
    dtype = _saved_dtype(source)
    merged.to(getattr(torch, dtype)).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    write_job_file(source, folder)
    return merged, dtype


def _saved_dtype(source: Source) -> str:
    config_file = (source.folder if source.full else Path(resolve_base_model(source.config.model.base_model))) / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError):
        return "float32"  # a hub id not in a local folder: keep full precision
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    return dtype if dtype in LOGITS_TOLERANCE else "float32"


def write_job_file(source: Source, folder: Path) -> None:
    (folder / "studio_job.json").write_text(
        json.dumps(
            {"job_id": source.job_id, "checkpoint_step": source.step, "config": source.config.model_dump(mode="json")},
            indent=2,
        )
    )


def file_list(folder: Path) -> list[dict[str, Any]]:
    return [
        {"name": str(p.relative_to(folder)), "bytes": p.stat().st_size}
        for p in sorted(folder.rglob("*")) if p.is_file()
    ]


# --- checks in a fresh process --------------------------------------------------------------


def check_in_fresh_process(kind: str, artifact: Path, source: Source, prompts: list[dict], scratch: Path) -> dict:
    """Load the export in a new Python process, as a user elsewhere would, and answer the
    prompts through its own chat template; returns prompt ids, answers and max logit diff."""
    request = {
        "kind": kind,
        "artifact": str(artifact),
        "base": resolve_base_model(source.config.model.base_model),
        "conversations": [conversation(row) for row in prompts],
        "reference": str(scratch / "reference.pt"),
        "max_new_tokens": MAX_NEW_TOKENS,
    }
    request_file = scratch / f"check-{kind}.json"
    request_file.write_text(json.dumps(request))
    proc = subprocess.run(
        [sys.executable, "-m", "worker.export", "check", str(request_file)],
        capture_output=True, text=True, timeout=CHECK_TIMEOUT_S,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise ExportFailed(f"the {kind} export does not load in a fresh process: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(checks: dict, kind: str, result: dict, prompt_ids: list, reference: Reference, tolerance: float) -> None:
    """Fail unless the fresh process saw the training prompts and answered like the studio."""
    checks["template_matches"] = result["prompt_ids"] == prompt_ids
    if not checks["template_matches"]:
        raise ExportFailed(f"the {kind} export's chat template does not give the training prompt's tokens")
    checks["max_logit_diff"] = result["max_logit_diff"]
    checks["logit_tolerance"] = tolerance
    if result["max_logit_diff"] > tolerance:
        raise ExportFailed(
            f"the {kind} export's logits differ from base + adapter by {result['max_logit_diff']:.2g} "
            f"(allowed {tolerance:g})"
        )
    agree = [a == b for a, b in zip(result["outputs"], reference.outputs)]
    checks["greedy_agreement"] = sum(agree) / len(agree)
    if not all(agree):
        raise ExportFailed(f"the {kind} export answers {agree.count(False)} of {len(agree)} prompts unlike the studio")


def plain_answers(model, tokenizer, conversations: list, max_new_tokens: int, reference: list | None = None) -> dict:
    """Prompt ids from the tokenizer's chat template, greedy answers from plain
    `generate` one prompt at a time, and (given the reference logits) the largest logit
    difference from them."""
    import torch

    model.eval()
    prompt_ids, outputs, diff = [], [], 0.0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        for index, messages in enumerate(conversations):
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
            ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
            prompt_ids.append(ids)
            tensor = torch.tensor([ids], device=next(model.parameters()).device)
            if reference is not None:
                logits = model(tensor).logits[0].float()
                same_shape = logits.shape == reference[index].shape
                diff = max(diff, float((logits - reference[index]).abs().max()) if same_shape else float("inf"))
            generated = model.generate(
                tensor, attention_mask=torch.ones_like(tensor), max_new_tokens=max_new_tokens,
                do_sample=False, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
            )
            outputs.append(tokenizer.decode(generated[0, len(ids):], skip_special_tokens=True).strip())
    return {"prompt_ids": prompt_ids, "outputs": outputs, "max_logit_diff": diff}


def _check_main(request_file: str) -> None:
    """`python -m worker.export check REQUEST.json`: the fresh process's side."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    request = json.loads(Path(request_file).read_text())
    artifact = Path(request["artifact"])
    if request["kind"] == "gguf":
        tokenizer = AutoTokenizer.from_pretrained(artifact.parent, gguf_file=artifact.name)
        model = AutoModelForCausalLM.from_pretrained(artifact.parent, gguf_file=artifact.name, dtype=torch.float32)
    elif request["kind"] == "adapter":
        from peft import PeftModel

        tokenizer = AutoTokenizer.from_pretrained(artifact)
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(request["base"], dtype=torch.float32), artifact)
    else:
        tokenizer = AutoTokenizer.from_pretrained(artifact)
        model = AutoModelForCausalLM.from_pretrained(artifact, dtype=torch.float32)
    answer = plain_answers(
        model, tokenizer, request["conversations"], request["max_new_tokens"], torch.load(request["reference"])
    )
    if request["kind"] == "gguf":
        answer["llama_cpp"] = _llama_cpp_answers(artifact, tokenizer, request)
    print(json.dumps(answer))


def _llama_cpp_answers(path: Path, tokenizer, request: dict) -> dict | None:
    """The same prompts through llama.cpp itself (its own tokenizer and kernels), where
    llama-cpp-python is installed; None where it is not."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        return None
    from llama_cpp import Llama

    texts = [
        tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in request["conversations"]
    ]
    llm = Llama(model_path=str(path), n_ctx=2048, n_threads=min(4, os.cpu_count() or 1), verbose=False)
    prompt_ids, outputs = [], []
    for text in texts:
        ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        prompt_ids.append(ids)
        llm.reset()
        generated = []
        for token in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0):
            if token == llm.token_eos() or len(generated) >= request["max_new_tokens"]:
                break
            generated.append(token)
        outputs.append(tokenizer.decode(generated, skip_special_tokens=True).strip())
    return {"prompt_ids": prompt_ids, "outputs": outputs}


# --- GGUF: llama.cpp's converter ------------------------------------------------------------


def converter_dir() -> Path | None:
    """Where llama.cpp's converter is: $LLAMA_CPP_CONVERTER, else the user cache that
    `python -m worker.export install-converter` fills; None when neither has it."""
    for candidate in (os.environ.get(CONVERTER_ENV), Path.home() / ".cache" / "finetune-studio" / "llama.cpp"):
        if candidate and (Path(candidate) / "convert_hf_to_gguf.py").is_file():
            return Path(candidate)
    return None


def gguf_available() -> str | None:
    """Why GGUF export cannot run on this machine, or None when it can."""
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        return "GGUF export needs the gguf package: pip install 'finetune-studio[gguf]'"
    if converter_dir() is None:
        return "GGUF export needs llama.cpp's converter: run `python -m worker.export install-converter` on the worker"
    return None


def install_converter(target: Path | None = None) -> Path:
    """Fetch llama.cpp's convert_hf_to_gguf.py, conversion/ and gguf-py/ from the
    llama-cpp-python sdist on PyPI (pip, no build) into target."""
    target = target or Path.home() / ".cache" / "finetune-studio" / "llama.cpp"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", CONVERTER_SDIST, "-d", tmp],
            check=True,
        )
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        staging = Path(tmp) / "out"
        wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")
        with tarfile.open(sdist) as archive:
            for member in archive.getmembers():
                parts = member.name.split("/", 3)  # llama_cpp_python-X/vendor/llama.cpp/<rest>
                if len(parts) == 4 and parts[1:3] == ["vendor", "llama.cpp"] and parts[3].startswith(wanted):
                    if member.isfile():
                        member.name = parts[3]
                        archive.extract(member, staging, filter="data")
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), target)
    return target


def llama_cpp_pre_tokenizer(model_dir: Path) -> str | None:
    """The llama.cpp pre-tokenizer equal to a tokenizer.json's, for tokenizers the
    converter does not know by hash (like the demo's): byte-level BPE ('gpt-2'), or
    byte-level BPE after single digits ('refact': `\\p{N}`, then the GPT-2 regex)."""
    try:
        pre = json.loads((model_dir / "tokenizer.json").read_text()).get("pre_tokenizer") or {}
    except (OSError, json.JSONDecodeError):
        return None
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    byte_level = steps[-1].get("use_regex", True) and not steps[-1].get("add_prefix_space", False) if steps else False
    if kinds == ["ByteLevel"] and byte_level:
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and byte_level:
        return "refact"
    return None


def convert_to_gguf(merged: Path, out: Path, quantization: str) -> dict[str, Any]:
    """Run llama.cpp's converter on a merged folder; returns what it used."""
    problem = gguf_available()
    if problem:
        raise ExportFailed(problem)
    fallback = llama_cpp_pre_tokenizer(merged) or ""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "worker.export", "convert", str(converter_dir()), str(merged), str(out), quantization, fallback],
        capture_output=True, text=True, timeout=CHECK_TIMEOUT_S,
    )
    if proc.returncode != 0 or not out.is_file():
        lines = [line for line in proc.stderr.splitlines() if "Error" in line or "error" in line] or proc.stderr.splitlines()
        raise ExportFailed(f"llama.cpp's converter failed: {' | '.join(lines[-3:])[:1000]}")
    used = {"name": "llama.cpp convert_hf_to_gguf.py", "from": CONVERTER_SDIST, "seconds": round(time.perf_counter() - started, 2)}
    if "pre-tokenizer was not recognized" in proc.stderr:
        used["pre_tokenizer"] = f"{fallback} (matched from tokenizer.json; llama.cpp does not know this tokenizer by hash)"
    return used


def _convert_main(converter: str, merged: str, out: str, outtype: str, fallback: str) -> None:
    """`python -m worker.export convert ...`: llama.cpp's converter, with one addition:
    a tokenizer it does not know by hash gets the pre-tokenizer its tokenizer.json names."""
    import runpy

    sys.path[:0] = [converter, str(Path(converter) / "gguf-py")]
    from conversion import base  # llama.cpp's converter package

    known = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return known(self, tokenizer)
        except NotImplementedError:
            if not fallback:
                raise
            return fallback

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    sys.argv = ["convert_hf_to_gguf.py", merged, "--outfile", out, "--outtype", outtype]
    runpy.run_path(str(Path(converter) / "convert_hf_to_gguf.py"), run_name="__main__")


def gguf_metadata(path: Path) -> dict[str, Any]:
    """The GGUF header fields a user (and the checks) care about."""
    from gguf import GGUFReader

    reader = GGUFReader(path)

    def field(name: str):
        f = reader.get_field(name)
        return None if f is None else f.contents()

    return {
        "architecture": field("general.architecture"),
        "file_type": field("general.file_type"),
        "pre_tokenizer": field("tokenizer.ggml.pre"),
        "tokens": len(reader.get_field("tokenizer.ggml.tokens").data),
        "chat_template": field("tokenizer.chat_template"),
        "tensors": len(reader.tensors),
    }


if __name__ == "__main__":
    command, *args = sys.argv[1:] or ["help"]
    if command == "check":
        _check_main(*args)
    elif command == "convert":
        _convert_main(*(args + [""])[:5])
    elif command == "install-converter":
        print(install_converter(Path(args[0]) if args else None))
    else:
        print("usage: python -m worker.export install-converter [DIR] | check REQUEST.json | convert ...")
        sys.exit(2)
