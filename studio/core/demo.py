"""The offline demo: a tiny pretrained base model and a generated instruction dataset.

Everything here is made by the project itself from the word lists and rules below, so
the studio can show a real fine-tune (loss falls, held-out exact match rises) with no
GPU, no internet and no copied text.

The base model is pre-trained on one set of task families (``PRETRAIN_FAMILIES``), in
the Alpaca format, so it already reads instructions, copies words, counts and stops
with EOS. The demo dataset uses different families (``DEMO_FAMILIES``): a fine-tune has
something new to learn, and what it learns shows in the held-out exact match.

No gradio, no database: the Celery worker imports this module.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from studio.core.templates import IGNORE_INDEX, encode_example, encode_prompt, render_prompt

DEMO_MODEL = "demo"  # the base_model name that selects the shipped demo base

ASSETS_DIR = Path(__file__).resolve().parent / "demo_assets"

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# Shape of the shipped base: ~1M parameters, a few MB of fp32 weights, small enough to
# pre-train in minutes and to LoRA fine-tune in about two minutes on two CPU cores.
BASE_SHAPE = {"hidden": 128, "layers": 4, "heads": 4, "intermediate": 384, "max_positions": 256}
BASE_VOCAB = 1024
BASE_STEPS = 3500
MAX_LENGTH = 128  # longest generated row is well under this

# --- word lists (written for this project) ------------------------------------------

ANIMALS = (
    "cat dog cow pig hen fox owl bee ant bat bear duck frog goat lion mole seal swan wolf "
    "deer crab fish mouse horse sheep tiger zebra camel eagle otter panda snake whale "
    "rabbit monkey turtle spider donkey parrot"
).split()
COLOURS = "red blue green pink gray black white brown gold purple orange yellow silver".split()
FOODS = (
    "rice bread cake pie soup milk tea corn bean egg plum pear apple grape lemon melon "
    "mango honey cheese butter pasta salad"
).split()
THINGS = (
    "cup pen box hat key map bag bed car bus boat ship door lamp desk book sock shoe ring "
    "bell kite drum fork spoon chair table clock phone brush glass"
).split()
NATURE = (
    "sun moon star rain snow wind sea sky tree leaf rock hill lake river cloud storm "
    "stone sand field"
).split()
WORDS = ANIMALS + COLOURS + FOODS + THINGS + NATURE
CATEGORIES = {"an animal": ANIMALS, "a colour": COLOURS, "a food": FOODS}

Row = dict  # {"instruction", "input", "output"} (+ "category" once generated)
TaskFn = Callable[[random.Random], Row]


def _words(rng: random.Random, low: int, high: int) -> list[str]:
    return rng.sample(WORDS, rng.randint(low, high))


def _row(instruction: str, context: str, output: str) -> Row:
    return {"instruction": instruction, "input": context, "output": output}


def _number(rng: random.Random, top: int = 99) -> int:
    # Half the numbers have one digit, so short sums are common enough to learn first.
    return rng.randint(0, 9) if rng.random() < 0.3 else rng.randint(0, top)


# --- pre-training task families (the base model learns these) -----------------------


def task_addition(rng: random.Random) -> Row:
    a, b = _number(rng), _number(rng)
    if rng.random() < 0.5:
        return _row(f"What is {a} + {b}?", "", str(a + b))
    return _row("Add the two numbers.", f"{a} and {b}", str(a + b))


def task_count_words(rng: random.Random) -> Row:
    words = _words(rng, 1, 8)
    return _row("How many words are in the input?", " ".join(words), str(len(words)))


def task_reverse_words(rng: random.Random) -> Row:
    words = _words(rng, 2, 6)
    return _row("Reverse the order of the words.", " ".join(words), " ".join(words[::-1]))


def task_uppercase(rng: random.Random) -> Row:
    text = " ".join(_words(rng, 1, 4))
    return _row("Rewrite the text in capital letters.", text, text.upper())


def task_repeat(rng: random.Random) -> Row:
    text = " ".join(_words(rng, 1, 6))
    return _row("Repeat the input exactly.", text, text)


def task_first_word(rng: random.Random) -> Row:
    words = _words(rng, 2, 6)
    return _row("What is the first word of the input?", " ".join(words), words[0])


def task_spell(rng: random.Random) -> Row:
    word = rng.choice(WORDS)
    return _row("Spell the word letter by letter.", word, " ".join(word))


def task_next_number(rng: random.Random) -> Row:
    n = _number(rng, 198)
    return _row(f"What number comes after {n}?", "", str(n + 1))


def task_find_category(rng: random.Random) -> Row:
    name, members = rng.choice(sorted(CATEGORIES.items()))
    others = [w for w in WORDS if w not in members]
    words = rng.sample(others, rng.randint(1, 4)) + [rng.choice(members)]
    rng.shuffle(words)
    answer = next(w for w in words if w in members)
    return _row(f"Which word is {name}?", " ".join(words), answer)


PRETRAIN_TASKS: dict[str, TaskFn] = {
    "addition": task_addition,
    "count_words": task_count_words,
    "reverse_words": task_reverse_words,
    "uppercase": task_uppercase,
    "repeat": task_repeat,
    "first_word": task_first_word,
    "spell": task_spell,
    "next_number": task_next_number,
    "find_category": task_find_category,
}

# --- demo task families (new to the base; the demo fine-tune teaches them) -----------


def task_last_word(rng: random.Random) -> Row:
    words = _words(rng, 2, 6)
    return _row("Which word comes last in the input?", " ".join(words), words[-1])


def task_previous_number(rng: random.Random) -> Row:
    n = _number(rng, 198) + 1
    return _row(f"Which number comes just before {n}?", "", str(n - 1))


def task_subtraction(rng: random.Random) -> Row:
    a = _number(rng)
    b = rng.randint(0, min(a, 9))
    return _row(f"Subtract {b} from {a}.", "", str(a - b))


def task_initials(rng: random.Random) -> Row:
    words = _words(rng, 2, 5)
    return _row(
        "Give the first letter of each word, separated by spaces.",
        " ".join(words),
        " ".join(w[0] for w in words),
    )


def task_hyphenate(rng: random.Random) -> Row:
    words = _words(rng, 2, 4)
    return _row("Join the words with hyphens.", " ".join(words), "-".join(words))


DEMO_TASKS: dict[str, TaskFn] = {
    "last_word": task_last_word,
    "previous_number": task_previous_number,
    "subtraction": task_subtraction,
    "initials": task_initials,
    "hyphenate": task_hyphenate,
}

PRETRAIN_FAMILIES = tuple(PRETRAIN_TASKS)

# Demo size: with 10% held out, the demo preset (studio.core.config.PRESETS) runs ~1440
# LoRA steps and lifts held-out exact match from 0 to ~0.39 (bench/demo_job.py).
DEMO_ROWS = 3200
DEMO_FAMILIES = tuple(DEMO_TASKS)


def generate_rows(tasks: Mapping[str, TaskFn], n: int, seed: int) -> list[Row]:
    """n rows cycling through the task families in turn, so categories stay balanced."""
    rng = random.Random(seed)
    names = list(tasks)
    rows = []
    for i in range(n):
        name = names[i % len(names)]
        rows.append({**tasks[name](rng), "category": name})
    rng.shuffle(rows)
    return rows


def demo_dataset(n: int = DEMO_ROWS, seed: int = 0) -> list[Row]:
    """The demo instruction dataset: n Alpaca rows of the demo families, deterministic."""
    return generate_rows(DEMO_TASKS, n, seed)


def write_demo_dataset(path: str | Path, n: int = DEMO_ROWS, seed: int = 0) -> Path:
    """Write demo_dataset(n, seed) as JSONL (one Alpaca row per line); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in demo_dataset(n, seed):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


# --- tokenizer and model --------------------------------------------------------------


def make_tokenizer(corpus: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on corpus.

    Byte-level, so any text (any script, emoji) encodes without unknown tokens; digits
    are always single tokens so arithmetic stays learnable; BOS is prepended to encoded
    text, EOS never is (the training code appends it to responses).
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = BASE_SHAPE["max_positions"]
    return tokenizer


def make_llama(
    tokenizer,
    hidden: int,
    layers: int,
    heads: int,
    intermediate: int,
    max_positions: int,
    seed: int,
) -> LlamaForCausalLM:
    """A randomly initialised Llama sized for tokenizer, with tied input/output embeddings."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=64,
    )
    return model


def tokenizer_corpus(seed: int) -> Iterator[str]:
    """Text the demo tokenizer is trained on: the template, the word lists, sample rows."""
    for word in WORDS:
        for form in (word, word.upper(), word.capitalize()):
            yield f"{form} {form}\n{form}"
    # Demo rows are included only so their instruction words get tokens of their own;
    # the base model is never trained on them.
    rows = generate_rows(PRETRAIN_TASKS, 3000, seed) + generate_rows(DEMO_TASKS, 500, seed + 1)
    for row in rows:
        yield render_prompt(row) + row["output"]


# --- pre-training ---------------------------------------------------------------------


def pad_batch(examples: Sequence, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad encoded examples into input_ids and labels tensors."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[i, : len(e.labels)] = torch.tensor(e.labels)
    return ids, labels


def response_loss(model: LlamaForCausalLM, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token loss on labelled positions only.

    Projects to the vocabulary only where a label exists (the responses), which skips
    most of the LM-head work; right padding needs no attention mask under causal
    attention, since real tokens never see the pads after them.
    """
    hidden = model.model(input_ids=ids).last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    logits = model.lm_head(hidden[keep])
    return F.cross_entropy(logits, targets[keep])


def pretrain(
    model: LlamaForCausalLM,
    tokenizer,
    steps: int,
    *,
    seed: int = 0,
    batch_size: int = 32,
    lr: float = 3e-3,
    progress: Callable[[float, str], None] | None = None,
) -> float:
    """Train model on an endless stream of fresh pre-training rows; returns the last loss.

    Rows are generated on the fly, so the model never sees the same row twice and
    learns the rules, not the examples. Warmup then cosine decay to a tenth of lr.
    """
    rng = random.Random(seed + 1000)
    names = list(PRETRAIN_TASKS)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, min(100, steps // 10))

    def scale(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        done = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * done))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, scale)
    model.train()
    smoothed = float("nan")
    report_every = max(1, steps // 50)
    for step in range(steps):
        batch = []
        while len(batch) < batch_size:
            row = PRETRAIN_TASKS[rng.choice(names)](rng)
            encoded = encode_example(tokenizer, row, MAX_LENGTH)
            if encoded is not None:
                batch.append(encoded)
        ids, labels = pad_batch(batch, tokenizer.pad_token_id)
        loss = response_loss(model, ids, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        value = loss.item()
        smoothed = value if math.isnan(smoothed) else 0.95 * smoothed + 0.05 * value
        if progress and ((step + 1) % report_every == 0 or step + 1 == steps):
            progress((step + 1) / steps, f"pre-training step {step + 1}/{steps}, loss {smoothed:.3f}")
    model.eval()
    return smoothed


@torch.no_grad()
def generate_responses(
    model, tokenizer, rows: Sequence[Mapping], max_new_tokens: int = 32, batch_size: int = 64
) -> list[str]:
    """Greedy responses to Alpaca rows, prompted exactly as in training, stopping at EOS."""
    model.eval()
    answers: list[str] = []
    pad_id = tokenizer.pad_token_id
    for start in range(0, len(rows), batch_size):
        prompts = [encode_prompt(tokenizer, row) for row in rows[start : start + batch_size]]
        width = max(len(p) for p in prompts)
        # Left padding, so every prompt ends where generation begins.
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=pad_id,
        )
        answers += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return answers


def build_demo_base(
    out_dir: str | Path,
    *,
    steps: int | None = None,
    progress: Callable[[float, str], None] | None = None,
    seed: int = 0,
) -> Path:
    """Regenerate the demo base in out_dir: tokenizer, Llama, pre-training, save.

    Deterministic for a given seed and step count (CPU). steps defaults to the count
    the shipped base was built with. progress(fraction, message) reports as it goes.
    """
    torch.set_num_threads(min(2, torch.get_num_threads()))
    report = progress or (lambda fraction, message: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = BASE_STEPS if steps is None else steps
    report(0.0, "training the tokenizer")
    tokenizer = make_tokenizer(tokenizer_corpus(seed), BASE_VOCAB)
    model = make_llama(tokenizer, **BASE_SHAPE, seed=seed)
    report(0.02, f"pre-training a {model.num_parameters() / 1e6:.2f}M-parameter Llama")
    torch.manual_seed(seed)
    pretrain(
        model,
        tokenizer,
        steps,
        seed=seed,
        progress=lambda fraction, message: report(0.02 + 0.96 * fraction, message),
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    report(1.0, f"saved to {out}")
    return out


def demo_base_dir() -> Path:
    """The shipped, pre-trained demo base folder (loadable with from_pretrained)."""
    return ASSETS_DIR / "base"


# --- command line ------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m studio.core.demo build-base OUT [--steps N]` or `write-dataset OUT.jsonl`."""
    parser = argparse.ArgumentParser(prog="python -m studio.core.demo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build-base", help="pre-train the demo base model into OUT_DIR")
    build.add_argument("out_dir", type=Path)
    build.add_argument("--steps", type=int, default=None)
    build.add_argument("--seed", type=int, default=0)
    write = sub.add_parser("write-dataset", help="write the demo dataset as JSONL")
    write.add_argument("out", type=Path)
    write.add_argument("--rows", type=int, default=DEMO_ROWS)
    write.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.command == "build-base":
        started = time.monotonic()

        def show(fraction: float, message: str) -> None:
            print(f"[{time.monotonic() - started:6.0f}s {fraction:4.0%}] {message}", flush=True)

        build_demo_base(args.out_dir, steps=args.steps, progress=show, seed=args.seed)
    else:
        path = write_demo_dataset(args.out, n=args.rows, seed=args.seed)
        print(f"wrote {args.rows} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
