"""Exports through the real `studio serve` and a real Celery worker: a tiny job is trained,
then exported as a merged model, an adapter zip and GGUF files over REST. Each download
is loaded in a fresh Python process with plain transformers / peft and must answer like
base + adapter in the studio's own generation code; bad requests get a 4xx naming the
field, and only files inside the artifact root are ever served."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import httpx
import pytest

from studio.settings import Settings
from tests.conftest import make_settings, server_starter, worker_starter
from tests.rest_support import QUICK, train_over_rest, wait_finished

pytestmark = pytest.mark.slow

PROMPTS = [{"instruction": "Add 3 and 4.", "input": ""}, {"instruction": "Count the words.", "input": "red fox jumps"}]


def _model_access(model_dir: Path) -> dict:
    # where the studio restricts local base models to allowed folders, allow the tiny one's
    return {"model_dirs": [model_dir.parent]} if "model_dirs" in Settings.model_fields else {}


@pytest.fixture(scope="module")
def studio(tmp_path_factory, module_processes, tiny_model_dir, alpaca_file):
    settings = make_settings(tmp_path_factory.mktemp("exports") / "data", **_model_access(tiny_model_dir))
    worker_starter(module_processes)(settings)
    url = server_starter(module_processes)(settings)
    with httpx.Client(base_url=url, timeout=60) as client:
        _, job_id = train_over_rest(client, alpaca_file, str(tiny_model_dir), module_processes, timeout=240)
        yield client, settings, job_id, module_processes


_made: dict[str, dict] = {}  # exports made by one test and reused by a later one (module scope)


def _export(client, job_id: int, processes, **body) -> dict:
    created = client.post(f"/api/jobs/{job_id}/exports", json=body)
    assert created.status_code == 201, created.text
    return wait_finished(client, f"/api/exports/{created.json()['id']}", processes, 300, ("succeeded", "failed"))


def _studio_answers(settings, job_id: int, base_dir: Path) -> list[str]:
    """Base + the job's adapter through the studio's own prompt encoding and generation."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.core.config import TemplateSection
    from studio.core.templates import encode_prompt
    from worker.generation import generate

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_dir), settings.artifacts_root / "jobs" / str(job_id) / "final"
    )
    template = TemplateSection(**QUICK["template"])
    prompts = [encode_prompt(tokenizer, {**p, "output": None}, template) for p in PROMPTS]
    return generate(model, tokenizer, prompts, max_new_tokens=16)


# What a user elsewhere runs: plain transformers / peft, the exported chat template.
ELSEWHERE = textwrap.dedent(
    """
    import json, sys, torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    kind, folder, base = sys.argv[1:4]
    if kind == "adapter":
        from peft import PeftModel
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), folder)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    answers, logits = [], []
    for p in json.loads(sys.argv[4]):
        content = p["instruction"] + ("\\n\\n" + p["input"] if p["input"] else "")
        ids = tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
        out = model.generate(ids, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        answers.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip())
        logits.append(model(ids).logits[0].tolist())
    print(json.dumps({"answers": answers, "logits": logits}))
    """
)


def _load_elsewhere(kind: str, folder: Path, base_dir: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", ELSEWHERE, kind, str(folder), str(base_dir), json.dumps(PROMPTS)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _unzip(response: httpx.Response, into: Path) -> Path:
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.testzip() is None
        archive.extractall(into)
        return into / archive.namelist()[0].split("/")[0]


def test_merged_and_adapter_downloads_answer_like_the_studio(studio, tiny_model_dir, tmp_path):
    import torch

    client, settings, job_id, processes = studio
    merged = _export(client, job_id, processes, kind="merged")
    adapter = _made["adapter"] = _export(client, job_id, processes, kind="adapter")
    for export in (merged, adapter):
        assert export["status"] == "succeeded", export["error"]
        checks = export["checks"]
        assert checks["template_matches"] and checks["greedy_agreement"] == 1.0
        assert checks["max_logit_diff"] < 1e-4
        assert export["size_bytes"] == sum(f["bytes"] for f in checks["files"]) > 0
    assert {f["name"].split("/")[-1] for f in merged["checks"]["files"]} >= {
        "model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "studio_job.json"
    }
    assert {"adapter_config.json", "adapter_model.safetensors", "studio_job.json"} <= {
        f["name"].split("/")[-1] for f in adapter["checks"]["files"]
    }
    listed = client.get(f"/api/jobs/{job_id}/exports").json()
    assert {e["id"] for e in listed} >= {merged["id"], adapter["id"]}

    expected = _studio_answers(settings, job_id, tiny_model_dir)
    results = {}
    for export in (merged, adapter):
        response = client.get(f"/api/exports/{export['id']}/download")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/zip"
        assert response.headers["content-disposition"] == f'attachment; filename="{export["filename"]}"'
        folder = _unzip(response, tmp_path / export["kind"])
        assert json.loads((folder / "studio_job.json").read_text())["job_id"] == job_id
        results[export["kind"]] = _load_elsewhere(export["kind"], folder, tiny_model_dir)
        assert results[export["kind"]]["answers"] == expected, export["kind"]
    for merged_logits, adapter_logits in zip(results["merged"]["logits"], results["adapter"]["logits"]):
        assert (torch.tensor(merged_logits) - torch.tensor(adapter_logits)).abs().max() < 1e-4


def test_gguf_exports_load_back_and_carry_the_template(studio, tmp_path):
    from worker.export import gguf_available

    missing = gguf_available()
    if missing:
        pytest.skip(f"GGUF converter not installed: {missing}")
    client, settings, job_id, processes = studio
    for quantization in ("f16", "q8_0"):
        export = _export(client, job_id, processes, kind="gguf", quantization=quantization)
        assert export["status"] == "succeeded", export["error"]
        checks = export["checks"]
        assert checks["greedy_agreement"] == 1.0 and checks["tokenizer_matches"]
        assert checks["metadata"]["architecture"] == "llama"
        assert checks["metadata"]["pre_tokenizer"] == "refact"  # the demo-style tokenizer: digits, then GPT-2 bytes
        response = client.get(f"/api/exports/{export['id']}/download")
        assert response.status_code == 200
        assert export["filename"] == f"job-{job_id}-{quantization}.gguf"
        assert f'filename="{export["filename"]}"' in response.headers["content-disposition"]
        assert response.content[:4] == b"GGUF"
        modelfile = client.get(f"/api/exports/{export['id']}/download", params={"file": "Modelfile"})
        assert modelfile.status_code == 200
        assert modelfile.text.startswith(f"FROM ./{export['filename']}")
        assert 'PARAMETER stop "<|im_end|>"' in modelfile.text and 'SYSTEM """Answer briefly."""' in modelfile.text
    # The chat template inside the GGUF is the training one, read by transformers' GGUF loader.
    from gguf import GGUFReader

    path = tmp_path / "model.gguf"
    path.write_bytes(response.content)
    template = GGUFReader(path).get_field("tokenizer.chat_template").contents()
    assert "<|im_start|>" in template and "Answer briefly." in template


def test_bad_requests_are_4xx_naming_the_field(studio):
    client, settings, job_id, _ = studio
    cases = [
        ({"kind": "onnx"}, 422, "kind"),
        ({"kind": "gguf", "quantization": "q4_k"}, 422, "quantization"),
        ({"kind": "merged", "quantization": "q8_0"}, 422, "quantization"),
        ({"kind": "merged", "extra": 1}, 422, "extra"),
        ({"kind": "merged", "checkpoint": 999}, 404, "checkpoint at step 999"),
    ]
    for body, status, named in cases:
        response = client.post(f"/api/jobs/{job_id}/exports", json=body)
        assert response.status_code == status, (body, response.text)
        assert named in response.json()["detail"], (body, response.text)
    assert client.post("/api/jobs/9999/exports", json={"kind": "merged"}).status_code == 404
    assert client.get("/api/exports/9999").status_code == 404
    assert client.get("/api/exports/9999/download").status_code == 404
    assert client.get("/api/exports/abc").status_code == 422


def test_only_files_inside_the_artifact_root_are_served(studio):
    from sqlalchemy import update

    from studio.db import engine_for, session_scope
    from studio.models import Export

    client, settings, job_id, processes = studio
    # the adapter export of the first test, else a checkpoint's (this test run alone)
    export = _made.get("adapter") or _export(client, job_id, processes, kind="adapter", checkpoint=12)
    assert export["status"] == "succeeded", export["error"]
    assert client.get(f"/api/exports/{export['id']}/download", params={"file": "../../studio.db"}).status_code == 404
    # a stored path that escapes the root (a tampered row) is refused, never served
    with session_scope(engine_for(settings.db_url)) as session:
        session.execute(update(Export).where(Export.id == export["id"]).values(path="../studio.db"))
    assert client.get(f"/api/exports/{export['id']}/download").status_code == 404
    # delete removes the files and the record
    assert client.delete(f"/api/exports/{export['id']}").status_code == 204
    assert not (settings.artifacts_root / "exports" / str(export["id"])).exists()
    assert client.get(f"/api/exports/{export['id']}").status_code == 404
