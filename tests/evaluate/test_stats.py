"""Evaluation bookkeeping against counts done by hand in the test."""

from __future__ import annotations

import numpy as np
import pytest

from dlma.evaluate.stats import (
    bootstrap_interval,
    distinct_n,
    perplexity,
    rates,
    verdict_from_margin,
    verdict_from_two_orders,
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


def test_text_statistics():
    assert distinct_n(["a b a", "b c"], 1) == pytest.approx(3 / 5)
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert perplexity(np.array([-2.0, -4.0]), np.array([2, 4])) == pytest.approx(np.exp(1.0))
