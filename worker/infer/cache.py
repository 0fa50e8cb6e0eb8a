"""A response cache for deterministic requests: greedy (temperature 0) or seeded sampling
give the same answer for the same model, prompt tokens and parameters, so the second
asker gets the first answer without a forward pass."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class CachedAnswer:
    choices: tuple[tuple[str, str, int], ...]  # (text, finish_reason, completion tokens) per choice
    prompt_tokens: int


def cache_key(model_key: str, prompt_ids: list[int], params: dict[str, Any]) -> Optional[str]:
    """The key of a request, or None when it is not deterministic (sampling without a seed)."""
    if params.get("temperature", 0) > 0 and params.get("seed") is None:
        return None
    blob = json.dumps({"model": model_key, "prompt": prompt_ids, "params": params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """Least recently used answers, bounded by count; hits and misses counted."""

    def __init__(self, max_entries: int = 2048):
        self.max_entries = max_entries
        self._items: OrderedDict[str, CachedAnswer] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Optional[str], count_miss: bool = True) -> Optional[CachedAnswer]:
        if key is None or self.max_entries <= 0:
            return None
        with self._lock:
            answer = self._items.get(key)
            if answer is None:
                self.misses += count_miss
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return answer

    def put(self, key: Optional[str], answer: CachedAnswer) -> None:
        if key is None or self.max_entries <= 0:
            return
        with self._lock:
            self._items[key] = answer
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self._items), "hits": self.hits, "misses": self.misses}
