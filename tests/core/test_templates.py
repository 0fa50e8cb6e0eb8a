"""Label masking on token ids: loss only on the response and its EOS, exact spans."""

from transformers import AutoTokenizer

from studio.core.templates import IGNORE_INDEX, encode_example, encode_prompt, render_prompt

ROW = {"instruction": "Add the numbers.", "input": "2 3", "output": "5"}


def test_prompt_forms():
    assert "### Input:\n2 3" in render_prompt(ROW)
    assert "### Input" not in render_prompt({**ROW, "input": " "})
    assert render_prompt(ROW).endswith("### Response:\n")


def test_only_response_tokens_are_trained(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    enc = encode_example(tok, ROW, max_length=512)
    prompt = encode_prompt(tok, ROW)
    response = tok("5", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert enc.input_ids == prompt + response
    assert enc.labels == [IGNORE_INDEX] * len(prompt) + response
    assert prompt[0] == tok.bos_token_id and enc.labels[-1] == tok.eos_token_id
    assert not enc.truncated and enc.trained_tokens == len(response)


def test_train_on_prompt_option(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    enc = encode_example(tok, ROW, max_length=512, train_on_prompt=True)
    assert enc.labels == enc.input_ids


def test_truncation_cuts_the_response_and_keeps_masking(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    long = {**ROW, "output": "one two three four five six seven eight nine ten"}
    prompt = encode_prompt(tok, long)
    enc = encode_example(tok, long, max_length=len(prompt) + 3)
    assert enc.truncated and len(enc.input_ids) == len(prompt) + 3
    assert enc.labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert enc.labels[len(prompt) :] == enc.input_ids[len(prompt) :]
    assert tok.eos_token_id not in enc.labels  # cut before EOS: nothing after it is trained
    assert encode_example(tok, long, max_length=len(prompt)) is None  # no room for a response
