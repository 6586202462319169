"""Evaluation bookkeeping against counts done by hand in the test."""

from __future__ import annotations

import numpy as np
import pytest

from dlma.evaluate.stats import (
    bootstrap_interval,
    distinct_n,
    paired_difference,
    perplexity,
    rates,
    verdict_from_margin,
    verdict_from_two_orders,
    verdict_summary,
)
from dlma.lm.ab_judge import ab_judge_summary


def test_two_orders_win_tie_lose():
    # X is ours. (first order: judge picked the first answer = X?), (swapped: picked first = Y?)
    assert verdict_from_two_orders(True, False) == "win"  # X both times
    assert verdict_from_two_orders(False, True) == "lose"  # Y both times
    assert verdict_from_two_orders(True, True) == "tie"  # always "the first one": position bias
    assert verdict_from_two_orders(False, False) == "tie"  # always the second one


def test_rates_count():
    assert rates(["win", "win", "tie", "lose"]) == {"win": 0.5, "tie": 0.25, "lose": 0.25, "n": 4}


def test_margin_verdict():
    assert [verdict_from_margin(m, 1.0) for m in (2.0, 1.0, 0.0, -1.0, -1.5)] == ["win", "tie", "tie", "tie", "lose"]


def test_ab_summary_by_hand():
    # row 0: A preferred in both orders (bias); row 1: picks chosen in both orders.
    p_a_first = np.array([0.06, 0.09])
    p_b_first = np.array([0.02, 0.01])
    p_a_swapped = np.array([0.07, 0.02])
    p_b_swapped = np.array([0.03, 0.08])
    out = ab_judge_summary(p_a_first, p_b_first, p_a_swapped, p_b_swapped)
    # row 0: first = .06/.08 = .75, swapped = .03/.10 = .3 -> mean .525; row 1: .9 and .8 -> .85
    assert out["prob_chosen"] == pytest.approx([0.525, 0.85])
    assert out["consistent"].tolist() == [False, True]
    assert out["prefers_a_both"].tolist() == [True, False]
    assert out["answer_mass"] == pytest.approx([0.09, 0.10])
    assert out["picks_chosen_first_order"].tolist() == [True, True]
    assert out["picks_chosen_swapped_order"].tolist() == [False, True]


def test_bootstrap_interval_brackets_the_mean():
    correct = np.array([1] * 30 + [0] * 10, dtype=float)
    low, high = bootstrap_interval(correct, samples=2000, seed=1)
    assert low < 0.75 < high and 0.55 < low and high < 0.9
    assert bootstrap_interval(correct, samples=2000, seed=1) == (low, high)


def test_paired_difference_resamples_pairs_together():
    rng = np.random.default_rng(3)
    shared = rng.normal(size=60)  # a per-row effect both measurements share
    first, second = shared + 0.3 + 0.1 * rng.normal(size=60), shared + 0.1 * rng.normal(size=60)
    result = paired_difference(first, second, samples=500, seed=7)
    # Independent computation: a loop over bootstrap draws, each row index taking both values.
    draws = np.random.default_rng(7).integers(0, 60, size=(500, 60))
    means = sorted(float(np.mean([first[i] - second[i] for i in row])) for row in draws)
    assert result["difference"] == pytest.approx(float(np.mean(first - second)))
    assert result["ci_low"] == pytest.approx(np.percentile(means, 2.5))
    assert result["ci_high"] == pytest.approx(np.percentile(means, 97.5))
    assert result["n"] == 60
    # Pairing removes the shared effect: the interval excludes 0 and is far narrower than
    # the one of two independent resamples would be.
    assert 0 < result["ci_low"] < 0.3 < result["ci_high"]
    assert result["ci_high"] - result["ci_low"] < 0.2
    with pytest.raises(ValueError, match="shape"):
        paired_difference(first, second[:-1], samples=100, seed=0)


def test_verdict_summary_net_win_with_interval():
    verdicts = ["win"] * 12 + ["tie"] * 5 + ["lose"] * 3
    summary = verdict_summary(verdicts, samples=400, seed=2)
    assert (summary["win"], summary["tie"], summary["lose"], summary["n"]) == (0.6, 0.25, 0.15, 20)
    assert summary["net"] == pytest.approx(0.45)
    draws = np.random.default_rng(2).integers(0, 20, size=(400, 20))
    signed = np.array([1] * 12 + [0] * 5 + [-1] * 3)
    means = [signed[row].mean() for row in draws]
    assert summary["net_ci_low"] == pytest.approx(np.percentile(means, 2.5))
    assert summary["net_ci_high"] == pytest.approx(np.percentile(means, 97.5))
    assert summary["win_ci_low"] < 0.6 < summary["win_ci_high"]


def test_text_statistics():
    assert distinct_n(["a b a", "b c"], 1) == pytest.approx(3 / 5)
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert perplexity(np.array([-2.0, -4.0]), np.array([2, 4])) == pytest.approx(np.exp(1.0))
