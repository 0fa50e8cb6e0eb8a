"""Who meets whom in a rating campaign, on which side, and which item a rater gets next.

Pure functions, seeded, so a campaign's schedule can be rebuilt and tested:
- schedule_pairs: one or more contestant pairs per prompt, cycling through every pair in a
  shuffled order, so any two pairs' counts differ by at most one;
- a_side: a per-item coin (a hash of the campaign's seed and the item), so left and right
  carry no information about the model;
- next_item: the rater's next item, preferring the least-rated items and, among those,
  the pairs this rater has seen least (each rater gets a mix).
"""

from __future__ import annotations

import hashlib
import itertools
import random
from dataclasses import dataclass
from typing import Hashable, Iterable, Mapping, Optional, Sequence


@dataclass(frozen=True)
class Pairing:
    prompt_index: int
    first: str  # contestant shown as A when a_side() says so, else B
    second: str


def all_pairs(contestants: Sequence[str]) -> list[tuple[str, str]]:
    return list(itertools.combinations(contestants, 2))


def schedule_pairs(n_prompts: int, contestants: Sequence[str], pairs_per_prompt: int = 1,
                   seed: int = 0) -> list[Pairing]:
    """Contestant pairs for each prompt. Pairs are dealt from a deck holding every pair
    once, reshuffled when it runs out, so every pair meets about equally often; a prompt
    never gets the same pair twice."""
    if len(set(contestants)) != len(contestants) or len(contestants) < 2:
        raise ValueError("contestants must be at least two distinct models")
    pairs = all_pairs(contestants)
    per_prompt = min(pairs_per_prompt, len(pairs))
    rng = random.Random(seed)
    deck: list[tuple[str, str]] = []
    out = []
    for prompt in range(n_prompts):
        chosen: list[tuple[str, str]] = []
        while len(chosen) < per_prompt:
            if not deck:
                deck = pairs[:]
                rng.shuffle(deck)
            # The first pair in the deck this prompt does not have yet.
            pick = next((k for k, p in enumerate(deck) if p not in chosen), None)
            if pick is None:  # the deck's tail repeats this prompt's pairs: open a new deck
                fresh = [p for p in pairs if p not in chosen and p not in deck]
                rng.shuffle(fresh)
                deck.extend(fresh)
                continue
            chosen.append(deck.pop(pick))
        out.extend(Pairing(prompt, first, second) for first, second in chosen)
    return out


def a_side(seed: int | str, item_key: Hashable) -> bool:
    """True when the pairing's `first` contestant is shown as A for this item. A hash, not
    a random stream, so the answer does not depend on the order items are made in."""
    digest = hashlib.sha256(f"{seed}:{item_key}".encode()).digest()
    return digest[0] & 1 == 1


def next_item(pairs: Mapping[int, frozenset], taken: Mapping[int, int], seen_pairs: Mapping[frozenset, int],
              wanted: int, already: Iterable[int] = (), seed: int | str = 0) -> Optional[int]:
    """The item to give a rater next, or None when nothing is left for them. `pairs` maps
    each item to its (unordered) contestant pair; `taken` says how many ratings an item has
    or has been promised (open assignments), none meaning 0.

    Skips items the rater has had and items that already have `wanted` ratings. Prefers
    the item with fewest ratings (so items fill evenly), then the pair this rater has seen
    least (a mix), then a seeded hash (so raters do not all get the same item). Plain ids
    and dict lookups: the queue calls this for every item of the campaign on each request."""
    had = set(already)
    open_items = [i for i in pairs if i not in had and taken.get(i, 0) < wanted]
    if not open_items:
        return None
    # Narrow by the cheap keys first; hash only the items still tied.
    fewest = min(taken.get(i, 0) for i in open_items)
    open_items = [i for i in open_items if taken.get(i, 0) == fewest]
    least_seen = min(seen_pairs.get(pairs[i], 0) for i in open_items)
    open_items = [i for i in open_items if seen_pairs.get(pairs[i], 0) == least_seen]
    return min(open_items, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest())
