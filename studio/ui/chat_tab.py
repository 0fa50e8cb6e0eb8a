"""Chat tab: the base model and up to four checkpoints answer the same conversation side by
side, streamed in parallel, with one set of sampling settings. Each column keeps its own
history of replies (its chatbot's value), so multi-turn stays per model.

Handlers call studio.services.chat, which sends each column's request to the model host
at once (the host batches them); nothing here holds state between calls.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import gradio as gr

from studio.services import chat
from studio.services.chat import ChatError, Sampling
from studio.services.context import StudioContext
from studio.ui import location
from studio.ui.forms import bind
from studio.ui.text import notice, t

TAB_ID = "chat"
COLUMNS = chat.MAX_COLUMNS
REDRAW_SECONDS = 0.1  # how often streaming columns are redrawn


@dataclass(frozen=True)
class ChatTab:
    models: gr.Dropdown


@dataclass
class Column:
    """One model's reply while it streams (written by its thread, read by the handler)."""

    model: str
    text: str = ""
    done: bool = False
    error: Optional[str] = None
    ttft_ms: Optional[float] = None
    tokens_per_second: Optional[float] = None


# --- views ----------------------------------------------------------------------------


def model_choices(ctx: StudioContext) -> list[tuple[str, str]]:
    return [(entry.label, entry.id) for entry in chat.list_models(ctx)]


def column_figures(column: Column) -> str:
    if column.error:
        return ""
    if column.ttft_ms is None:
        return t("chat.waiting")
    if not column.done:
        return t("chat.streaming", ttft=f"{column.ttft_ms:.0f}")
    speed = f"{column.tokens_per_second:.1f}" if column.tokens_per_second else "-"
    return t("chat.figures", ttft=f"{column.ttft_ms:.0f}", speed=speed)


def stats_text(ctx: StudioContext) -> str:
    figures = chat.stats(ctx)
    if not figures["requests"]:
        return t("chat.stats_none")
    fmt = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
    return t("chat.stats", requests=figures["requests"], p50=fmt(figures["latency_ms_p50"]),
             p95=fmt(figures["latency_ms_p95"]), ttft50=fmt(figures["ttft_ms_p50"]), ttft95=fmt(figures["ttft_ms_p95"]),
             speed="-" if figures["tokens_per_second_p50"] is None else f"{figures['tokens_per_second_p50']:.1f}",
             hits=figures["cache_hits"], filtered=figures["filtered"])


# --- handlers -------------------------------------------------------------------------


def refresh_models(ctx: StudioContext, chosen: list[str] | None):
    choices = model_choices(ctx)
    ids = {value for _, value in choices}
    return gr.Dropdown(choices=choices, value=[m for m in chosen or [] if m in ids])


def open_job(ctx: StudioContext, job_id: int | None):
    """From the Jobs tab: preselect the job's base and its result (the browser switches to
    Chat)."""
    if job_id is None:
        return gr.skip()
    ids = chat.job_model_ids(ctx, int(job_id))
    return gr.Dropdown(choices=model_choices(ctx), value=ids)


def show_columns(models: list[str] | None):
    models = list(models or [])[:COLUMNS]
    titles = [gr.Markdown(f"**{models[i]}**" if i < len(models) else "") for i in range(COLUMNS)]
    boxes = [gr.Column(visible=i < len(models)) for i in range(COLUMNS)]
    return [*boxes, *titles]


def _sampling(temperature: float, top_p: float, max_tokens: float, seed: Optional[float], greedy: bool) -> Sampling:
    return Sampling(temperature=0.0 if greedy else float(temperature), top_p=float(top_p),
                    max_tokens=int(max_tokens), seed=None if seed is None or seed < 0 else int(seed))


def _run(ctx: StudioContext, column: Column, history: list[dict], sampling: Sampling, user: str,
         base_template: Optional[dict]) -> None:
    try:
        stream = chat.open_stream(ctx, column.model, sampling, messages=history, endpoint="studio", user=user,
                                  base_template=base_template)
        for event in stream:
            if event["type"] == "delta" and event["index"] == 0:
                column.text += event["text"]
                column.ttft_ms = stream.ttft_ms
        column.text = stream.choices[0].text
        column.ttft_ms = stream.ttft_ms
        column.tokens_per_second = chat.reply_summary(stream)["tokens_per_second"]
    except ChatError as exc:
        column.error = exc.message
    finally:
        column.done = True


def _plain(history: list[dict] | None) -> list[dict]:
    """Chatbot messages as role/content pairs (the chatbot adds fields of its own)."""
    out = []
    for message in history or []:
        content = message.get("content")
        if isinstance(content, list):  # Gradio 6 may hand back [{"type": "text", "text": ...}]
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        out.append({"role": message.get("role"), "content": str(content or "")})
    return out


def send(ctx: StudioContext, models: list[str] | None, prompt: str, temperature: float, top_p: float,
         max_tokens: float, seed: Optional[float], greedy: bool, *histories, request: gr.Request = None
         ) -> Iterator[list[Any]]:
    """Ask every chosen model the prompt, each with its own history; stream all columns."""
    models = list(models or [])[:COLUMNS]
    prompt = (prompt or "").strip()
    idle = [gr.update()] * (2 * COLUMNS)
    if not models or not prompt:
        yield [notice("error", t("chat.pick_models" if not models else "chat.empty_prompt")), gr.update(), *idle]
        return
    sampling = _sampling(temperature, top_p, max_tokens, seed, greedy)
    user = getattr(request, "username", None) or ""
    base_template = chat.template_of(ctx, models)
    asked = [_plain(histories[i]) + [{"role": "user", "content": prompt}] for i in range(len(models))]
    columns = [Column(m) for m in models]
    threads = [threading.Thread(target=_run, args=(ctx, c, h, sampling, user, base_template), daemon=True)
               for c, h in zip(columns, asked)]
    for thread in threads:
        thread.start()
    while True:
        finished = all(c.done for c in columns)
        yield ["", "", *_views(columns, asked, histories)]
        if finished:
            break
        time.sleep(REDRAW_SECONDS)
    errors = [f"{c.model}: {c.error}" for c in columns if c.error]
    message = notice("error", t("chat.failed"), errors) if errors else ""
    yield [message, "", *_views(columns, asked, histories)]


def _views(columns: list[Column], asked: list[list[dict]], histories) -> list[Any]:
    boxes, figures = [], []
    for i in range(COLUMNS):
        if i >= len(columns):
            boxes.append(gr.update())
            figures.append(gr.update())
            continue
        column = columns[i]
        reply = column.text if not column.error else t("chat.error_reply", error=column.error)
        boxes.append(asked[i] + [{"role": "assistant", "content": reply}])
        figures.append(column_figures(column))
    return [*boxes, *figures]


def regenerate(ctx: StudioContext, models, temperature, top_p, max_tokens, seed, greedy, *histories,
               request: gr.Request = None):
    """Ask the last question again: each column's last exchange is dropped first."""
    first = _plain(histories[0]) if histories else []
    users = [i for i, m in enumerate(first) if m["role"] == "user"]
    if not users:
        yield [notice("error", t("chat.nothing_to_redo")), gr.update(), *[gr.update()] * (2 * COLUMNS)]
        return
    prompt = first[users[-1]]["content"]
    trimmed = []
    for history in histories:
        plain = _plain(history)
        last = max((i for i, m in enumerate(plain) if m["role"] == "user"), default=len(plain))
        trimmed.append(plain[:last])
    yield from send(ctx, models, prompt, temperature, top_p, max_tokens, seed, greedy, *trimmed, request=request)


def clear():
    return ["", *[[] for _ in range(COLUMNS)], *["" for _ in range(COLUMNS)]]


# --- layout ---------------------------------------------------------------------------


def build(ctx: StudioContext, page: gr.Blocks, tab: gr.Tab, job_selected: gr.State, job_picker: gr.Dropdown,
          chat_button: gr.Button) -> ChatTab:
    """Render the tab; `chat_button` on the Jobs tab opens it with `job_selected`'s job
    (`job_picker` holds the same job in the browser)."""
    gr.Markdown(t("chat.title"))
    with gr.Row():
        models = gr.Dropdown(label=t("chat.models"), info=t("chat.models_info"), multiselect=True,
                             max_choices=COLUMNS, scale=5, elem_id="chat-models")
        reload_btn = gr.Button(t("chat.reload"), size="md", scale=1, elem_id="chat-reload")
    with gr.Row():
        fields = Sampling.model_fields
        temperature = gr.Slider(0.0, 2.0, value=0.7, step=0.05, label=t("chat.temperature"),
                                info=fields["temperature"].description, elem_id="chat-temperature")
        top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label=t("chat.top_p"), info=fields["top_p"].description,
                          elem_id="chat-top-p")
        max_tokens = gr.Slider(1, 1024, value=128, step=1, label=t("chat.max_tokens"),
                               info=fields["max_tokens"].description, elem_id="chat-max-tokens")
        seed = gr.Number(-1, label=t("chat.seed"), info=t("chat.seed_info"), precision=0, minimum=-1,
                         elem_id="chat-seed")
        greedy = gr.Checkbox(label=t("chat.greedy"), info=t("chat.greedy_info"), value=True, elem_id="chat-greedy")
    boxes, titles, chatbots, figures = [], [], [], []
    with gr.Row(equal_height=True):
        for i in range(COLUMNS):
            with gr.Column(visible=False, min_width=220, elem_id=f"chat-column-{i}") as box:
                titles.append(gr.Markdown(elem_id=f"chat-title-{i}"))
                chatbots.append(gr.Chatbot(height=380, buttons=["copy"], elem_id=f"chat-box-{i}",
                                           feedback_options=None, show_label=False))
                figures.append(gr.Markdown(elem_id=f"chat-figures-{i}"))
            boxes.append(box)
    prompt = gr.Textbox(label=t("chat.prompt"), placeholder=t("chat.prompt_hint"), lines=2, elem_id="chat-prompt")
    with gr.Row():
        send_btn = gr.Button(t("chat.send"), variant="primary", elem_id="chat-send")
        redo_btn = gr.Button(t("chat.regenerate"), elem_id="chat-regenerate")
        clear_btn = gr.Button(t("chat.clear"), elem_id="chat-clear")
    message = gr.HTML(elem_id="chat-message")
    stats = gr.Markdown(elem_id="chat-stats")

    sampling_in = [temperature, top_p, max_tokens, seed, greedy]
    outputs = [message, prompt, *chatbots, *figures]
    page.load(bind(refresh_models, ctx), models, models, show_progress="hidden")
    tab.select(bind(refresh_models, ctx), models, models, show_progress="hidden")
    reload_btn.click(bind(refresh_models, ctx), models, models, show_progress="hidden")
    models.change(show_columns, models, [*boxes, *titles], show_progress="hidden")
    chat_button.click(bind(open_job, ctx), job_selected, models, show_progress="hidden")
    chat_button.click(None, job_picker, None, js=location.open_tab_js(TAB_ID, when_input=True))
    asking = []
    for trigger in (send_btn.click, prompt.submit):
        asking.append(trigger(bind(send, ctx), [models, prompt, *sampling_in, *chatbots], outputs,
                              show_progress="hidden", concurrency_limit=None))
    asking.append(redo_btn.click(bind(regenerate, ctx), [models, *sampling_in, *chatbots], outputs,
                                 show_progress="hidden", concurrency_limit=None))
    for event in asking:
        event.then(bind(stats_text, ctx), None, stats, show_progress="hidden")
    # Clear also stops replies still streaming (the columns would refill otherwise).
    clear_btn.click(clear, None, [message, *chatbots, *figures], show_progress="hidden", cancels=asking)
    tab.select(bind(stats_text, ctx), None, stats, show_progress="hidden")
    return ChatTab(models=models)
