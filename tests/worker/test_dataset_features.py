"""A job trains on what the dataset and template say: chat rows under ChatML, the split
stored with the dataset, template diversity and general text mixed in."""

from __future__ import annotations

import json

from studio.core.demo import demo_dataset
from studio.models import JobStatus
from studio.services import datasets, jobs


def chat_rows(n: int) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": r["instruction"] + (f"\n{r['input']}" if r["input"] else "")},
                {"role": "assistant", "content": r["output"]},
            ],
            "category": r["category"],
        }
        for r in demo_dataset(n, seed=5)
    ]


def test_chat_rows_with_chatml_and_a_stored_split(ctx, tiny_model_dir, monkeypatch):
    from worker import tasks

    monkeypatch.setattr(tasks, "get_settings", lambda: ctx.settings)
    body = "\n".join(json.dumps(r) for r in chat_rows(60)).encode()
    dataset = datasets.create_dataset(ctx, "chat.jsonl", body)[0]
    split = datasets.split_dataset(ctx, dataset.id, validation_fraction=0.2, seed=1)
    held = {json.dumps(r["messages"]) for r in datasets.load_version(ctx, dataset.id)[1].rows if r["split"] == "validation"}
    config = {
        "template": {"name": "chatml", "diversity": 3, "general_text_share": 0.2, "system_prompt": "Be exact."},
        "training": {"max_steps": 4, "batch_size": 8, "sample_every": 2, "max_length": 128, "max_new_tokens": 4},
        "data": {"probe_count": 2, "exact_match_rows": 4},
    }
    job = jobs.create_job(ctx, dataset.id, str(tiny_model_dir), config)
    assert job.dataset_version_id == split.version_id
    tasks.run_job(job.id)
    job = jobs.get_job(ctx, job.id)
    assert job.status == JobStatus.succeeded, job.error
    log = "\n".join(jobs.job_logs(ctx, job.id))
    # stratified: 2 of each category's 12 rows held out; 50 rows + 12 of general text train
    assert split.validation_rows == 10
    assert "data: 62 training rows, 10 held out" in log
    samples = jobs.job_samples(ctx, job.id)
    assert samples and all(s.prompt.startswith("<|im_start|>system\nBe exact.<|im_end|>") for s in samples)
    assert all(s.prompt.endswith("<|im_start|>assistant\n") for s in samples)
    assert all("<|im_end|>" not in s.output for s in samples)
    held_users = {json.loads(h)[0]["content"] for h in held}
    assert {s.prompt.split("<|im_start|>user\n")[1].split("<|im_end|>")[0] for s in samples} <= held_users
