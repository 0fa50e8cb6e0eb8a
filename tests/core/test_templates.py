"""Templates and label masking on token ids: the exact trained and masked token spans
for every template, single and multi-turn, truncated rows, and the options."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from studio.core.config import ConfigError, TemplateSection, build_config
from studio.core.templates import (
    ALPACA_NO_INPUT,
    ALPACA_WITH_INPUT,
    IGNORE_INDEX,
    encode_example,
    encode_prompt,
    encode_rows,
    finish_reply,
    mix_general_text,
    pick_variant,
    render_prompt,
    render_segments,
    token_counts,
)

ROW = {"instruction": "Add the numbers.", "input": "2 3", "output": "5"}
CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Colour?"},
        {"role": "assistant", "content": "red"},
    ]
}
CUSTOM = (
    "{% for m in messages %}[{{ m.role }}] {{ m.content }}"
    "{% if m.role == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)

# The exact text of each template for CHAT: (text, trained) segments; every trained
# segment is followed by EOS (trained). Nothing after the last EOS.
EXPECTED_CHAT = {
    "alpaca": [
        ("Be brief.\n\n### Instruction:\nHi\n\n### Response:\n", False),
        ("Hello", True),
        ("\n\n### Instruction:\nColour?\n\n### Response:\n", False),
        ("red", True),
    ],
    "chatml": [
        ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", False),
        ("Hello<|im_end|>", True),
        ("\n<|im_start|>user\nColour?<|im_end|>\n<|im_start|>assistant\n", False),
        ("red<|im_end|>", True),
    ],
    "llama2": [
        ("[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] ", False),
        ("Hello ", True),
        ("<s>[INST] Colour? [/INST] ", False),
        ("red ", True),
    ],
    "llama3": [
        (
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            False,
        ),
        ("Hello<|eot_id|>", True),
        ("<|start_header_id|>user<|end_header_id|>\n\nColour?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", False),
        ("red<|eot_id|>", True),
    ],
    # the tiny tokenizer's own chat template: its EOS text ends each reply, and the newline
    # after it starts the next (masked) prompt
    "model": [
        ("<s><|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\n", False),
        ("Hello</s>", True),
        ("\n<|user|>\nColour?</s>\n<|assistant|>\n", False),
        ("red</s>", True),
    ],
    "custom": [
        ("[system] Be brief.[user] Hi[assistant] ", False),
        ("Hello</s>", True),
        ("[user] Colour?[assistant] ", False),
        ("red</s>", True),
    ],
}
JINJA = ("model", "custom")


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def template(name: str, **options) -> TemplateSection:
    return TemplateSection(name=name, custom_template=CUSTOM if name == "custom" else "", **options)


def expected_ids(tok, name: str, segments) -> tuple[list[int], list[int]]:
    """Ids and labels built by hand from the segment texts: BOS for the built-in
    templates, each segment tokenized alone, EOS after each reply unless it ends in it."""
    ids = [] if name in JINJA else [tok.bos_token_id]
    labels = [IGNORE_INDEX] * len(ids)
    for text, trained in segments:
        piece = tok(text, add_special_tokens=False)["input_ids"]
        if trained and piece[-1] != tok.eos_token_id:
            piece.append(tok.eos_token_id)
        ids += piece
        labels += piece if trained else [IGNORE_INDEX] * len(piece)
    return ids, labels


def test_alpaca_prompt_forms_are_unchanged():
    assert render_prompt(ROW) == ALPACA_WITH_INPUT.format(instruction="Add the numbers.", input="2 3")
    assert render_prompt({**ROW, "input": " "}) == ALPACA_NO_INPUT.format(instruction="Add the numbers.")
    assert render_prompt({"instruction": "Say hi.", "output": None}).endswith("### Response:\n")


@pytest.mark.parametrize("name", list(EXPECTED_CHAT))
def test_multi_turn_segments_and_exact_token_spans(tok, name):
    tpl = template(name)
    segments = [(s.text, s.trained) for s in render_segments(CHAT, tpl, tok)]
    assert segments == EXPECTED_CHAT[name]
    ids, labels = expected_ids(tok, name, EXPECTED_CHAT[name])
    enc = encode_example(tok, CHAT, 512, tpl)
    assert enc.input_ids == ids and enc.labels == labels
    assert not enc.truncated and enc.full_length == len(ids)
    # both replies are trained, each with its EOS; the last token is that EOS
    assert enc.labels.count(tok.eos_token_id) == 2 and enc.input_ids[-1] == tok.eos_token_id


@pytest.mark.parametrize("name", list(EXPECTED_CHAT))
def test_prompt_is_the_row_up_to_the_last_reply(tok, name):
    tpl = template(name)
    prompt_text = "".join(text for text, _ in EXPECTED_CHAT[name][:3])
    assert render_prompt(CHAT, tpl, tok) == prompt_text
    enc = encode_example(tok, CHAT, 512, tpl)
    prompt = encode_prompt(tok, CHAT, tpl)
    last_reply = tok(EXPECTED_CHAT[name][3][0], add_special_tokens=False)["input_ids"]
    assert len(prompt) <= len(enc.input_ids) - len(last_reply)


@pytest.mark.parametrize("name", list(EXPECTED_CHAT))
def test_single_alpaca_row_in_every_template(tok, name):
    tpl = template(name)
    enc = encode_example(tok, ROW, 512, tpl)
    trained = [i for i, label in zip(enc.input_ids, enc.labels) if label != IGNORE_INDEX]
    reply = tok(render_segments(ROW, tpl, tok)[-1].text, add_special_tokens=False)["input_ids"]
    assert trained == (reply if reply[-1] == tok.eos_token_id else reply + [tok.eos_token_id])
    assert enc.input_ids[: len(enc.input_ids) - len(trained)] == encode_prompt(tok, ROW, tpl)


def test_alpaca_single_turn_exact(tok):
    enc = encode_example(tok, ROW, max_length=512)
    prompt = encode_prompt(tok, ROW)
    response = tok("5", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert enc.input_ids == prompt + response
    assert enc.labels == [IGNORE_INDEX] * len(prompt) + response
    assert prompt[0] == tok.bos_token_id and enc.trained_tokens == len(response)


@pytest.mark.parametrize("name", list(EXPECTED_CHAT))
def test_train_on_prompt_option(tok, name):
    enc = encode_example(tok, CHAT, 512, template(name, train_on_prompt=True))
    assert enc.labels == enc.input_ids


@pytest.mark.parametrize("name", list(EXPECTED_CHAT))
def test_truncated_multi_turn_rows(tok, name):
    tpl = template(name)
    ids, labels = expected_ids(tok, name, EXPECTED_CHAT[name])
    first_reply = labels.index(next(label for label in labels if label != IGNORE_INDEX))
    second_prompt_end = max(i for i, label in enumerate(labels) if label == IGNORE_INDEX) + 1
    # cut inside the second prompt: the first reply stays trained, the rest is gone
    cut = second_prompt_end - 2
    enc = encode_example(tok, CHAT, cut, tpl)
    assert enc.truncated and enc.input_ids == ids[:cut] and enc.labels == labels[:cut]
    assert enc.cut_tokens == len(ids) - cut
    # cut inside the last reply: trained up to the cut, the final EOS is not there
    enc = encode_example(tok, CHAT, len(ids) - 2, tpl)
    assert enc.labels == labels[:-2] and enc.labels[-1] != tok.eos_token_id
    # cut before the first reply: nothing to train on
    assert encode_example(tok, CHAT, first_reply, tpl) is None
    assert encode_example(tok, CHAT, first_reply + 1, tpl).trained_tokens == 1


def test_padding_is_never_trained(tok):
    from worker.recipe import make_collator
    from studio.core.config import TrainingSection

    rows = encode_rows(tok, [ROW, CHAT], 512, template("chatml"))
    batch = make_collator(tok, TrainingSection(packing=False))(
        [{"input_ids": r.input_ids, "attention_mask": [1] * len(r.input_ids), "labels": r.labels} for r in rows]
    )
    padding = batch["attention_mask"] == 0
    assert padding.any() and (batch["labels"][padding] == IGNORE_INDEX).all()


def test_batch_encoding_matches_one_by_one(tok):
    rows = [ROW, CHAT, {**ROW, "input": ""}]
    tpl = template("chatml")
    assert encode_rows(tok, rows, 40, tpl) == [encode_example(tok, r, 40, tpl) for r in rows]


def _counts_from_labels(tok, rows, tpl) -> list[tuple[int, int, int]]:
    out = []
    for enc in encode_rows(tok, rows, 10**9, tpl):
        labels = enc.labels
        trained = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
        out.append((len(labels), len(trained), trained[0]))
    return out


@pytest.mark.parametrize("name", list(EXPECTED_CHAT))
@pytest.mark.parametrize("train_on_prompt", [False, True])
def test_token_counts_match_the_encoded_labels(tok, name, train_on_prompt):
    """The report's counts-only encoding agrees with encode_rows, on the fast tokenizer
    path and on the plain `tokenizer(...)` path, EOS texts inside the data included."""
    rows = [ROW, CHAT, {**ROW, "input": ""}, {**ROW, "output": "5 </s>"}, {**ROW, "output": "done</s>"},
            {"messages": [{"role": "user", "content": "x </s> y"}, {"role": "assistant", "content": "a</s>"}]}]
    tpl = template(name, train_on_prompt=train_on_prompt)
    expected = _counts_from_labels(tok, rows, tpl)
    assert token_counts(tok, rows, tpl) == expected
    tok.backend_tokenizer.enable_truncation(8)  # a state the fast path must not read through
    try:
        assert token_counts(tok, rows, tpl) == expected
    finally:
        tok.backend_tokenizer.no_truncation()


def test_system_prompt_option(tok):
    tpl = template("chatml", system_prompt="Answer in French.")
    assert render_prompt(ROW, tpl, tok).startswith("<|im_start|>system\nAnswer in French.<|im_end|>\n")
    assert render_prompt(CHAT, tpl, tok).startswith("<|im_start|>system\nBe brief.")  # the row's own wins
    alpaca = render_prompt(ROW, template("alpaca", system_prompt="You add numbers."))
    assert alpaca.startswith("You add numbers.\n\n### Instruction:\n")


def test_diversity_picks_a_phrasing_per_row_by_seeded_hash(tok):
    tpl = template("alpaca", diversity=4, diversity_seed=1)
    rows = [{**ROW, "instruction": f"Add {i}."} for i in range(40)]
    picks = [pick_variant(r, tpl) for r in rows]
    assert len(set(picks)) == 4 and picks == [pick_variant(r, tpl) for r in rows]
    assert picks != [pick_variant(r, template("alpaca", diversity=4, diversity_seed=2)) for r in rows]
    encoded = encode_rows(tok, rows, 512, tpl)
    headers = {tok.decode(e.input_ids).split("\n\n")[1].split("\n")[0] for e in encoded}
    assert headers == {"### Instruction:", "### Task:", "Instruction:", "## Request"}
    # chat and evaluation always use the standard phrasing
    assert "### Instruction:" in render_prompt(rows[0], tpl)
    assert all(pick_variant(r, template("alpaca")) == 0 for r in rows)


def test_general_text_is_mixed_in_and_trained_whole(tok):
    rows = [ROW] * 30
    mixed = mix_general_text(rows, 0.25, seed=0)
    general = [r for r in mixed if "text" in r]
    assert len(mixed) == 40 and len(general) == 10
    enc = encode_example(tok, general[0], 512)
    assert enc.labels[1:] == enc.input_ids[1:] and enc.labels[0] == IGNORE_INDEX  # all but BOS
    assert mix_general_text(rows, 0.0, seed=0) is rows


def test_custom_template_is_sandboxed_and_checked(tok):
    with pytest.raises(ConfigError, match="custom_template: line 1"):
        build_config({"template": {"name": "custom", "custom_template": "{% for m in messages %}"}})
    with pytest.raises(ConfigError, match="custom_template: write a template"):
        build_config({"template": {"name": "custom"}})
    from studio.core.templates import TemplateError

    sneaky = template("custom").model_copy(update={"custom_template": "{{ messages.append(1) }}"})
    with pytest.raises(TemplateError, match="failed to render"):
        render_segments(ROW, sneaky, tok)
    escape = template("custom").model_copy(update={"custom_template": "{{ ''.__class__.__mro__ }}"})
    with pytest.raises(TemplateError):
        render_segments(ROW, escape, tok)


def test_template_that_does_not_extend_its_turns_is_refused(tok):
    from studio.core.templates import TemplateError

    reversed_turns = template("custom").model_copy(
        update={"custom_template": "{% for m in messages|reverse %}{{ m.content }}{% endfor %}"}
    )
    with pytest.raises(TemplateError, match="does not extend the turns before it"):
        encode_example(tok, CHAT, 512, reversed_turns)


def test_finish_reply_strips_the_end_marker():
    assert finish_reply("red<|im_end|>\n<|im_start|>", template("chatml")) == "red"
    assert finish_reply(" 5 ", template("alpaca")) == "5"
