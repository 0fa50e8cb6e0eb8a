"""Campaign scheduling: every pair meets about equally often, sides come from an unbiased
seeded coin, and each rater's queue never repeats an item and mixes the pairs."""

from __future__ import annotations

from collections import Counter

import pytest

from studio.core.pairing import a_side, all_pairs, next_item, schedule_pairs


@pytest.mark.parametrize("n_models,n_prompts,per_prompt", [(2, 10, 1), (3, 100, 1), (5, 97, 1), (8, 50, 3), (4, 31, 6)])
def test_every_pair_meets_about_equally_often(n_models, n_prompts, per_prompt):
    models = [f"m{i}" for i in range(n_models)]
    schedule = schedule_pairs(n_prompts, models, per_prompt, seed=3)
    counts = Counter(frozenset((p.first, p.second)) for p in schedule)
    assert len(schedule) == n_prompts * min(per_prompt, len(all_pairs(models)))
    assert set(counts) == {frozenset(p) for p in all_pairs(models)}
    assert max(counts.values()) - min(counts.values()) <= 1
    # A prompt never shows the same pair twice.
    per = Counter((p.prompt_index, frozenset((p.first, p.second))) for p in schedule)
    assert max(per.values()) == 1


def test_schedule_is_seeded():
    models = ["a", "b", "c", "d"]
    assert schedule_pairs(20, models, seed=1) == schedule_pairs(20, models, seed=1)
    assert schedule_pairs(20, models, seed=1) != schedule_pairs(20, models, seed=2)


def test_contestants_must_be_two_distinct():
    with pytest.raises(ValueError):
        schedule_pairs(3, ["a"])
    with pytest.raises(ValueError):
        schedule_pairs(3, ["a", "a"])


@pytest.mark.parametrize("seed", [0, 1, 2, "campaign-7"])
def test_position_is_unbiased_over_400_items(seed):
    schedule = schedule_pairs(400, ["X", "Y"], seed=seed)
    x_is_a = sum((p.first == "X") == a_side(seed, k) for k, p in enumerate(schedule))
    assert 0.43 * 400 <= x_is_a <= 0.57 * 400


def test_coin_is_a_function_of_seed_and_item():
    assert [a_side(5, k) for k in range(50)] == [a_side(5, k) for k in range(50)]
    assert [a_side(5, k) for k in range(50)] != [a_side(6, k) for k in range(50)]


def _items(n_items, pairs):
    """Item id -> its pair."""
    return {i: frozenset(pairs[i % len(pairs)]) for i in range(n_items)}


def test_a_rater_never_gets_an_item_twice_and_each_item_gets_its_ratings():
    pairs = all_pairs(["a", "b", "c"])
    items = _items(12, pairs)
    taken = Counter()
    given = {r: [] for r in ("r1", "r2", "r3", "r4")}
    for _ in range(20):
        for rater in given:
            seen = Counter(items[i] for i in given[rater])
            pick = next_item(items, taken, seen, wanted=3, already=given[rater], seed=rater)
            if pick is not None:
                given[rater].append(pick)
                taken[pick] += 1
    assert all(len(set(g)) == len(g) for g in given.values())
    assert all(taken[i] == 3 for i in items)  # 12 items x 3 ratings, from different raters
    assert sum(len(g) for g in given.values()) == 36


def test_each_rater_gets_a_mix_of_pairs():
    pairs = all_pairs(["a", "b", "c", "d"])  # 6 pairs
    items = _items(60, pairs)
    given = []
    for _ in range(12):
        seen = Counter(items[i] for i in given)
        pick = next_item(items, {}, seen, wanted=1, already=given, seed="solo")
        given.append(pick)
    # The first 12 items cover every pair twice.
    assert Counter(items[i] for i in given) == {frozenset(p): 2 for p in pairs}


def test_nothing_left_is_none():
    items, taken = {0: frozenset("ab"), 1: frozenset("ab")}, {0: 3}
    assert next_item(items, taken, {}, wanted=3, already=[1]) is None
    assert next_item(items, taken, {}, wanted=3, already=[]) == 1
