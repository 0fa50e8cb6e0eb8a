"""The exported chat template reproduces the training renderer: apply_chat_template on a
tokenizer carrying it gives the tokens training saw, for each built-in template."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from studio.core.chat_templates import jinja_chat_template, modelfile
from studio.core.config import TemplateSection
from studio.core.demo import demo_base_dir
from studio.core.templates import conversation, encode_prompt, encode_rows, render_segments

ROWS = [
    {"instruction": "Add 3 and 4.", "input": "", "output": "7"},
    {"instruction": "Count the words.", "input": "red fox  jumps", "output": "3"},
    {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
        {"role": "assistant", "content": "ciao\n"},
    ]},
    {"messages": [
        {"role": "user", "content": "x y"},
        {"role": "assistant", "content": "z"},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "z z"},
    ]},
]
SYSTEMS = ["", 'You answer in "one" word.\n{{ not jinja }} ünï 🚀']


def _ids(result) -> list[int]:
    return list(result["input_ids"] if hasattr(result, "keys") else result)


@pytest.fixture(scope="module")
def base_tokenizer():
    return AutoTokenizer.from_pretrained(demo_base_dir())


@pytest.mark.parametrize("name", ["alpaca", "chatml", "llama2", "llama3"])
@pytest.mark.parametrize("system", SYSTEMS)
def test_exported_template_renders_like_training(base_tokenizer, name, system):
    template = TemplateSection(name=name, system_prompt=system)
    tokenizer = AutoTokenizer.from_pretrained(demo_base_dir())
    tokenizer.chat_template = jinja_chat_template(template, base_tokenizer)
    for row in ROWS:
        messages = conversation(row)
        trained = encode_rows(tokenizer, [row], 100_000, template)[0].input_ids
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        assert tokenizer.decode(trained) == text, (name, row)
        rendered = _ids(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))
        if name != "llama2":
            # llama2 puts a space before each reply that the renderer tokenizes apart
            # from the reply ("[/INST] " + "hello"); one string joins it (" hello").
            assert rendered == trained, (name, row)
        # The prompt a runtime sends for the last reply is token for token the prompt
        # training saw before it (and, for one turn, the studio's own chat prompt).
        prompt = _ids(tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, return_dict=False))
        last_reply = render_segments(row, template, tokenizer)[-1].text
        assert text.startswith(tokenizer.decode(prompt)) and text[len(tokenizer.decode(prompt)) :].startswith(last_reply)
        if name != "llama2":
            assert trained[: len(prompt)] == prompt, (name, row)
        if len(messages) <= 2:
            assert prompt == encode_prompt(tokenizer, row, template), (name, row)


def test_model_and_custom_templates_carry_the_system_text(base_tokenizer):
    template = TemplateSection(name="model", system_prompt="Be kind.")
    tokenizer = AutoTokenizer.from_pretrained(demo_base_dir())
    tokenizer.chat_template = jinja_chat_template(template, base_tokenizer)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<s><|system|>\nBe kind.</s>\n<|user|>\nhi</s>\n<|assistant|>\n"
    assert jinja_chat_template(TemplateSection(name="model"), base_tokenizer) == base_tokenizer.chat_template


def test_modelfile_names_the_gguf_template_and_stops():
    text = modelfile("job-3-q8_0.gguf", TemplateSection(name="chatml", system_prompt="Be kind."), "</s>", "<s>")
    assert text.startswith("FROM ./job-3-q8_0.gguf\n")
    assert 'TEMPLATE """' in text and "<|im_start|>user" in text and "{{ $m.Content }}" in text
    assert 'SYSTEM """Be kind."""' in text
    assert 'PARAMETER stop "<|im_end|>"' in text and 'PARAMETER stop "</s>"' in text
