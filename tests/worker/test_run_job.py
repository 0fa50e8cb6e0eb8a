"""A job runs end to end through a real Celery worker process, on the embedded broker
and on real Redis, with a real tiny model; cancel works queued and running."""

from __future__ import annotations

import json
import math


from studio.models import JobStatus
from studio.services import jobs
from tests.conftest import make_settings, upload_file, wait_finished

QUICK = {
    "training": {"max_steps": 12, "batch_size": 8, "sample_every": 4, "max_length": 128, "max_new_tokens": 8},
    "data": {"probe_count": 2, "exact_match_rows": 4},
}


def _launch(ctx, model_dir, alpaca_file, config=QUICK):
    return jobs.create_job(ctx, upload_file(ctx, alpaca_file), str(model_dir), config)


def _assert_complete_run(ctx, job_id):
    job = jobs.get_job(ctx, job_id)
    assert job.status == JobStatus.succeeded, job.error
    assert job.step == job.total_steps == 12
    train = [m for m in jobs.job_metrics(ctx, job_id) if m.split == "train"]
    assert [m.step for m in train] == list(range(1, 13))
    assert all(m.loss is not None and m.learning_rate is not None for m in train)
    assert all(m.tokens_per_second and m.tokens_per_second > 0 for m in train[1:])
    evals = [m for m in jobs.job_metrics(ctx, job_id) if m.split == "eval"]
    assert [m.step for m in evals] == [0, 4, 8, 12]
    assert all(m.loss is not None and m.exact_match is not None for m in evals)
    assert all(abs(m.perplexity - math.exp(m.loss)) < 1e-6 for m in evals)
    samples = jobs.job_samples(ctx, job_id)
    assert sorted({s.step for s in samples}) == [0, 4, 8, 12]
    assert all("### Response:" in s.prompt for s in samples)
    events = list((ctx.settings.artifacts_root / "jobs" / str(job_id) / "tensorboard").rglob("events.out.tfevents*"))
    assert events, "no TensorBoard event file"
    final = [c for c in jobs.job_checkpoints(ctx, job_id) if c.final]
    assert len(final) == 1
    return ctx.settings.artifacts_root / final[0].path


def test_job_runs_on_embedded_broker(ctx, tiny_model_dir, alpaca_file, start_worker, processes):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    start_worker(ctx.settings)
    job = _launch(ctx, tiny_model_dir, alpaca_file)
    assert job.status == JobStatus.queued
    wait_finished(ctx, job.id, processes)
    adapter = _assert_complete_run(ctx, job.id)
    # The result is a standard PEFT adapter folder that plain peft loads.
    assert (adapter / "adapter_config.json").is_file()
    assert (adapter / "adapter_model.safetensors").is_file()
    assert json.loads((adapter / "studio_job.json").read_text())["job_id"] == job.id
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, adapter)
    assert any("lora_A" in name for name, _ in model.named_parameters())


def test_job_runs_on_redis(tmp_path, redis_url, tiny_model_dir, alpaca_file, start_worker, processes):
    from studio.services.context import StudioContext

    ctx = StudioContext.from_settings(make_settings(tmp_path / "data", broker_url=redis_url))
    assert ctx.celery.conf.broker_url.startswith("redis://")
    start_worker(ctx.settings)
    job = _launch(ctx, tiny_model_dir, alpaca_file)
    wait_finished(ctx, job.id, processes)
    _assert_complete_run(ctx, job.id)
