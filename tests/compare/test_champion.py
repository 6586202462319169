"""Which model of a comparison gets the `champion` alias: the rule, on hand-made numbers."""

from __future__ import annotations

import polars as pl

from dlma.compare.champion import choose_champion
from dlma.compare.summary import RunResult


def run(method: str, seed: int, net: float) -> RunResult:
    return RunResult(method=method, seed=seed, name=f"c-{method}-s{seed}", samples=pl.DataFrame(),
                     metrics={"win_rate": {"reward_model": {"net": net}}}, train={"version": f"v-{method}-{seed}"})


def interval(mean: float, low: float, high: float) -> dict:
    return {"all": {"mean": mean, "ci_low": low, "ci_high": high}}


RUNS = [run("dlma", 0, 0.10), run("dlma", 1, 0.30), run("rlcd", 0, 0.20), run("rlcd", 1, 0.00)]


def judged(dlma: dict, rlcd: dict) -> dict:
    return {"headline": {"judges": ["reward_model"]},
            "vs_base": {"dlma": {"reward_model": {"net": dlma}}, "rlcd": {"reward_model": {"net": rlcd}}}}


def test_the_best_method_by_the_headline_judge_and_its_best_seed():
    choice = choose_champion(judged(interval(0.2, 0.05, 0.35), interval(0.1, -0.1, 0.3)), RUNS)
    assert choice["method"] == "dlma" and choice["seed"] == 1  # seed 1 scored 0.30 against seed 0's 0.10
    assert choice["experiment"] == "c-dlma-s1" and choice["pipeline_version"] == "v-dlma-1"
    assert choice["per_seed"] == {0: 0.10, 1: 0.30} and "none_because" not in choice
    assert choice["runner_up"] == {"method": "rlcd", "mean": 0.1}


def test_no_champion_when_the_best_interval_includes_zero_or_there_is_no_headline():
    choice = choose_champion(judged(interval(0.2, -0.01, 0.35), interval(0.1, -0.1, 0.3)), RUNS)
    assert choice["method"] == "dlma" and "includes 0" in choice["none_because"] and "seed" not in choice
    none = choose_champion({"headline": {"judges": [], "none_because": {"reward_model": "labelled accuracy 0.53 < 0.55"}},
                            "vs_base": {}}, RUNS)
    assert none == {"none_because": "no informative headline judge (reward_model: labelled accuracy 0.53 < 0.55)"}


def test_a_true_reward_headline_ranks_by_the_gain_over_base():
    result = {"headline": {"judges": ["sentiment"]}, "vs_base": {},
              "true_reward": {"sentiment": {
                  "dlma": {"gain": interval(0.10, 0.02, 0.18), "per_seed": {"0": {"mean": 0.12}, "1": {"mean": 0.08}}},
                  "oracle": {"gain": interval(0.16, 0.09, 0.22), "per_seed": {"0": {"mean": 0.15}, "1": {"mean": 0.17}}},
                  "base": {"mean": interval(0.5, 0.4, 0.6)}}}}  # the base model: a mean, no gain
    runs = [run("dlma", 0, 0.0), run("dlma", 1, 0.0), run("oracle", 0, 0.0), run("oracle", 1, 0.0)]
    choice = choose_champion(result, runs)
    assert (choice["method"], choice["seed"], choice["mean"]) == ("oracle", 1, 0.16) and choice["measure"].startswith("true reward")
