"""The OpenAI-compatible API on real processes: a job trained here with the worker's own
task, `studio infer` and `studio serve` as subprocesses, and the official `openai`
client (streaming and not), plus /api/chat, the safety blocklist and the request log."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest

from studio.core.safety import REFUSAL
from studio.services.context import StudioContext
from tests.chat_support import start_studio, train_here
from tests.conftest import make_settings

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "Which word comes last in the input?\n\ncat dog owl"}]


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_model_dir, alpaca_file, module_processes):
    settings = make_settings(tmp_path_factory.mktemp("v1") / "data")
    ctx = StudioContext.from_settings(settings)
    job_id = train_here(ctx, alpaca_file, str(tiny_model_dir))
    web, infer, settings = start_studio(module_processes, settings)
    return {"web": web, "infer": infer, "job": job_id, "base": str(tiny_model_dir), "ctx": ctx}


@pytest.fixture(scope="module")
def client(studio) -> openai.OpenAI:
    # Local single-user mode: any key is accepted (OpenAI clients insist on one).
    return openai.OpenAI(base_url=studio["web"] + "/v1", api_key="anything", max_retries=0, timeout=120)


def test_models_lists_bases_results_and_checkpoints(studio, client):
    job = studio["job"]
    ids = [m.id for m in client.models.list()]
    assert ids[:2] == ["demo", studio["base"]]
    assert {f"job-{job}", f"job-{job}/checkpoint-6", f"job-{job}/checkpoint-12"} <= set(ids)
    checkpoint = client.models.retrieve(f"job-{job}/checkpoint-6")
    assert checkpoint.id == f"job-{job}/checkpoint-6" and checkpoint.owned_by == "studio"


def test_chat_streamed_and_not_agree_and_report_usage(studio, client):
    model = f"job-{studio['job']}"
    whole = client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=12)
    assert whole.object == "chat.completion" and whole.model == model
    assert whole.choices[0].message.role == "assistant"
    assert whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage.prompt_tokens > 0 and 0 < whole.usage.completion_tokens <= 12
    chunks = list(client.chat.completions.create(
        model=model, messages=QUESTION, temperature=0, max_tokens=12, stream=True,
        stream_options={"include_usage": True}, seed=1,  # a seed: not the cached answer
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_answers_are_the_training_renderers_prompt_through_plain_peft(studio, client):
    """The host's answer is what plain transformers + peft give for the prompt training's
    renderer writes (studio.core.templates) from the job's frozen template."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.core.chat_prompt import messages_row
    from studio.core.templates import encode_prompt
    from studio.services import jobs
    from worker.generation import generate

    job = studio["job"]
    template = jobs.get_job(studio["ctx"], job).config["template"]
    from studio.core.config import TemplateSection

    template = TemplateSection.model_validate(template)
    tokenizer = AutoTokenizer.from_pretrained(studio["base"])
    folder = studio["ctx"].settings.artifacts_root / "jobs" / str(job) / "checkpoints" / "checkpoint-6"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(studio["base"]), folder).eval()
    questions = [QUESTION, [{"role": "user", "content": "Which number comes just before 41?"}],
                 [{"role": "user", "content": "Join the words with hyphens.\n\nred sun"}]]
    expected = generate(model, tokenizer, [encode_prompt(tokenizer, messages_row(q, template.name), template)
                                           for q in questions], 10)
    for question, want in zip(questions, expected):
        got = client.chat.completions.create(model=f"job-{job}/checkpoint-6", messages=question, temperature=0,
                                             max_tokens=10)
        assert got.choices[0].message.content.strip() == want


def test_completions_take_a_raw_prompt(studio, client):
    from studio.core.templates import render_prompt

    prompt = render_prompt({"instruction": "Which word comes last in the input?", "input": "cat dog owl"})
    model = f"job-{studio['job']}"
    raw = client.completions.create(model=model, prompt=prompt, temperature=0, max_tokens=12)
    chat = client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=12)
    assert raw.object == "text_completion"
    assert raw.choices[0].text == chat.choices[0].message.content
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=model, prompt=prompt, temperature=0, max_tokens=12, stream=True, seed=2))
    assert streamed == raw.choices[0].text


def test_seeded_sampling_repeats_and_is_cached(studio, client):
    stats = lambda: httpx.get(studio["web"] + "/api/chat/stats", timeout=10).json()  # noqa: E731
    before = stats()["cache_hits"]
    ask = dict(model=f"job-{studio['job']}", messages=QUESTION, temperature=1.5, top_p=0.95, seed=7, n=3,
               max_tokens=10)
    first = client.chat.completions.create(**ask)
    again = client.chat.completions.create(**ask)
    assert len(first.choices) == 3
    assert [c.message.content for c in again.choices] == [c.message.content for c in first.choices]
    assert stats()["cache_hits"] == before + 1
    host = httpx.get(studio["infer"] + "/stats", timeout=10).json()
    assert host["cache"]["hits"] >= 1


def test_concurrent_requests_over_adapters_are_batched_and_match_one_at_a_time(studio, client):
    job = studio["job"]
    models = [studio["base"], f"job-{job}", f"job-{job}/checkpoint-6", f"job-{job}/checkpoint-12"]
    questions = [QUESTION, [{"role": "user", "content": "Subtract 3 from 17."}]]
    alone = {(m, i): client.chat.completions.create(model=m, messages=q, temperature=0, max_tokens=10, seed=11)
             .choices[0].message.content for m in models for i, q in enumerate(questions)}
    mixed_before = httpx.get(studio["infer"] + "/stats", timeout=10).json()["mixed_batches"]
    together: dict = {}

    def ask(model, index):  # seed 12: not answered from the cache
        together[(model, index)] = client.chat.completions.create(
            model=model, messages=questions[index], temperature=0, max_tokens=10, seed=12).choices[0].message.content

    threads = [threading.Thread(target=ask, args=key) for key in alone]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert together == alone
    host = httpx.get(studio["infer"] + "/stats", timeout=10).json()
    assert host["mixed_batches"] > mixed_before, "no batch mixed adapters"
    (base,) = [b for b in host["bases"] if studio["base"] in b["key"]]
    assert len(base["adapters"]) == 3  # one base in memory, each checkpoint attached to it


def test_errors_come_in_openais_shape(studio, client):
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="job-999", messages=QUESTION)
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="some/hub-model", messages=QUESTION)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="demo", messages=QUESTION, temperature=7)
    assert bad.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as last:
        client.chat.completions.create(model="demo", messages=[*QUESTION, {"role": "assistant", "content": "x"}])
    assert "last message" in last.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="demo", messages=[{"role": "wizard", "content": "hi"}])
    answer = httpx.post(studio["web"] + "/v1/chat/completions", content=b"{not json", timeout=10)
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"


def test_safety_blocklist_refuses_requests_and_replies(studio, client):
    web = studio["web"]
    model = f"job-{studio['job']}"
    added = httpx.post(web + "/api/chat/blocklist", json={"kind": "word", "pattern": "Forbidden"}, timeout=10)
    assert added.status_code == 201, added.text
    bad = httpx.post(web + "/api/chat/blocklist", json={"kind": "regex", "pattern": "(["}, timeout=10)
    assert bad.status_code == 400 and "regular expression" in bad.json()["detail"]
    try:
        refused = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "say forbidden"}])
        assert refused.choices[0].message.content == REFUSAL
        assert refused.choices[0].finish_reason == "content_filter"
        # On the way out: block whatever the model answers to this question.
        answer = client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=12)
        text = answer.choices[0].message.content.strip()
        rule = httpx.post(web + "/api/chat/blocklist", json={"kind": "regex", "pattern": "^" + text[:3]}, timeout=10)
        blocked = client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=12)
        assert blocked.choices[0].finish_reason == "content_filter"
        assert blocked.choices[0].message.content == REFUSAL
        httpx.delete(web + f"/api/chat/blocklist/{rule.json()['id']}", timeout=10)
    finally:
        httpx.delete(web + f"/api/chat/blocklist/{added.json()['id']}", timeout=10)
    assert httpx.get(web + "/api/chat/blocklist", timeout=10).json() == []
    from studio.services import accounts

    audited = accounts.audit_log(studio["ctx"].engine, action="change blocklist")
    assert len(audited) == 4  # two rules added, two removed (the bad regex was refused)
    assert httpx.get(web + "/api/chat/stats", timeout=10).json()["filtered"] >= 2


def test_api_chat_answers_every_column(studio):
    job = studio["job"]
    models = [studio["base"], f"job-{job}", f"job-{job}/checkpoint-6"]
    answer = httpx.post(studio["web"] + "/api/chat", timeout=120, json={
        "models": models, "messages": QUESTION, "sampling": {"temperature": 0, "max_tokens": 10}})
    assert answer.status_code == 200, answer.text
    replies = answer.json()["replies"]
    assert [r["model"] for r in replies] == models
    assert all(r["usage"]["completion_tokens"] > 0 and r["ttft_ms"] is not None for r in replies)
    too_many = httpx.post(studio["web"] + "/api/chat", timeout=30, json={"models": models * 2, "messages": QUESTION})
    assert too_many.status_code == 422
    stats = httpx.get(studio["web"] + "/api/chat/stats", timeout=10).json()
    assert stats["requests"] > 10 and stats["latency_ms_p95"] >= stats["latency_ms_p50"] > 0
    assert stats["tokens_per_second_p50"] > 0


def test_over_the_memory_budget_is_a_503_not_a_crash(tmp_path, tiny_model_dir, processes):
    settings = make_settings(tmp_path / "data")
    web, infer, _ = start_studio(processes, settings, STUDIO_INFER_MEMORY_GB="0.00001")
    client = openai.OpenAI(base_url=web + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.InternalServerError) as over:
        client.chat.completions.create(model="demo", messages=QUESTION)
    assert over.value.status_code == 503
    assert over.value.body["code"] == "over_memory_budget" and "STUDIO_INFER_MEMORY_GB" in over.value.body["message"]
    assert httpx.get(infer + "/health", timeout=5).status_code == 200  # still up


def test_with_accounts_the_key_is_a_users_api_token(tmp_path, processes):
    from studio.services import accounts

    settings = make_settings(tmp_path / "data")
    ctx = StudioContext.from_settings(settings)
    accounts.add_user(ctx.engine, "ann", "trainer", "a long enough password")
    accounts.add_user(ctx.engine, "rita", "rater", "a long enough password")
    web, _, _ = start_studio(processes, settings)
    with pytest.raises(openai.AuthenticationError) as wrong:
        openai.OpenAI(base_url=web + "/v1", api_key="not-a-token", max_retries=0).models.list()
    assert wrong.value.status_code == 401 and wrong.value.body["type"] == "authentication_error"
    rater = openai.OpenAI(base_url=web + "/v1", api_key=accounts.create_token(ctx.engine, "rita"), max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        rater.models.list()
    assert refused.value.body["type"] == "permission_error"
    trainer = openai.OpenAI(base_url=web + "/v1", api_key=accounts.create_token(ctx.engine, "ann"), max_retries=0)
    assert "demo" in [m.id for m in trainer.models.list()]
    blocklist = httpx.get(web + "/api/chat/blocklist", timeout=10,
                          headers={"authorization": f"Bearer {accounts.create_token(ctx.engine, 'ann')}"})
    assert blocklist.status_code == 403  # the blocklist is the admins'


def test_no_model_host_is_a_503_that_says_how_to_start_one(tmp_path, start_server):
    from tests.conftest import free_port

    settings = make_settings(tmp_path / "data", infer_url=f"http://127.0.0.1:{free_port()}")
    client = openai.OpenAI(base_url=start_server(settings) + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.InternalServerError) as down:
        client.chat.completions.create(model="demo", messages=QUESTION)
    assert down.value.status_code == 503 and down.value.body["code"] == "model_host_unreachable"
    assert "studio infer" in down.value.body["message"]
    assert [m.id for m in client.models.list()] == ["demo"]  # listing needs no host
