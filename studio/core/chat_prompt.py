"""OpenAI-style messages as a row the training renderer (studio.core.templates) prompts.

A chat user turn is one text. Training wrote an Alpaca row's instruction and input into
chat formats as ``instruction, blank line, input`` (templates._plain_user); for the Alpaca
template the same text is split back at its first blank line, so a question typed the way
chat formats were trained reaches an Alpaca-trained model exactly as its training rows did.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

ROLES = ("system", "user", "assistant")
MAX_MESSAGES = 200


def message_text(content: Any) -> str:
    """A message's content as text: a string, or OpenAI's list of {"type": "text"} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError("only text content parts ({\"type\": \"text\", \"text\": ...}) are supported")
            parts.append(part["text"])
        return "".join(parts)
    raise ValueError("content must be a string or a list of text parts")


def messages_row(messages: Sequence[Mapping[str, Any]], template_name: str) -> dict:
    """The row {"messages": [...]} whose generation prompt answers the last user turn.
    Raises ValueError naming the message that is wrong."""
    if not messages:
        raise ValueError("messages: give at least one message")
    if len(messages) > MAX_MESSAGES:
        raise ValueError(f"messages: at most {MAX_MESSAGES} messages")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(f"messages[{i}]: must be an object with role and content")
        role = message.get("role")
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role: must be one of {', '.join(ROLES)}")
        try:
            text = message_text(message.get("content"))
        except ValueError as exc:
            raise ValueError(f"messages[{i}].content: {exc}") from None
        if role == "system" and i != 0:
            raise ValueError(f"messages[{i}]: a system message may only come first")
        entry = {"role": role, "content": text}
        if role == "user" and template_name == "alpaca" and "\n\n" in text.strip():
            instruction, context = text.strip().split("\n\n", 1)
            entry = {"role": role, "content": instruction.strip(), "input": context.strip()}
        out.append(entry)
    if out[-1]["role"] != "user":
        raise ValueError(f"messages[{len(out) - 1}]: the last message must be the user's")
    return {"messages": out}
