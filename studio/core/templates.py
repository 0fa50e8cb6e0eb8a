"""Prompt templates and label masking: the one renderer training, evaluation, chat and
serving share, so what the model is trained on and what it is asked at chat time can
never disagree.

A row (Alpaca or chat, see studio.core.datasets) becomes a conversation, and the
conversation becomes a list of text segments, each either trained (an assistant reply
and its end marker) or not (system text, user turns, headers). Segments are tokenized one
by one and concatenated, so the trained token span is known exactly from the token ids,
never found by searching decoded text.

Templates:
- ``alpaca``, ``chatml``, ``llama2``, ``llama3``: built in, written below;
- ``model``: the tokenizer's own ``chat_template`` (``apply_chat_template``);
- ``custom``: a user's Jinja template over the same variables as a Hugging Face chat
  template (``messages``, ``bos_token``, ``eos_token``, ``add_generation_prompt``),
  rendered in Jinja's immutable sandbox.
For the two Jinja kinds a conversation is rendered prefix by prefix and split where the
renders differ; a template whose renders are not prefixes of one another is refused.

Every assistant reply ends with the tokenizer's EOS token, trained, so generation stops
where training stopped; template text after that EOS (a newline between turns) is never
trained, and neither is padding (the collators pad labels with IGNORE_INDEX).
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator, Mapping, Sequence

from studio.core.config import TemplateSection

IGNORE_INDEX = -100  # label value torch's cross-entropy skips
DEFAULT_TEMPLATE = TemplateSection()

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)


class TemplateError(ValueError):
    """A template cannot render a row (a broken custom template, a model without one)."""


@dataclass(frozen=True)
class AlpacaPhrasing:
    """One phrasing of the Alpaca instruction wrapper."""

    preamble: str
    preamble_with_input: str
    instruction: str
    input: str
    response: str


ALPACA_PHRASINGS = (
    AlpacaPhrasing(  # the standard one: what chat and evaluation always use
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.",
        "### Instruction:\n",
        "### Input:\n",
        "### Response:\n",
    ),
    AlpacaPhrasing(
        "Here is a task. Complete it with a fitting answer.",
        "Here is a task, with some context for it. Complete it with a fitting answer.",
        "### Task:\n",
        "### Context:\n",
        "### Answer:\n",
    ),
    AlpacaPhrasing(
        "Follow the instruction below.",
        "Follow the instruction below, using the input it comes with.",
        "Instruction:\n",
        "Input:\n",
        "Response:\n",
    ),
    AlpacaPhrasing(
        "Read the request and write a helpful reply.",
        "Read the request and the details given with it, then write a helpful reply.",
        "## Request\n",
        "## Details\n",
        "## Reply\n",
    ),
)

# For the chat templates the wrapper is the model's format and must not vary; diversity
# varies the system text instead (when the user set none).
SYSTEM_PHRASINGS = (
    "",
    "You are a helpful assistant.",
    "You are a helpful assistant. Complete the user's request.",
    "Answer the user's request carefully and helpfully.",
)


@dataclass(frozen=True)
class ChatFormat:
    """A built-in chat format. `separator` goes between a reply's EOS and the next turn
    ('{bos}' stands for the tokenizer's BOS text); nothing after the last EOS is kept."""

    system: str  # '{system}' inside; empty: the system text goes into the first user turn
    user: str  # '{content}' inside; ends with the assistant header
    first_user_with_system: str  # for formats without a system block
    reply_end: str  # trained after the reply, before EOS
    separator: str


CHAT_FORMATS = {
    "chatml": ChatFormat(
        "<|im_start|>system\n{system}<|im_end|>\n",
        "<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n",
        "",
        "<|im_end|>",
        "\n",
    ),
    "llama2": ChatFormat(
        "",
        "[INST] {content} [/INST] ",
        "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{content} [/INST] ",
        " ",
        "{bos}",
    ),
    "llama3": ChatFormat(
        "<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>",
        "<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        "",
        "<|eot_id|>",
        "",
    ),
}

# Text that marks template structure: seen inside the data, it teaches the model to
# emit markers (the quality report looks for these).
TEMPLATE_MARKERS = (
    "### Instruction:",
    "### Input:",
    "### Response:",
    "<|im_start|>",
    "<|im_end|>",
    "[INST]",
    "[/INST]",
    "<<SYS>>",
    "<</SYS>>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|begin_of_text|>",
    "<|endoftext|>",
)


@dataclass(frozen=True)
class Segment:
    text: str
    trained: bool  # an assistant reply (and its end marker): the loss is taken here


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool  # the row was cut at max_length
    full_length: int = 0  # tokens before the cut

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)

    @property
    def cut_tokens(self) -> int:
        return max(0, self.full_length - len(self.input_ids))


# --- rows as conversations ------------------------------------------------------------


def conversation(row: Mapping[str, Any]) -> list[dict[str, str]]:
    """A row as [{"role", "content"(, "input")}, ...]. An Alpaca row whose output is None
    (a prompt to answer) has no assistant turn."""
    if "messages" in row:
        return [dict(m) for m in row["messages"]]
    user = {
        "role": "user",
        "content": str(row.get("instruction") or "").strip(),
        "input": str(row.get("input") or "").strip(),
    }
    if row.get("output") is None:
        return [user]
    return [user, {"role": "assistant", "content": str(row["output"])}]


def reference_text(row: Mapping[str, Any]) -> str | None:
    """The reply a row expects to its prompt (the last assistant turn), None for a probe."""
    if "messages" in row:
        replies = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
        return replies[-1] if replies else None
    return row.get("output")


def _plain_user(message: Mapping[str, str]) -> str:
    """A user turn's text for formats without an input slot: instruction, then input."""
    context = message.get("input") or ""
    return message["content"] + (f"\n\n{context}" if context else "")


def pick_variant(row: Mapping[str, Any], template: TemplateSection) -> int:
    """The phrasing a row is trained with: 0 unless diversity is on, else a seeded hash of
    the row (stable across runs and workers)."""
    if template.diversity <= 1:
        return 0
    key = f"{template.diversity_seed}\0{sorted(row.items())!r}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big") % template.diversity


# --- rendering ------------------------------------------------------------------------


def render_segments(
    row: Mapping[str, Any],
    template: TemplateSection = DEFAULT_TEMPLATE,
    tokenizer=None,
    variant: int = 0,
    generation_prompt: bool = False,
) -> list[Segment]:
    """The row as text segments. With generation_prompt, the last assistant reply is left
    out and the segments end where the model starts writing (chat, evaluation)."""
    messages = conversation(row)
    if generation_prompt and messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    if template.name == "alpaca":
        segments = _alpaca_segments(messages, template, variant)
    elif template.name in CHAT_FORMATS:
        segments = _chat_segments(messages, template, CHAT_FORMATS[template.name], tokenizer, variant)
    else:
        segments = _jinja_segments(messages, template, tokenizer, variant)
    return [s for s in segments if s.text]


def _system_text(messages: list[dict], template: TemplateSection, variant: int) -> tuple[str, list[dict]]:
    """The system text (the row's own, else the configured one, else a phrasing) and the
    messages without it."""
    if messages and messages[0]["role"] == "system":
        return messages[0]["content"], messages[1:]
    return template.system_prompt or SYSTEM_PHRASINGS[variant % len(SYSTEM_PHRASINGS)], messages


def _alpaca_segments(messages: list[dict], template: TemplateSection, variant: int) -> list[Segment]:
    phrasing = ALPACA_PHRASINGS[variant % len(ALPACA_PHRASINGS)]
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else template.system_prompt
    turns = [m for m in messages if m["role"] != "system"]
    has_input = bool(turns and turns[0].get("input"))
    preamble = system or (phrasing.preamble_with_input if has_input else phrasing.preamble)
    segments, prompt = [], preamble + "\n\n"
    for message in turns:
        if message["role"] == "assistant":
            segments += [Segment(prompt, False), Segment(message["content"], True)]
            prompt = "\n\n"
            continue
        context = message.get("input") or ""
        prompt += phrasing.instruction + message["content"] + "\n\n"
        if context:
            prompt += phrasing.input + context + "\n\n"
        prompt += phrasing.response
    if turns and turns[-1]["role"] == "user":
        segments.append(Segment(prompt, False))
    return segments


def _chat_segments(
    messages: list[dict], template: TemplateSection, fmt: ChatFormat, tokenizer, variant: int
) -> list[Segment]:
    system, turns = _system_text(messages, template, variant)
    bos = (getattr(tokenizer, "bos_token", None) or "") if tokenizer is not None else "<s>"
    prompt = fmt.system.format(system=system) if system and fmt.system else ""
    segments, first = [], True
    for message in turns:
        if message["role"] == "assistant":
            segments += [Segment(prompt, False), Segment(message["content"] + fmt.reply_end, True)]
            prompt = fmt.separator.replace("{bos}", bos)
            continue
        wrapper = fmt.first_user_with_system if first and system and not fmt.system else fmt.user
        prompt += wrapper.format(content=_plain_user(message), system=system)
        first = False
    if turns and turns[-1]["role"] == "user":
        segments.append(Segment(prompt, False))
    return segments


class TemplateLimit(TemplateError):
    """A custom template ran past its time or output limit."""


@dataclass(frozen=True)
class RenderLimits:
    """Bounds on one render of a custom template (settings template_timeout_seconds and
    template_max_chars)."""

    seconds: float = 5.0
    max_chars: int = 1_000_000


def render_limits() -> RenderLimits:
    """The limits this process's settings set."""
    from studio.settings import get_settings

    settings = get_settings()
    return RenderLimits(settings.template_timeout_seconds, settings.template_max_chars)


# The running render's (deadline, limits); a context variable, so concurrent renders in
# the web app's threads each keep their own.
_RENDER: ContextVar[tuple[float, RenderLimits] | None] = ContextVar("template_render", default=None)
_CHECK_EVERY = 256  # loop iterations between clock reads
_STOP: ContextVar[Any] = ContextVar("template_stop", default=None)


@contextmanager
def stop_renders_when(event: Any) -> Iterator[None]:
    """Custom-template renders in this block stop once `event` (a threading.Event) is set,
    mid-row: a cancelled job's data preparation does not wait for a slow template."""
    token = _STOP.set(event)
    try:
        yield
    finally:
        _STOP.reset(token)


def _check_clock() -> None:
    stop = _STOP.get()
    if stop is not None and stop.is_set():
        raise TemplateLimit("rendering stopped: the job was cancelled")
    current = _RENDER.get()
    if current is not None and time.monotonic() > current[0]:
        raise TemplateLimit(
            f"the custom template took longer than {current[1].seconds:g} s to render one row "
            "(STUDIO_TEMPLATE_TIMEOUT_SECONDS); simplify its loops"
        )


def _max_chars() -> int:
    current = _RENDER.get()
    return current[1].max_chars if current is not None else RenderLimits.max_chars


def _too_long(size: int) -> TemplateLimit:
    return TemplateLimit(
        f"the custom template writes more than {_max_chars():,} characters for one row "
        f"(STUDIO_TEMPLATE_MAX_CHARS); it tried {size:,}"
    )


def _check_sizes(args: Any, kwargs: Mapping[str, Any]) -> None:
    """A number argument can ask for a giant string ("x".ljust(10**10), center(10**10)):
    refuse one bigger than the output limit before Python allocates it."""
    limit = _max_chars()
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and value > limit:
            raise _too_long(value)


_PERCENT_WIDTH = re.compile(r"%[-+ #0]*(\d*)(?:\.(\d+))?")
_BRACE_SPEC = re.compile(r"\{[^{}]*:([^{}]*)\}")


def _check_format(spec: str) -> None:
    """A format string's widths ("{:>9999999999}", "%9999999999s") are giant strings too."""
    limit = _max_chars()
    spec = spec[:100_000]
    numbers = [n for pair in _PERCENT_WIDTH.findall(spec) for n in pair if n]
    numbers += [n for inner in _BRACE_SPEC.findall(spec) for n in re.findall(r"\d+", inner)]
    for number in numbers:
        if len(number) > 12 or int(number) > limit:
            raise _too_long(int(number[:13]))


def _check_replace(text: Any, old: Any, new: Any, count: Any = None) -> None:
    """s.replace(a, b) grows by len(b) - len(a) for each a in s: squared when b is s itself."""
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
        times = text.count(old) if old else len(text) + 1
        if isinstance(count, int) and count >= 0:
            times = min(times, count)
        size = len(text) + times * (len(new) - len(old))
        if size > _max_chars():
            raise _too_long(size)


def _checked_size(value: Any) -> Any:
    """A value a template built, refused when it is bigger than the output limit."""
    if isinstance(value, (str, list, tuple, dict)) and len(value) > _max_chars():
        raise _too_long(len(value))
    return value


WIDTH_FILTERS = ("center", "format", "indent")  # build text to a size their arguments give


def _sized_filter(name: str, function):
    """A built-in filter whose result is size-checked (and, for the width filters, whose
    arguments are checked before it runs)."""

    @functools.wraps(function)  # keeps jinja's pass_context / pass_environment marks
    def checked(*args, **kwargs):
        if name in WIDTH_FILTERS:
            _check_sizes(args[1:], kwargs)
            if name == "format" and isinstance(args[0], str):
                _check_format(args[0])
        elif name == "replace" and len(args) >= 4:  # (eval context, s, old, new[, count])
            _check_replace(*args[1:5])
        return _checked_size(function(*args, **kwargs))

    return checked


def _bounded_join(items: list) -> str:
    """What `a ~ b` builds, checked against the output limit before it is joined."""
    parts = [str(item) for item in items]
    size = sum(len(part) for part in parts)
    if size > _max_chars():
        raise _too_long(size)
    return "".join(parts)


def _bounded_iter(iterable):
    """What every template for-loop iterates: the same items, with the clock read as it goes."""
    for count, item in enumerate(iterable):
        if count % _CHECK_EVERY == 0:
            _check_clock()
        yield item


def _sandbox_class():
    from jinja2 import nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from jinja2.visitor import NodeTransformer

    class Bound(NodeTransformer):
        """Every for-loop iterates through _bounded_iter and every `~` joins through
        _bounded_join, so loops that neither call nor print read the clock, and a string
        doubled by `~` in a loop stops at the output limit."""

        def visit_For(self, node):
            node = self.generic_visit(node)
            node.iter = nodes.Filter(node.iter, "_studio_bounded", [], [], None, None, lineno=node.iter.lineno)
            return node

        def visit_Concat(self, node):
            node = self.generic_visit(node)
            return nodes.Filter(nodes.List(node.nodes), "_studio_join", [], [], None, None, lineno=node.lineno)

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        """Jinja's immutable sandbox (no attribute escapes, range at most 100k) plus a clock
        on every loop, call and attribute, and a size bound on what every operator, call
        and filter builds: nothing a template makes grows past the output limit (giant
        sizes asked for outright, like 'x' * 10**10, are refused before they are built)."""

        intercepted_binops = frozenset(["*", "**", "%", "+"])

        def call_binop(self, context, operator, left, right):
            if operator == "%" and isinstance(left, str):
                _check_format(left)
            elif operator == "**":
                if isinstance(left, (int, float)) and isinstance(right, (int, float)) and abs(left) > 1 and right > 64:
                    raise TemplateLimit(f"the custom template computes {left!r} ** {right!r}, too big a number")
            elif operator == "*":
                text, times = (right, left) if isinstance(left, int) else (left, right)
                if isinstance(text, (str, list, tuple)) and isinstance(times, int) and len(text) * times > _max_chars():
                    raise _too_long(len(text) * times)
            return _checked_size(super().call_binop(context, operator, left, right))

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's signature)
            _check_clock()
            _check_sizes(args, kwargs)
            if getattr(__obj, "__name__", "") == "replace" and isinstance(getattr(__obj, "__self__", None), str):
                _check_replace(__obj.__self__, *args[:3])
            return _checked_size(super().call(__context, __obj, *args, **kwargs))

        def getattr(self, obj, attribute):
            _check_clock()
            if isinstance(obj, str) and attribute in ("format", "format_map"):
                _check_format(obj)  # jinja hands back a wrapper, so `call` cannot see whose format it is
            return super().getattr(obj, attribute)

        def _parse(self, source, name, filename):
            return Bound().visit(super()._parse(source, name, filename))

    return BoundedSandbox


@lru_cache(maxsize=16)
def _compile_custom(source: str):
    env = _sandbox_class()(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    for name in ("lipsum", "cycler", "joiner"):  # no chat template needs them: less to attack
        env.globals.pop(name, None)
    env.filters = {name: _sized_filter(name, function) for name, function in env.filters.items()}
    env.filters["_studio_bounded"] = _bounded_iter
    env.filters["_studio_join"] = _bounded_join
    return env.from_string(source)


def render_custom(source: str, limits: RenderLimits | None = None, **variables: Any) -> str:
    """Render a custom template in the sandbox within limits (default: the settings');
    raises TemplateLimit when it runs too long or writes too much."""
    limits = limits or render_limits()
    template = _compile_custom(source)
    token = _RENDER.set((time.monotonic() + limits.seconds, limits))
    try:
        pieces, size = [], 0
        for piece in template.generate(**variables):  # loops and calls read the clock themselves
            size += len(piece)
            if size > limits.max_chars:
                raise _too_long(size)
            pieces.append(piece)
        return "".join(pieces)
    finally:
        _RENDER.reset(token)


def check_custom_template(source: str) -> str | None:
    """What is wrong with a custom template's syntax, or None."""
    from jinja2 import TemplateSyntaxError

    try:
        _compile_custom(source)
    except TemplateSyntaxError as exc:
        return f"line {exc.lineno}: {exc.message}"
    return None


def _jinja_render(messages: list[dict], template: TemplateSection, tokenizer, add_generation_prompt: bool) -> str:
    plain = [{"role": m["role"], "content": _plain_user(m) if m["role"] == "user" else m["content"]} for m in messages]
    try:
        if template.name == "model":
            if tokenizer is None or not getattr(tokenizer, "chat_template", None):
                raise TemplateError("the model's tokenizer has no chat template; choose another template")
            return tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=add_generation_prompt)
        return render_custom(
            template.custom_template,
            messages=plain,
            add_generation_prompt=add_generation_prompt,
            bos_token=getattr(tokenizer, "bos_token", None) or "",
            eos_token=getattr(tokenizer, "eos_token", None) or "",
        )
    except TemplateError:
        raise
    except RecursionError:
        raise TemplateError(f"the {template.name} template calls itself too deeply (a macro without an end)") from None
    except MemoryError:
        raise TemplateError(f"the {template.name} template needs more memory than the machine has") from None
    except Exception as exc:  # a user's template can fail in many ways: say which
        raise TemplateError(f"the {template.name} template failed to render: {type(exc).__name__}: {exc}") from None


def _jinja_segments(messages: list[dict], template: TemplateSection, tokenizer, variant: int) -> list[Segment]:
    system, turns = _system_text(messages, template, variant)
    messages = ([{"role": "system", "content": system}] if system else []) + turns
    eos = getattr(tokenizer, "eos_token", None) or ""
    segments, done, carry = [], "", ""
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _jinja_render(messages[:index], template, tokenizer, add_generation_prompt=True)
        full = _jinja_render(messages[: index + 1], template, tokenizer, add_generation_prompt=False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise TemplateError(
                f"the {template.name} template renders turn {index} in a way that does not extend the turns "
                "before it, so trained tokens cannot be told apart; choose another template"
            )
        reply = full[len(prompt) :]
        if eos and eos in reply:  # the reply ends at EOS; what follows is the next prompt
            cut = reply.index(eos) + len(eos)
            reply, after = reply[:cut], reply[cut:]
        else:
            after = ""
        segments += [Segment(carry + prompt[len(done) :], False), Segment(reply, True)]
        done, carry = full, after
    if messages and messages[-1]["role"] != "assistant":
        prompt = _jinja_render(messages, template, tokenizer, add_generation_prompt=True)
        segments.append(Segment(carry + prompt[len(done) :], False))
    return segments


def render_prompt(row: Mapping[str, Any], template: TemplateSection = DEFAULT_TEMPLATE, tokenizer=None) -> str:
    """The prompt text for a row: everything before the (last) response."""
    return "".join(s.text for s in render_segments(row, template, tokenizer, generation_prompt=True))


def finish_reply(text: str, template: TemplateSection = DEFAULT_TEMPLATE) -> str:
    """A generated reply without the template's end marker (for tokenizers where the
    marker is plain text, it is decoded along with the reply)."""
    fmt = CHAT_FORMATS.get(template.name)
    end = fmt.reply_end.strip() if fmt else ""
    text = text.strip()
    if end and end in text:
        text = text[: text.index(end)]
    return text.strip()


# --- tokens and labels ----------------------------------------------------------------


def prefix_ids(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts before text (e.g. BOS), if any."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    return [bos] if ids and ids[0] == bos else []


def _start_ids(tokenizer, template: TemplateSection) -> list[int]:
    # Jinja templates write their own BOS text; the built-in ones get the tokenizer's.
    return prefix_ids(tokenizer) if template.name in ("alpaca", *CHAT_FORMATS) else []


def encode_prompt(tokenizer, row: Mapping[str, Any], template: TemplateSection = DEFAULT_TEMPLATE) -> list[int]:
    """Token ids of the prompt alone: what generation starts from."""
    segments = render_segments(row, template, tokenizer, generation_prompt=True)
    ids = _start_ids(tokenizer, template)
    for piece in tokenizer([s.text for s in segments], add_special_tokens=False)["input_ids"] if segments else []:
        ids += piece
    return ids


def encode_example(
    tokenizer, row: Mapping[str, Any], max_length: int, template: TemplateSection = DEFAULT_TEMPLATE
) -> Encoded | None:
    """Token ids and labels for one row; see encode_rows."""
    return encode_rows(tokenizer, [row], max_length, template)[0]


def encode_rows(
    tokenizer, rows: Sequence[Mapping[str, Any]], max_length: int, template: TemplateSection = DEFAULT_TEMPLATE
) -> list[Encoded | None]:
    """Token ids and labels for each row, tokenized in one batch.

    Loss only on assistant replies and their EOS (every reply of a multi-turn row), or on
    everything with template.train_on_prompt. A row is cut at max_length; it is None when
    the cut leaves no reply token to train on. Rows with a `text` field (general text
    mixed in against forgetting) are trained on whole.
    """
    start = _start_ids(tokenizer, template)
    eos = tokenizer.eos_token_id
    rendered = [_row_segments(row, template, tokenizer) for row in rows]
    texts = [s.text for segments in rendered for s in segments]
    pieces = iter(tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else [])
    out: list[Encoded | None] = []
    for segments in rendered:
        ids, trained = list(start), [False] * len(start)
        for segment in segments:
            piece = list(next(pieces))
            if segment.trained and eos is not None and (not piece or piece[-1] != eos):
                piece.append(eos)
            ids += piece
            trained += [segment.trained] * len(piece)
        out.append(_cut(ids, trained, max_length, template.train_on_prompt))
    return out


def token_counts(
    tokenizer, rows: Sequence[Mapping[str, Any]], template: TemplateSection = DEFAULT_TEMPLATE
) -> list[tuple[int, int, int]]:
    """Per row, what encode_rows gives without a cut, as counts only: (tokens, trained
    tokens, position of the first trained token; = tokens when none is trained).

    For the quality report of 50k-row datasets: no id or label lists are built, and a fast
    tokenizer skips character offsets (half the tokenization time of a large report)."""
    start = len(_start_ids(tokenizer, template))
    rendered = [_row_segments(row, template, tokenizer) for row in rows]
    pieces = iter(_piece_lengths(tokenizer, [s.text for segments in rendered for s in segments]))
    eos = tokenizer.eos_token_id
    out = []
    for segments in rendered:
        length, trained, first = start, 0, None
        for segment in segments:
            n, ends_with_eos = next(pieces)
            if segment.trained:
                n += 1 if eos is not None and not ends_with_eos else 0
                first = length if first is None and n else first
                trained += n
            length += n
        if first is None:
            out.append((length, 0, length))
        else:
            out.append((length, length if template.train_on_prompt else trained, 0 if template.train_on_prompt else first))
    return out


def _piece_lengths(tokenizer, texts: list[str]) -> list[tuple[int, bool]]:
    """(token count, ends with EOS) of each text, tokenized as `tokenizer(texts,
    add_special_tokens=False)` does."""
    eos, eos_text = tokenizer.eos_token_id, getattr(tokenizer, "eos_token", None) or ""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    plain = (  # the Rust tokenizer as transformers would call it: no cut, padding or split specials
        backend is not None
        and hasattr(backend, "encode_batch_fast")
        and backend.truncation is None
        and backend.padding is None
        and backend.encode_special_tokens == bool(getattr(tokenizer, "split_special_tokens", False))
    )
    if not plain:
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        return [(len(p), bool(p) and p[-1] == eos) for p in ids]
    encodings = backend.encode_batch_fast(texts, add_special_tokens=False) if texts else []
    # A piece can only end with EOS where its text holds the EOS text: read ids just there.
    return [
        (len(enc), bool(eos_text) and eos_text in text and enc.ids[-1:] == [eos])
        for text, enc in zip(texts, encodings)
    ]


def _row_segments(row: Mapping[str, Any], template: TemplateSection, tokenizer) -> list[Segment]:
    if "text" in row and "messages" not in row and "output" not in row:
        return [Segment(str(row["text"]), True)]
    return render_segments(row, template, tokenizer, variant=pick_variant(row, template))


def _cut(ids: list[int], trained: list[bool], max_length: int, train_on_prompt: bool) -> Encoded | None:
    if True not in trained[:max_length]:
        return None
    kept = ids[:max_length]
    labels = [i if (t or train_on_prompt) else IGNORE_INDEX for i, t in zip(kept, trained)]
    return Encoded(kept, labels, len(ids) > max_length, len(ids))


# --- general text against forgetting ---------------------------------------------------


def mix_general_text(rows: list[dict], share: float, seed: int) -> list[dict]:
    """Training rows with general text mixed in: `share` of the result is plain text
    rows ({"text": ...}, trained whole), shuffled in with a seed.

    The general text is the studio's built-in corpus: the demo base model's own
    pre-training task families, so for the demo this is replay of what the base knew.
    For other base models it is a small, generic safeguard, not a real pre-training mix.
    """
    if share <= 0 or not rows:
        return rows
    from studio.core.demo import PRETRAIN_TASKS, generate_rows

    count = int(round(len(rows) * share / (1 - share)))
    general = [{"text": render_prompt(r) + r["output"]} for r in generate_rows(PRETRAIN_TASKS, count, seed)]
    mixed = rows + general
    random.Random(seed).shuffle(mixed)
    return mixed
