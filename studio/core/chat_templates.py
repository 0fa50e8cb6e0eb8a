"""The training template, written out for other runtimes: a Hugging Face chat template
(Jinja, for transformers, vLLM, llama.cpp and LM Studio) and an Ollama TEMPLATE (Go
template syntax) with its stop words.

Both are generated from the same ChatFormat / AlpacaPhrasing data the renderer in
studio.core.templates uses, so `apply_chat_template` on an exported tokenizer gives the
tokens training saw (tests/core/test_chat_templates.py checks it token for token). Only the
standard phrasing is written: diversity varies training text, chat always uses phrasing 0.
"""

from __future__ import annotations

import json

from studio.core.config import TemplateSection
from studio.core.templates import ALPACA_PHRASINGS, CHAT_FORMATS, prefix_ids


def _lit(text: str) -> str:
    """A Jinja expression printing `text` exactly. Fixed text goes through expressions, never
    as raw template text: HF renders with trim_blocks, which eats a newline after a tag."""
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}" if text else ""


def _jinja_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def jinja_chat_template(template: TemplateSection, tokenizer) -> str | None:
    """The job's template as a Hugging Face chat template. User messages may carry an
    `input` (Alpaca's context), as training rows do. None when there is nothing to write
    (the model's own template without changes: keep the tokenizer's)."""
    bos = "{{ bos_token }}" if prefix_ids(tokenizer) else ""
    system = _jinja_str(template.system_prompt)
    head = (
        "{% if messages and messages[0]['role'] == 'system' %}"
        "{% set system = messages[0]['content'] %}{% set turns = messages[1:] %}"
        f"{{% else %}}{{% set system = {system} %}}{{% set turns = messages %}}{{% endif %}}"
    )
    # a user turn's text as the renderer joins it (studio.core.templates._plain_user)
    user_text = "message['content'] ~ (('\\n\\n' ~ message['input']) if message['input'] is defined and message['input'] else '')"
    if template.name == "alpaca":
        p = ALPACA_PHRASINGS[0]
        return (
            head
            + bos
            + "{% set has_input = turns and turns[0]['input'] is defined and turns[0]['input'] %}"
            + f"{{% if system %}}{{{{ system }}}}{{% elif has_input %}}{_lit(p.preamble_with_input)}"
            + f"{{% else %}}{_lit(p.preamble)}{{% endif %}}{_lit(chr(10) * 2)}"
            + "{% for message in turns %}"
            + "{% if message['role'] == 'assistant' %}"
            + "{{ message['content'] }}{{ eos_token }}{% if not loop.last %}" + _lit("\n\n") + "{% endif %}"
            + "{% else %}"
            + _lit(p.instruction) + "{{ message['content'] }}" + _lit("\n\n")
            + "{% if message['input'] is defined and message['input'] %}"
            + _lit(p.input) + "{{ message['input'] }}" + _lit("\n\n") + "{% endif %}"
            + "{% if not loop.last or add_generation_prompt %}" + _lit(p.response) + "{% endif %}"
            + "{% endif %}{% endfor %}"
        )
    if template.name in CHAT_FORMATS:
        fmt = CHAT_FORMATS[template.name]
        user_open, user_close = fmt.user.split("{content}")
        separator = fmt.separator.replace("{bos}", "{{ bos_token }}")
        separator_expr = separator if "{{" in separator else _lit(separator)
        if fmt.system:
            system_open, system_close = fmt.system.split("{system}")
            first_user = ""
            system_block = f"{{% if system %}}{_lit(system_open)}{{{{ system }}}}{_lit(system_close)}{{% endif %}}"
        else:  # the system text goes into the first user turn
            first_open, rest = fmt.first_user_with_system.split("{system}")
            middle, first_close = rest.split("{content}")
            assert first_close == user_close  # both end with the assistant header, written below
            first_user = (
                f"{{% if loop.first and system %}}{_lit(first_open)}{{{{ system }}}}{_lit(middle)}"
                f"{{{{ {user_text} }}}}{{% else %}}"
            )
            system_block = ""
        user_block = f"{_lit(user_open)}{{{{ {user_text} }}}}"
        close = user_close  # the assistant header, written after each user turn
        return (
            head
            + bos
            + system_block
            + "{% for message in turns %}"
            + "{% if message['role'] == 'assistant' %}"
            + "{{ message['content'] }}" + _lit(fmt.reply_end) + "{{ eos_token }}"
            + "{% if not loop.last %}" + separator_expr + "{% endif %}"
            + "{% else %}"
            + first_user
            + user_block
            + ("{% endif %}" if first_user else "")
            + "{% if not loop.last or add_generation_prompt %}" + _lit(close) + "{% endif %}"
            + "{% endif %}{% endfor %}"
        )
    if template.name == "model":
        source = getattr(tokenizer, "chat_template", None) or ""
    else:
        source = template.custom_template
    if not template.system_prompt:
        return source or None
    # the configured system text, for conversations that bring none, as training did
    inject = (
        "{% if not messages or messages[0]['role'] != 'system' %}"
        f"{{% set messages = [{{'role': 'system', 'content': {system}}}] + messages %}}{{% endif %}}"
    )
    return inject + source


# --- Ollama ---------------------------------------------------------------------------


def _go(text: str) -> str:
    """Go template text: literal, except a stray '{{' which must be quoted. (No `{{-`
    anywhere: it would trim the template's own newlines.)"""
    return text.replace("{{", '{{ "{{" }}')


def ollama_template(template: TemplateSection, eos_text: str, bos_text: str) -> tuple[str | None, list[str]]:
    """(TEMPLATE for an Ollama Modelfile over .System and .Messages, PARAMETER stop words).
    TEMPLATE is None for Jinja templates (model, custom): Go templates cannot express them;
    Ollama then reads the chat template from the GGUF metadata where it knows it."""
    stops = [s for s in [eos_text] if s]
    if template.name == "alpaca":
        p = ALPACA_PHRASINGS[0]
        text = (
            "{{ if .System }}{{ .System }}{{ else }}" + _go(p.preamble) + "{{ end }}\n\n"
            "{{ range $i, $m := .Messages }}"
            '{{ if eq $m.Role "user" }}' + _go(p.instruction) + "{{ $m.Content }}\n\n" + _go(p.response)
            + '{{ else if eq $m.Role "assistant" }}{{ $m.Content }}' + _go(eos_text) + "\n\n"
            "{{ end }}{{ end }}"
        )
        return text, stops + [p.instruction.strip()]
    if template.name not in CHAT_FORMATS:
        return None, stops
    fmt = CHAT_FORMATS[template.name]
    user_open, user_close = fmt.user.split("{content}")
    separator = fmt.separator.replace("{bos}", bos_text)
    if fmt.system:
        system_open, system_close = fmt.system.split("{system}")
        system = "{{ if .System }}" + _go(system_open) + "{{ .System }}" + _go(system_close) + "{{ end }}"
        first = ""
    else:
        first_open, rest = fmt.first_user_with_system.split("{system}")
        middle, first_close = rest.split("{content}")
        system = ""
        # Ollama lists a system message among .Messages: the first *user* turn carries it
        first = (
            '{{ if and $first $.System }}' + _go(first_open) + "{{ $.System }}" + _go(middle)
            + "{{ $m.Content }}" + _go(first_close) + "{{ else }}"
        )
    text = (
        system
        + ("{{ $first := true }}" if first else "")
        + "{{ range $i, $m := .Messages }}"
        + '{{ if eq $m.Role "user" }}'
        + first
        + _go(user_open) + "{{ $m.Content }}" + _go(user_close)
        + ("{{ end }}{{ $first = false }}" if first else "")
        + '{{ else if eq $m.Role "assistant" }}{{ $m.Content }}' + _go(fmt.reply_end + eos_text + separator)
        + "{{ end }}{{ end }}"
    )
    end = fmt.reply_end.strip()
    stops += [end] if end else ["[INST]"]
    return text, stops


def modelfile(gguf_name: str, template: TemplateSection, eos_text: str, bos_text: str) -> str:
    """An Ollama Modelfile beside `gguf_name`: `ollama create NAME -f Modelfile`."""
    go_template, stops = ollama_template(template, eos_text, bos_text)
    lines = [f"FROM ./{gguf_name}", ""]
    if go_template is not None:
        lines.append(f'TEMPLATE """{go_template}"""')
    if template.system_prompt:
        lines.append(f'SYSTEM """{template.system_prompt}"""')
    lines += [f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}" for stop in dict.fromkeys(stops)]
    lines += ["PARAMETER temperature 0", ""]
    return "\n".join(lines)
