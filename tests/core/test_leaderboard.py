"""Leaderboard math: Bradley-Terry by maximum likelihood on the Elo-like scale, bootstrap
intervals that cover the truth, interval-aware ranks, counts, win rates, Likert means and
Krippendorff's alpha checked against Krippendorff's own worked example."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import optimize

from studio.core.leaderboard import (
    Score,
    Vote,
    agreement,
    bootstrap_ratings,
    build_leaderboard,
    fit_ratings,
    krippendorff_alpha,
    likert_means,
    ranks,
    reading,
)

LOG10 = math.log(10)


def simulate(true_ratings, n_votes, rng):
    """Battles between random pairs, outcomes drawn from the Bradley-Terry model itself."""
    m = len(true_ratings)
    a = rng.integers(0, m, n_votes)
    b = (a + rng.integers(1, m, n_votes)) % m
    p_a = 1.0 / (1.0 + 10 ** ((np.asarray(true_ratings)[b] - np.asarray(true_ratings)[a]) / 400))
    return a, b, (rng.random(n_votes) < p_a).astype(float)


# --- hand-computed cases -----------------------------------------------------------------


def test_two_models_three_wins_in_four_is_400_log10_3_apart():
    # P(A wins) = 3/4 at the MLE, so 10 ** (d / 400) = 3.
    r = fit_ratings([0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0], 2, prior_sd=None)
    assert r[0] - r[1] == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert r.mean() == pytest.approx(1000)


def test_ties_count_half_and_both_bad_is_a_tie():
    # 2 wins + 2 ties for x = 3 points of 4, the same fit as 3 wins and a loss.
    votes = [Vote(i, "r", "x", "y", w) for i, w in enumerate(["A", "A", "tie", "both_bad"])]
    board = build_leaderboard(votes, rounds=50, prior_sd=None)
    by = {row.model: row for row in board.models}
    assert by["x"].rating - by["y"].rating == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert (by["x"].wins, by["x"].losses, by["x"].ties, by["x"].both_bad, by["x"].n) == (2, 0, 1, 1, 4)
    assert (by["y"].wins, by["y"].losses, by["y"].ties, by["y"].both_bad, by["y"].n) == (0, 2, 1, 1, 4)
    assert board.win_rate["x"]["y"] == pytest.approx(0.75)
    assert board.win_rate["y"]["x"] == pytest.approx(0.25)


def test_side_does_not_matter_only_the_model():
    # The same judgements with the sides swapped give the same ratings.
    left = [Vote(0, "r", "x", "y", "A"), Vote(1, "r", "x", "y", "B"), Vote(2, "r", "y", "x", "B")]
    right = [Vote(0, "r", "y", "x", "B"), Vote(1, "r", "y", "x", "A"), Vote(2, "r", "x", "y", "A")]
    a = {r.model: r.rating for r in build_leaderboard(left, rounds=20).models}
    b = {r.model: r.rating for r in build_leaderboard(right, rounds=20).models}
    assert a == pytest.approx(b)
    assert a["x"] > a["y"]


def test_a_rock_paper_scissors_cycle_is_all_equal():
    r = fit_ratings([0, 1, 2], [1, 2, 0], [1, 1, 1], 3)
    assert r == pytest.approx([1000, 1000, 1000])


def test_mle_matches_a_general_optimiser_on_random_data():
    rng = np.random.default_rng(3)
    true = [1200, 1100, 1000, 950, 800]
    a, b, s = simulate(true, 600, rng)
    ours = fit_ratings(a, b, s, 5, prior_sd=None)

    def nll(theta):  # the Bradley-Terry log-likelihood written out, on the rating scale
        beta = np.concatenate([[0.0], theta]) * LOG10 / 400
        d = beta[a] - beta[b]
        return -np.sum(s * -np.logaddexp(0, -d) + (1 - s) * -np.logaddexp(0, d))

    fit = optimize.minimize(nll, np.zeros(4), method="BFGS", options={"gtol": 1e-10})
    theirs = np.concatenate([[0.0], fit.x])
    theirs = theirs - theirs.mean() + 1000
    assert ours == pytest.approx(theirs, abs=0.05)


def test_a_model_that_never_lost_stays_finite():
    r = fit_ratings([0, 0, 0], [1, 1, 1], [1, 1, 1], 2)
    assert np.isfinite(r).all() and r[0] > r[1]


def test_a_contestant_with_no_votes_yet_is_listed_at_the_base_rating():
    board = build_leaderboard([Vote(0, "r", "x", "y", "A")], models=["x", "y", "z"], rounds=20)
    z = next(row for row in board.models if row.model == "z")
    assert (z.n, z.wins) == (0, 0)
    assert board.win_rate["z"]["x"] is None


def test_an_empty_campaign_has_a_board():
    board = build_leaderboard([], models=["x", "y"], rounds=10)
    assert [r.rating for r in board.models] == [1000, 1000]
    assert board.agreement.alpha is None


def test_rank_counts_models_clearly_above():
    # Intervals: a [1100, 1200], b [1050, 1150] overlaps a, c [900, 1000] below both,
    # d [850, 1060] overlaps b but not a.
    low, high = [1100, 1050, 900, 850], [1200, 1150, 1000, 1060]
    assert ranks(low, high) == [1, 1, 3, 2]


def test_board_is_best_first_with_intervals_around_the_rating():
    rng = np.random.default_rng(0)
    true = [1150, 1050, 950, 850]
    a, b, s = simulate(true, 800, rng)
    names = ["w", "x", "y", "z"]
    winners = ["A" if v else "B" for v in s]
    votes = [Vote(k, k % 5, names[i], names[j], w) for k, (i, j, w) in enumerate(zip(a, b, winners))]
    board = build_leaderboard(votes, rounds=300, seed=1)
    assert [r.model for r in board.models] == names
    assert [r.rank for r in board.models] == sorted(r.rank for r in board.models)
    for row in board.models:
        assert row.ci_low < row.rating < row.ci_high


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(1)
    a, b, s = simulate([1100, 1000, 900], 200, rng)
    assert np.array_equal(bootstrap_ratings(a, b, s, 3, 100, seed=7), bootstrap_ratings(a, b, s, 3, 100, seed=7))
    assert not np.array_equal(bootstrap_ratings(a, b, s, 3, 100, seed=7), bootstrap_ratings(a, b, s, 3, 100, seed=8))


# --- simulated raters with known strengths ------------------------------------------------


def test_bradley_terry_recovers_the_true_order():
    rng = np.random.default_rng(11)
    true = [1300, 1200, 1100, 1000, 900, 800, 700, 600]
    a, b, s = simulate(true, 4000, rng)
    fitted = fit_ratings(a, b, s, len(true))
    assert list(np.argsort(-fitted)) == list(range(len(true)))
    # And the scale: the fit is within 30 points of the truth (mean-centred).
    assert fitted == pytest.approx(np.asarray(true) - np.mean(true) + 1000, abs=30)


def test_95_percent_intervals_cover_the_truth_in_at_least_90_percent_of_200_campaigns():
    true = np.array([1150.0, 1050.0, 950.0, 850.0])  # mean 1000, as the fit is
    rng = np.random.default_rng(2026)
    covered = np.zeros(len(true))
    started = time.perf_counter()
    for campaign in range(200):
        a, b, s = simulate(true, 300, rng)
        boot = bootstrap_ratings(a, b, s, len(true), rounds=1000, seed=campaign)
        low, high = np.percentile(boot, 2.5, axis=0), np.percentile(boot, 97.5, axis=0)
        covered += (low <= true) & (true <= high)
    share = covered / 200
    assert (share >= 0.90).all(), share
    assert time.perf_counter() - started < 120


def test_twenty_models_twenty_thousand_votes_thousand_rounds_is_fast():
    rng = np.random.default_rng(5)
    true = rng.normal(1000, 150, 20)
    a, b, s = simulate(true, 20_000, rng)
    started = time.perf_counter()
    fit_ratings(a, b, s, 20)
    bootstrap_ratings(a, b, s, 20, rounds=1000)
    # 3 s is the goal on an idle machine (bench/evaluation.py prints it); the shared,
    # loaded test machine gets slack.
    assert time.perf_counter() - started < 12


# --- Likert ---------------------------------------------------------------------------


def test_likert_mean_and_t_interval_by_hand():
    scores = [Score(i, f"r{i}", "x", "helpfulness", v) for i, v in enumerate([4, 5, 3])]
    scores.append(Score(0, "r0", "x", "safety", 5))
    rows = {(r.model, r.criterion): r for r in likert_means(scores)}
    # mean 4, sd 1, n 3: half width t(0.975, 2) / sqrt(3) = 4.3027 / 1.7321 = 2.4841
    help_row = rows[("x", "helpfulness")]
    assert (help_row.mean, help_row.n) == (4.0, 3)
    assert help_row.ci_low == pytest.approx(4 - 2.4841, abs=1e-3)
    assert help_row.ci_high == pytest.approx(4 + 2.4841, abs=1e-3)
    assert rows[("x", "safety")].ci_low is None  # one score: no interval


# --- agreement ------------------------------------------------------------------------

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", example C: four
# observers, twelve units, values 1-5, some missing. Published: nominal 0.743,
# ordinal 0.815, interval 0.849.
_KRIPPENDORFF_C = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}


def _triples():
    return [(unit, rater, v) for rater, values in _KRIPPENDORFF_C.items()
            for unit, v in enumerate(values) if v is not None]


def test_alpha_matches_krippendorffs_published_worked_example():
    assert krippendorff_alpha(_triples(), "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(_triples(), "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(_triples(), "interval") == pytest.approx(0.849, abs=5e-4)


def test_likert_agreement_uses_the_ordinal_alpha_on_the_same_example():
    # Each unit of the example as one (item, answer, criterion) scored by four raters.
    scores = [Score(unit, rater, "x", "helpfulness", v) for unit, rater, v in _triples()]
    assert agreement([], scores).likert_alpha == pytest.approx(0.815, abs=5e-4)


def test_vote_agreement_by_hand():
    # Item 0: both raters say A; item 1: A vs tie; item 2: one rating only (not compared).
    votes = [Vote(0, "r1", "x", "y", "A"), Vote(0, "r2", "x", "y", "A"),
             Vote(1, "r1", "x", "y", "A"), Vote(1, "r2", "x", "y", "tie"),
             Vote(2, "r1", "x", "y", "B")]
    agreed = agreement(votes)
    assert agreed.items_compared == 2 and agreed.agreed_share == 0.5
    # Nominal alpha by hand on items 0 and 1: pairable values A, A, A, tie (n = 4).
    # Observed disagreement Do = 2 / 4 (item 1's two ordered mismatched pairs over n);
    # expected De = (2 * 3 * 1) / (4 * 3) = 0.5; alpha = 1 - Do / De = 0.
    assert agreed.alpha == pytest.approx(0.0, abs=1e-9)
    perfect = agreement([Vote(i, r, "x", "y", w) for i, w in enumerate("ABA") for r in ("r1", "r2")])
    assert perfect.alpha == pytest.approx(1.0) and perfect.agreed_share == 1.0


def test_alpha_is_none_without_overlap_or_variation():
    assert krippendorff_alpha([(0, "r1", 1), (1, "r2", 2)], "nominal") is None
    assert krippendorff_alpha([(0, "r1", 1), (0, "r2", 1)], "nominal") is None


def test_simulated_raters_who_agree_more_get_a_higher_alpha():
    rng = np.random.default_rng(4)
    truth = rng.integers(0, 2, 300)

    def votes(noise):
        return [Vote(i, r, "x", "y", "A" if (t ^ (rng.random() < noise)) else "B")
                for i, t in enumerate(truth) for r in ("r1", "r2", "r3")]

    careful, sloppy = agreement(votes(0.05)).alpha, agreement(votes(0.3)).alpha
    assert careful > 0.7 > sloppy > 0.0


@pytest.mark.parametrize("alpha,words", [
    (0.42, "alpha 0.42: raters often disagree; add clearer criteria or more ratings"),
    (0.91, "alpha 0.91: raters agree well"),
    (0.7, "alpha 0.70: raters mostly agree"),
    (0.05, "alpha 0.05: raters agree little more than chance"),
    (None, "not enough overlap yet"),
])
def test_plain_language_reading(alpha, words):
    assert reading(alpha).startswith(words)

