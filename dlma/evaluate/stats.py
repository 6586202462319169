"""Bookkeeping of the evaluation: accuracies with bootstrap intervals, win/tie/lose with
both answer orders, and text statistics. Pure functions of arrays and strings."""

from __future__ import annotations

from collections import Counter

import numpy as np


def bootstrap_interval(correct: np.ndarray, *, samples: int, seed: int) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of per-row values."""
    correct = np.asarray(correct, dtype=np.float64)
    if correct.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = correct[rng.integers(0, correct.size, size=(samples, correct.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def paired_difference(first: np.ndarray, second: np.ndarray, *, samples: int, seed: int) -> dict:
    """Mean of first - second over paired rows (the same prompt or pair measured two ways),
    with a 95% percentile-bootstrap interval that resamples rows, keeping each pair
    together: the interval of the difference, not two separate intervals."""
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if first.shape != second.shape:
        raise ValueError(f"paired arrays differ in shape: {first.shape} vs {second.shape}")
    if first.size == 0:
        return {"difference": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    differences = first - second
    low, high = bootstrap_interval(differences, samples=samples, seed=seed)
    return {"difference": float(differences.mean()), "ci_low": low, "ci_high": high, "n": int(first.size)}


def accuracy_summary(correct: np.ndarray, *, samples: int, seed: int) -> dict:
    low, high = bootstrap_interval(correct, samples=samples, seed=seed)
    accuracy = float(np.mean(correct)) if np.size(correct) else float("nan")  # nothing counted: no accuracy
    return {"accuracy": accuracy, "ci_low": low, "ci_high": high}


def verdict_from_margin(margin: float, tie_margin: float) -> str:
    """win / tie / lose for the first answer from a signed, order-free judge value."""
    if margin > tie_margin:
        return "win"
    if margin < -tie_margin:
        return "lose"
    return "tie"


def verdict_from_two_orders(first_prefers_first: bool, swapped_prefers_first: bool) -> str:
    """Order-sensitive judge asked in both orders about answers X (ours) and Y.

    first_prefers_first: with X shown first, the judge picked X.
    swapped_prefers_first: with Y shown first, the judge picked Y (its first answer).
    A win needs X picked in both orders; a loss, Y in both; anything else is a tie.
    """
    picked_x = [first_prefers_first, not swapped_prefers_first]
    if all(picked_x):
        return "win"
    if not any(picked_x):
        return "lose"
    return "tie"


def rates(verdicts: list[str]) -> dict:
    counts = Counter(verdicts)
    total = max(len(verdicts), 1)
    return {k: counts.get(k, 0) / total for k in ("win", "tie", "lose")} | {"n": len(verdicts)}


def verdict_summary(verdicts: list[str], *, samples: int, seed: int) -> dict:
    """win / tie / lose shares plus the net win (win - lose, in [-1, 1]) with 95% bootstrap
    intervals over prompts. Each verdict already pairs the two models' answers to one prompt,
    so resampling prompts is the paired bootstrap of the comparison."""
    signed = np.array([{"win": 1.0, "tie": 0.0, "lose": -1.0}[v] for v in verdicts])
    win_low, win_high = bootstrap_interval(signed == 1.0, samples=samples, seed=seed)
    net_low, net_high = bootstrap_interval(signed, samples=samples, seed=seed)
    return rates(verdicts) | {"win_ci_low": win_low, "win_ci_high": win_high,
                              "net": float(signed.mean()) if signed.size else float("nan"),
                              "net_ci_low": net_low, "net_ci_high": net_high}


def distinct_n(texts: list[str], n: int) -> float:
    """Unique n-grams / all n-grams over whitespace tokens of all texts (0 if none)."""
    grams = [tuple(words[i:i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def perplexity(summed_logps: np.ndarray, token_counts: np.ndarray) -> float:
    """exp(- total log-prob / total tokens): token-weighted, over all answers."""
    return float(np.exp(-np.sum(summed_logps) / np.sum(token_counts)))


def crossed_bootstrap(values: np.ndarray, *, samples: int, seed: int) -> dict:
    """Mean of a seeds x prompts table with a 95% interval over prompts and seeds: each
    resample draws seeds and prompts with replacement, independently (a crossed design:
    every seed answered every prompt), so the interval widens with both the spread
    between prompts and the spread between training seeds. Paired data come in as one
    table of differences (method minus base on the same seed and prompt)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.size == 0:
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "seeds": 0, "prompts": 0}
    n_seeds, n_prompts = values.shape
    rng = np.random.default_rng(seed)
    seed_draws = rng.integers(0, n_seeds, size=(samples, n_seeds))
    prompt_draws = rng.integers(0, n_prompts, size=(samples, n_prompts))
    # mean over the drawn (seed, prompt) grid = mean over drawn seeds of the per-seed
    # means over the drawn prompts; computed without building samples x S x P arrays
    per_seed = np.stack([values[:, draw].mean(axis=1) for draw in prompt_draws])  # samples x seeds
    means = np.take_along_axis(per_seed, seed_draws, axis=1).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(values.mean()), "ci_low": float(low), "ci_high": float(high), "seeds": n_seeds, "prompts": n_prompts}


def cluster_bootstrap(values: np.ndarray, clusters: np.ndarray, *, samples: int, seed: int) -> dict:
    """Mean of per-row values with a 95% interval that resamples clusters (the prompts),
    each with all its rows: for rows that share a prompt (pairs of one prompt sampled under
    several seeds), which are not independent. NaN rows (no verdict) are left out."""
    values, clusters = np.asarray(values, dtype=np.float64), np.asarray(clusters)
    keep = ~np.isnan(values)
    values, clusters = values[keep], clusters[keep]
    if values.size == 0:
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0, "clusters": 0}
    _, index = np.unique(clusters, return_inverse=True)
    sums, counts = np.bincount(index, weights=values), np.bincount(index).astype(np.float64)
    draws = np.random.default_rng(seed).integers(0, sums.size, size=(samples, sums.size))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(values.mean()), "ci_low": float(low), "ci_high": float(high), "n": int(values.size),
            "clusters": int(sums.size)}
