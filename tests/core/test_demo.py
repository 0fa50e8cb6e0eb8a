"""The offline demo: shipped base, tokenizer, generated dataset, builders, exact match."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from studio.core import demo
from studio.core.metrics import exact_match, mean_exact_match
from studio.core.templates import IGNORE_INDEX, encode_example, encode_prompt

UNICODE_TEXT = "Grüße, naïve café! Привет мир 你好 🤗🚀 👩‍👩‍👧 tab\tnew\nline 1234567890 <b>x</b>"


@pytest.fixture(scope="module")
def shipped():
    path = demo.demo_base_dir()
    return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)


@pytest.fixture(scope="module")
def tiny_tokenizer():
    return demo.make_tokenizer(["hello world 123", "the cat sat on the mat"] * 20, vocab_size=300)


def test_shipped_base_has_plain_hf_files():
    names = {p.name for p in demo.demo_base_dir().iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= names


def test_shipped_base_loads_and_solves_pretraining_tasks(shipped):
    tokenizer, model = shipped
    rows = demo.generate_rows(demo.PRETRAIN_TASKS, 4 * len(demo.PRETRAIN_TASKS), seed=7)
    answers = demo.generate_responses(model, tokenizer, rows, max_new_tokens=16)
    assert all(isinstance(a, str) for a in answers)
    # Pre-trained, not random (that scores 0): it follows the format and stops on its own.
    assert mean_exact_match(zip(answers, (r["output"] for r in rows))) >= 0.4


def test_shipped_base_knows_little_of_the_demo_tasks(shipped):
    tokenizer, model = shipped
    rows = demo.demo_dataset(40, seed=3)
    answers = demo.generate_responses(model, tokenizer, rows, max_new_tokens=16)
    assert mean_exact_match(zip(answers, (r["output"] for r in rows))) <= 0.2


@pytest.mark.parametrize("which", ["shipped", "tiny"])
def test_tokenizer_round_trips_any_text_without_unk(which, shipped, tiny_tokenizer):
    tokenizer = shipped[0] if which == "shipped" else tiny_tokenizer
    ids = tokenizer(UNICODE_TEXT)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id  # BOS added, EOS not
    assert tokenizer.eos_token_id not in ids
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == UNICODE_TEXT


def test_tokenizer_splits_digits(shipped):
    tokenizer = shipped[0]
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("12345", add_special_tokens=False)["input_ids"])
    assert tokens == list("12345")


def test_tokenizer_has_special_tokens_and_chat_template(shipped):
    tokenizer = shipped[0]
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) == (
        "<s>", "</s>", "<pad>", "<unk>",
    )
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<s><|user|>\nhi</s>\n<|assistant|>\n"


def test_demo_dataset_is_deterministic_and_balanced():
    rows = demo.demo_dataset(100, seed=0)
    assert rows == demo.demo_dataset(100, seed=0)
    assert rows != demo.demo_dataset(100, seed=1)
    assert all(set(r) == {"instruction", "input", "output", "category"} for r in rows)
    counts = {c: sum(r["category"] == c for r in rows) for c in demo.DEMO_FAMILIES}
    assert min(counts.values()) == 100 // len(demo.DEMO_FAMILIES)


def test_demo_families_are_disjoint_from_pretraining():
    assert not set(demo.DEMO_FAMILIES) & set(demo.PRETRAIN_FAMILIES)
    pretrain = demo.generate_rows(demo.PRETRAIN_TASKS, 2000, seed=0)
    demo_rows = demo.demo_dataset(500)

    # Numbers vary inside some instructions; compare the wording without them.
    def wording(row):
        return "".join(ch for ch in row["instruction"] if not ch.isdigit())

    assert not {wording(r) for r in pretrain} & {wording(r) for r in demo_rows}


def test_demo_rows_encode_with_room_to_spare(shipped):
    tokenizer = shipped[0]
    for row in demo.demo_dataset(50):
        encoded = encode_example(tokenizer, row, demo.MAX_LENGTH)
        assert encoded is not None and not encoded.truncated
        assert encoded.labels[-1] == tokenizer.eos_token_id
        assert encoded.labels[: len(encode_prompt(tokenizer, row))].count(IGNORE_INDEX) > 0


def test_write_demo_dataset_jsonl(tmp_path):
    path = demo.write_demo_dataset(tmp_path / "demo.jsonl", n=12)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows == demo.demo_dataset(12)


def test_cli_writes_dataset(tmp_path, capsys):
    assert demo.main(["write-dataset", str(tmp_path / "d.jsonl"), "--rows", "5"]) == 0
    assert len((tmp_path / "d.jsonl").read_text().splitlines()) == 5


def test_build_demo_base_tiny_is_loadable(tmp_path):
    calls = []
    out = demo.build_demo_base(tmp_path / "base", steps=2, progress=lambda f, m: calls.append(f))
    assert calls[0] == 0.0 and calls[-1] == 1.0 and calls == sorted(calls)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == len(tokenizer)
    ids = torch.tensor([encode_prompt(tokenizer, {"instruction": "Say hi."})])
    assert model.generate(ids, max_new_tokens=3, do_sample=False).shape[1] <= ids.shape[1] + 3


def test_tiny_llama_saves_and_reloads(tmp_path, tiny_tokenizer):
    model = demo.make_llama(
        tiny_tokenizer, hidden=32, layers=1, heads=2, intermediate=64, max_positions=64, seed=1
    )
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    ids = tokenizer("hello world", return_tensors="pt")["input_ids"]
    assert ids[0, 0] == tokenizer.bos_token_id
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, again(ids).logits, atol=1e-6)
    # Same seed, same weights.
    twin = demo.make_llama(
        tiny_tokenizer, hidden=32, layers=1, heads=2, intermediate=64, max_positions=64, seed=1
    )
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))


def test_exact_match():
    assert exact_match(" 42\n", "42") == 1.0
    assert exact_match("42", "43") == 0.0
    assert exact_match("Cat", "cat") == 0.0
    assert mean_exact_match([("a", "a"), ("b", "c")]) == 0.5
    assert mean_exact_match([]) == 0.0
