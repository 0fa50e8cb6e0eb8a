"""Prompt templates and label masking: the one renderer training, evaluation, chat and
serving share, so what the model is trained on and what it is asked at chat time can
never disagree.

Masks are computed on token ids: the prompt and the response are tokenized apart and
concatenated, so the trained span is known exactly, never found by searching text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

IGNORE_INDEX = -100  # label value torch's cross-entropy skips

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)


def render_prompt(row: Mapping[str, Any]) -> str:
    """The prompt text for an Alpaca row (everything before the response)."""
    instruction = str(row.get("instruction") or "").strip()
    context = str(row.get("input") or "").strip()
    if context:
        return ALPACA_WITH_INPUT.format(instruction=instruction, input=context)
    return ALPACA_NO_INPUT.format(instruction=instruction)


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool  # the response was cut at max_length

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def prefix_ids(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts before text (e.g. BOS), if any."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    return [bos] if ids and ids[0] == bos else []


def encode_prompt(tokenizer, row: Mapping[str, Any]) -> list[int]:
    """Token ids of the prompt alone: what generation starts from."""
    text = render_prompt(row)
    return prefix_ids(tokenizer) + tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_example(
    tokenizer, row: Mapping[str, Any], max_length: int, train_on_prompt: bool = False
) -> Encoded | None:
    """Token ids and labels for one row; loss only on the response (and its EOS).

    Returns None when the prompt alone fills max_length, since such a row has no
    response tokens left to train on.
    """
    prompt = encode_prompt(tokenizer, row)
    response = tokenizer(str(row.get("output") or ""), add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        response = response + [tokenizer.eos_token_id]
    if len(prompt) >= max_length:
        return None
    room = max_length - len(prompt)
    truncated = len(response) > room
    response = response[:room]
    prompt_labels = list(prompt) if train_on_prompt else [IGNORE_INDEX] * len(prompt)
    return Encoded(prompt + response, prompt_labels + response, truncated)
