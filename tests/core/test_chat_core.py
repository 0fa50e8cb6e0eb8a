"""Model ids, OpenAI messages as training rows, and the safety blocklist (pure core code)."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.core.chat_prompt import messages_row
from studio.core.model_ids import ModelId, format_model_id, parse_model_id
from studio.core.safety import Blocklist, check_rule
from studio.core.templates import render_prompt


def test_model_ids_round_trip_and_name_their_folders():
    assert parse_model_id("job-3") == ModelId(job_id=3)
    assert parse_model_id("job-3/checkpoint-120") == ModelId(job_id=3, step=120)
    assert parse_model_id("demo").is_base and str(parse_model_id("org/model")) == "org/model"
    assert format_model_id(3) == "job-3" and format_model_id(3, 120) == "job-3/checkpoint-120"
    root = Path("/art")
    assert parse_model_id("job-3").folder(root) == root / "jobs/3/final"
    assert parse_model_id("job-3/checkpoint-120").folder(root) == root / "jobs/3/checkpoints/checkpoint-120"
    for bad in ("job-x", "job-3/checkpoint-", "job-3/final", " "):
        with pytest.raises(ValueError):
            parse_model_id(bad)


def test_a_chat_turn_reaches_an_alpaca_model_as_its_training_row():
    row = {"instruction": "Which word comes last in the input?", "input": "cat dog owl", "output": None}
    asked = messages_row([{"role": "user", "content": "Which word comes last in the input?\n\ncat dog owl"}], "alpaca")
    assert render_prompt(asked) == render_prompt(row)
    plain = messages_row([{"role": "user", "content": [{"type": "text", "text": "Subtract 3 from 17."}]}], "alpaca")
    assert render_prompt(plain) == render_prompt({"instruction": "Subtract 3 from 17.", "input": "", "output": None})
    # Chat formats were trained on instruction + blank line + input: the text goes as it is.
    chat = messages_row([{"role": "user", "content": "a\n\nb"}], "chatml")
    assert chat["messages"][0] == {"role": "user", "content": "a\n\nb"}


@pytest.mark.parametrize("messages,problem", [
    ([], "at least one"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "last message"),
    ([{"role": "tool", "content": "hi"}], "messages[0].role"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}, {"role": "user", "content": "c"}],
     "messages[1]: a system message"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "messages[0].content"),
    ([{"role": "user", "content": 5}], "messages[0].content"),
    (["hi"], "messages[0]"),
])
def test_bad_messages_are_named(messages, problem):
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        messages_row(messages, "alpaca")


def test_blocklist_words_whole_and_any_case_regexes_anywhere_and_the_classifier_hook():
    rules = Blocklist.compile([("word", "secret"), ("regex", r"\d{3}-\d{4}")], classifier=lambda t: "rude" if "fool" in t else None)
    assert rules.blocks("a SECRET plan") == "word: secret"
    assert rules.blocks("secretary") is None  # whole words only
    assert rules.blocks("call 555-1234") == "regex: \\d{3}-\\d{4}"
    assert rules.blocks("you fool") == "classifier: rude"
    assert rules.blocks("hello") is None
    assert check_rule("regex", "([").startswith("pattern: not a regular expression")
    assert check_rule("glob", "x").startswith("kind")
    assert check_rule("word", " ") == "pattern: must not be empty"
