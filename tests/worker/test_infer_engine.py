"""The model host's engine in this process, on the tiny model with adapters made by peft:
mixed-adapter batches equal one model per adapter, DoRA falls back to grouped batches,
the memory budget unloads the least recently used adapter and refuses what cannot fit,
stops and the template's end of reply cut replies."""

from __future__ import annotations

import queue

import pytest
import torch

from studio.core.basemodels import ModelAccess
from worker.infer.engine import Engine, GenerateRequest, ModelSpec

QUESTION = [{"role": "user", "content": "Which word comes last in the input?\n\ncat dog owl"}]


def make_adapter(base_dir, folder, seed: int, dora: bool = False):
    """A LoRA (or DoRA) adapter with random, non-zero weights: it changes the answers."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                        init_lora_weights=False, use_dora=dora)
    get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), config).save_pretrained(folder)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("artifacts")
    for i in range(4):
        make_adapter(tiny_model_dir, root / f"jobs/{i + 1}/final", seed=i)
    make_adapter(tiny_model_dir, root / "jobs/9/final", seed=9, dora=True)
    return root


def engine_for(root, tiny_model_dir, memory_gb: float = 1.0) -> Engine:
    access = ModelAccess((tiny_model_dir.parent.resolve(),), (), frozenset())
    return Engine(root, access, memory_gb=memory_gb, batch_window_s=0.05).start()


def spec(base, job=None):
    if job is None:
        return ModelSpec(id="base", base=str(base))
    return ModelSpec(id=f"job-{job}", base=str(base), adapter=f"jobs/{job}/final")


def ask_all(engine: Engine, requests: list[GenerateRequest]) -> list[dict]:
    """Submit every request at once (one batch); the events of each, as a summary."""
    inboxes = [queue.Queue() for _ in requests]
    for request, inbox in zip(requests, inboxes):
        engine.submit(request, inbox.put)
    answers = []
    for inbox in inboxes:
        texts, summary = {}, {}
        while True:
            event = inbox.get(timeout=120)
            if event["type"] == "delta":
                texts[event["index"]] = texts.get(event["index"], "") + event["text"]
            elif event["type"] == "end":
                summary.setdefault("reasons", {})[event["index"]] = event["finish_reason"]
            elif event["type"] in ("done", "error"):
                summary.update(event)
                break
        summary["texts"] = [texts.get(i, "") for i in range(len(summary.get("reasons", {})))]
        answers.append(summary)
    return answers


def plain_answer(base_dir, adapter_dir, max_tokens: int) -> str:
    """One model per checkpoint, one request at a time: plain transformers + peft."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.core.chat_prompt import messages_row
    from studio.core.templates import encode_prompt

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir)
    ids = torch.tensor([encode_prompt(tokenizer, messages_row(QUESTION, "alpaca"))])
    out = model.eval().generate(input_ids=ids, max_new_tokens=max_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_mixed_adapter_batch_equals_one_model_per_adapter(artifacts, tiny_model_dir):
    engine = engine_for(artifacts, tiny_model_dir)
    try:
        jobs = [None, 1, 2, 3, 4]
        requests = [GenerateRequest(model=spec(tiny_model_dir, j), messages=QUESTION, max_tokens=12) for j in jobs]
        answers = ask_all(engine, requests)
        stats = engine.stats()
    finally:
        engine.stop()
    expected = [plain_answer(tiny_model_dir, None if j is None else artifacts / f"jobs/{j}/final", 12) for j in jobs]
    assert [a["texts"][0] for a in answers] == expected
    assert len(set(expected)) > 1, "the adapters should answer differently"
    assert stats["mixed_batches"] == 1 and stats["batches"] == 1
    (base,) = stats["bases"]
    assert len(base["adapters"]) == 4  # one base, four adapters attached to it
    assert base["adapters"][0]["bytes"] < base["bytes"] / 10


def test_dora_is_not_mixed_but_grouped(artifacts, tiny_model_dir, caplog):
    engine = engine_for(artifacts, tiny_model_dir)
    try:
        with caplog.at_level("INFO", logger="studio.infer"):
            requests = [GenerateRequest(model=spec(tiny_model_dir, j), messages=QUESTION, max_tokens=8) for j in (1, 9)]
            answers = ask_all(engine, requests)
        stats = engine.stats()
    finally:
        engine.stop()
    assert stats["grouped_batches"] == 2 and stats["mixed_batches"] == 0
    assert "cannot share a batch (DoRA)" in caplog.text
    assert answers[1]["texts"][0] == plain_answer(tiny_model_dir, artifacts / "jobs/9/final", 8)
    assert answers[0]["texts"][0] == plain_answer(tiny_model_dir, artifacts / "jobs/1/final", 8)


def test_memory_budget_unloads_the_least_recently_used_adapter(artifacts, tiny_model_dir):
    probe = engine_for(artifacts, tiny_model_dir)
    try:
        ask_all(probe, [GenerateRequest(model=spec(tiny_model_dir, 1), messages=QUESTION, max_tokens=2)])
        (base,) = probe.stats()["bases"]
    finally:
        probe.stop()
    room = base["bytes"] + 2.5 * base["adapters"][0]["bytes"]  # the base and two adapters
    engine = engine_for(artifacts, tiny_model_dir, memory_gb=room / 1024**3)
    try:
        for job in (1, 2, 1, 3):  # 2 is the least recently used when 3 comes
            (answer,) = ask_all(engine, [GenerateRequest(model=spec(tiny_model_dir, job), messages=QUESTION,
                                                         max_tokens=6, seed=job)])
            assert answer["type"] == "done"
        stats = engine.stats()
        again = ask_all(engine, [GenerateRequest(model=spec(tiny_model_dir, 2), messages=QUESTION, max_tokens=6)])
    finally:
        engine.stop()
    folders = sorted(a["folder"].split("/jobs/")[1] for a in stats["bases"][0]["adapters"])
    assert folders == ["1/final", "3/final"] and stats["evictions"] == 1
    assert stats["memory_used_bytes"] <= stats["memory_budget_bytes"]
    assert again[0]["texts"][0] == plain_answer(tiny_model_dir, artifacts / "jobs/2/final", 6)


def test_what_cannot_fit_is_refused_clearly(artifacts, tiny_model_dir):
    engine = engine_for(artifacts, tiny_model_dir, memory_gb=1e-6)
    try:
        (answer,) = ask_all(engine, [GenerateRequest(model=spec(tiny_model_dir), messages=QUESTION)])
    finally:
        engine.stop()
    assert answer["type"] == "error" and answer["status"] == 503 and answer["code"] == "over_memory_budget"
    assert "STUDIO_INFER_MEMORY_GB" in answer["message"]


def test_stops_and_chatml_end_of_reply(artifacts, tiny_model_dir):
    engine = engine_for(artifacts, tiny_model_dir)
    try:
        free, = ask_all(engine, [GenerateRequest(model=spec(tiny_model_dir, 1), messages=QUESTION, max_tokens=20)])
        text = free["texts"][0]
        assert len(text) > 2
        stop = text[1:3]
        cut, = ask_all(engine, [GenerateRequest(model=spec(tiny_model_dir, 1), messages=QUESTION, max_tokens=20,
                                                stop=[stop], seed=1)])
        chatml = ModelSpec(id="job-1", base=str(tiny_model_dir), adapter="jobs/1/final", template={"name": "chatml"})
        marked, = ask_all(engine, [GenerateRequest(model=chatml, messages=QUESTION, max_tokens=30,
                                                   stop=[], temperature=1.0, seed=3)])
        bad, = ask_all(engine, [GenerateRequest(model=spec(tiny_model_dir, 1), messages=[])])
    finally:
        engine.stop()
    assert cut["texts"][0] == text[: text.find(stop)] and cut["reasons"][0] == "stop"
    assert "<|im_end|>" not in marked["texts"][0]
    assert bad["type"] == "error" and bad["status"] == 400


@pytest.mark.parametrize("load_in", ["8bit", "4bit"])
def test_bases_load_in_8_or_4_bits_with_adapters_on_top(tmp_path, load_in):
    pytest.importorskip("bitsandbytes", reason="the 8/4-bit load needs bitsandbytes (pip install '.[gpu]')")
    from studio.core.demo import demo_base_dir

    # The demo base: bitsandbytes' 8-bit kernels refuse the tiny model's 32-wide layers.
    make_adapter(demo_base_dir(), tmp_path / "jobs/1/final", seed=0)
    access = ModelAccess((tmp_path.resolve(),), (), frozenset())
    engines = [Engine(tmp_path, access, memory_gb=1.0, load_in=mode).start() for mode in ("none", load_in)]
    model = ModelSpec(id="job-1", base="demo", adapter="jobs/1/final")
    try:
        answers = [ask_all(e, [GenerateRequest(model=model, messages=QUESTION, max_tokens=6)])[0] for e in engines]
        sizes = [e.stats()["bases"][0]["bytes"] for e in engines]
    finally:
        for engine in engines:
            engine.stop()
    assert answers[1]["type"] == "done" and answers[1]["usage"]["completion_tokens"] > 0, answers[1]
    assert sizes[1] < sizes[0] / 2


def test_a_full_fine_tune_is_a_model_of_its_own(artifacts, tiny_model_dir):
    import shutil

    shutil.copytree(tiny_model_dir, artifacts / "jobs/7/final", dirs_exist_ok=True)  # full weights, as a job saves them
    full = ModelSpec(id="job-7", base=str(tiny_model_dir), full="jobs/7/final")
    engine = engine_for(artifacts, tiny_model_dir)
    try:
        answers = ask_all(engine, [GenerateRequest(model=m, messages=QUESTION, max_tokens=8) for m in (full, spec(tiny_model_dir))])
        missing, = ask_all(engine, [GenerateRequest(model=ModelSpec(id="job-8", base=str(tiny_model_dir), full="jobs/8/final"),
                                                    messages=QUESTION)])
        escape, = ask_all(engine, [GenerateRequest(model=ModelSpec(id="job-9", base=str(tiny_model_dir), adapter="../../etc"),
                                                   messages=QUESTION)])
        stats = engine.stats()
    finally:
        engine.stop()
    assert answers[0]["texts"] == answers[1]["texts"]  # the same weights answer the same
    assert sorted(b["key"].split(":")[0] for b in stats["bases"]) == ["base", "full"]
    assert missing["status"] == 404 and "gone" in missing["message"]
    assert escape["status"] == 404 and "outside the artifact root" in escape["message"]


def test_model_for_gives_the_loaded_base_with_the_adapter_once_the_engine_stopped(artifacts, tiny_model_dir):
    """What evaluation's perplexity uses: the engine's own base with the checkpoint
    attached (not a second copy), refused while the engine thread owns the models."""
    from worker.infer.engine import BASE

    engine = engine_for(artifacts, tiny_model_dir)
    try:
        ask_all(engine, [GenerateRequest(model=spec(tiny_model_dir, 1), messages=QUESTION, max_tokens=2)])
        with pytest.raises(RuntimeError, match="stop the engine first"):
            engine.model_for(spec(tiny_model_dir, 1))
    finally:
        engine.stop()
    base, name = engine.model_for(spec(tiny_model_dir, 1))
    again, other = engine.model_for(spec(tiny_model_dir, 2))
    plain, none = engine.model_for(spec(tiny_model_dir))
    assert base is again is plain and len(engine.bases) == 1  # one base, adapters attached to it
    assert none == BASE and name != other and {name, other} <= set(base.adapters)
    assert base.tokenizer.pad_token_id is not None
