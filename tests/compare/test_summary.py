"""The comparison's statistics: the crossed bootstrap against a loop written here, and the
summary of synthetic runs against numbers computed here by hand."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from dlma.compare.methods import METHODS, as_set_params
from dlma.compare.report import render
from dlma.compare.summary import RunResult, compare_runs
from dlma.core.errors import DlmaError
from dlma.evaluate.stats import crossed_bootstrap, paired_difference


def test_crossed_bootstrap_against_a_loop():
    rng = np.random.default_rng(3)
    values = rng.normal(size=(3, 11))
    got = crossed_bootstrap(values, samples=400, seed=5)
    draws = np.random.default_rng(5)
    seed_draws, prompt_draws = draws.integers(0, 3, size=(400, 3)), draws.integers(0, 11, size=(400, 11))
    means = [np.mean([values[s, p] for s in seed_draws[b] for p in prompt_draws[b]]) for b in range(400)]
    assert got["mean"] == pytest.approx(values.mean())
    assert (got["ci_low"], got["ci_high"]) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert got["seeds"] == 3 and got["prompts"] == 11
    # One seed: the same interval as the prompt bootstrap of paired differences.
    one = crossed_bootstrap(values[:1], samples=400, seed=5)
    assert one["ci_high"] - one["ci_low"] > 0
    assert crossed_bootstrap(np.ones((3, 5)), samples=50, seed=0)["ci_low"] == crossed_bootstrap(np.ones((3, 5)), samples=50, seed=0)["ci_high"] == 1.0
    # More seed-to-seed spread, wider interval (same prompts' spread).
    shifted = values + np.array([[-2.0], [0.0], [2.0]])
    assert crossed_bootstrap(shifted, samples=400, seed=0)["ci_high"] - crossed_bootstrap(shifted, samples=400, seed=0)["ci_low"] > \
        got["ci_high"] - got["ci_low"]
    assert paired_difference(values[0], values[0], samples=100, seed=0)["difference"] == 0.0


PROMPTS = pl.DataFrame({"set": ["heldout", "heldout", "xstest", "xstest"], "id": ["1", "2", "a", "b"],
                        "harm": ["safe", "harmful", "safe", "harmful"]})


def run(method: str, seed: int, verdicts: list[str], reward_gain: list[float], refused: list[bool], *,
        independent: bool = True, informative: bool = True) -> RunResult:
    samples = PROMPTS.with_columns(
        pl.Series("answer_base", [f"base {seed} {i}" for i in range(4)]), pl.Series("answer_aligned", [f"{method} {i}" for i in range(4)]),
        pl.Series("verdict_rm", verdicts), pl.Series("reward_base", [0.0] * 4), pl.Series("reward_aligned", reward_gain),
        pl.Series("refusal_base", [False] * 4), pl.Series("refusal_aligned", refused),
    ).reverse()  # a run may list its prompts in any order
    entry = {"independent": independent, "informative": informative, "validity": {"labelled_accuracy": 0.7 if informative else 0.5},
             "not_informative_because": [] if informative else ["labelled accuracy 0.5 < 0.55"]}
    metrics = {"win_rate": {"rm": entry}, "perplexity": {"base": 8.0, "aligned": 7.0 + seed},
               "text": {"base": {"mean_tokens": 50.0, "distinct_2": 0.8}, "aligned": {"mean_tokens": 40.0, "distinct_2": 0.7}},
               "training_data": {"pairs": 10 + seed},
               "refusal_rule": {"n": 48, "refusals": 16, "sample": "x.jsonl", **{k: {"accuracy": 0.9, "ci_low": 0.8, "ci_high": 1.0}
                                                                                  for k in ("accuracy", "recall", "false_refusal_rate")}}}
    return RunResult(method=method, seed=seed, name=f"cmp-{method}-s{seed}", samples=samples, metrics=metrics, agreement=AGREEMENT)


def _accuracy(value: float) -> dict:
    return {"accuracy": value, "ci_low": value - 0.1, "ci_high": value + 0.1}


AGREEMENT = {"hh": {"rows": 20, "contrastive": _accuracy(0.75) | {"order_consistency": 1.0}, "likelihood": _accuracy(0.5),
                    "ab_judge": _accuracy(0.6) | {"counted": 5, "order_consistency": 0.25, "prefers_a_both_orders": 0.7,
                                                  "answer_token_mass": 0.4},
                    "reward_model": _accuracy(0.65),
                    "contrastive_minus_likelihood": {"difference": 0.25, "ci_low": 0.05, "ci_high": 0.45, "n": 20},
                    "contrastive_minus_ab_judge": {"difference": 0.2, "ci_low": -0.2, "ci_high": 0.6, "n": 5},
                    "contrastive_minus_reward_model": {"difference": 0.1, "ci_low": -0.15, "ci_high": 0.35, "n": 20},
                    "chosen_is_shorter": 0.55},
             "gone": {"skipped": "x.jsonl not found"}}


def test_compare_runs_by_hand():
    runs = [run("dlma", 0, ["win", "win", "tie", "lose"], [1.0, 2.0, 0.0, -1.0], [False, True, False, False]),
            run("dlma", 1, ["win", "tie", "tie", "win"], [0.5, 0.0, 0.0, 1.5], [False, False, False, True]),
            run("rlcd", 0, ["lose", "tie", "tie", "lose"], [0.0, 0.0, 0.0, 0.0], [False, False, False, False]),
            run("rlcd", 1, ["tie", "tie", "tie", "tie"], [-1.0, 0.0, 0.0, 0.0], [False, False, False, False])]
    result = compare_runs(runs, ["dlma", "rlcd", "base"], [0, 1], samples=200, seed=0)
    # dlma's signed verdicts: seed 0 (1, 1, 0, -1), seed 1 (1, 0, 0, 1): mean 3/8
    dlma = result["vs_base"]["dlma"]["rm"]
    assert dlma["net"]["all"]["mean"] == pytest.approx(3 / 8) and dlma["win"] == pytest.approx(4 / 8)
    assert dlma["net"]["heldout"]["mean"] == pytest.approx((1 + 1 + 1 + 0) / 4)
    assert dlma["net"]["xstest"]["mean"] == pytest.approx((0 - 1 + 0 + 1) / 4)
    assert result["reward"]["dlma"]["all"]["mean"] == pytest.approx(4.0 / 8)
    # DLMA minus RLCD, paired: verdicts (1,1,0,-1)-(-1,0,0,-1) and (1,0,0,1)-(0,0,0,0)
    assert result["vs_dlma"]["rlcd"]["net_rm"]["all"]["mean"] == pytest.approx((2 + 1 + 0 + 0 + 1 + 0 + 0 + 1) / 8)
    assert result["vs_dlma"]["rlcd"]["reward"]["all"]["mean"] == pytest.approx((4.0 - (-1.0)) / 8)  # dlma sums to 4, rlcd to -1
    # refusal: dlma refused harmful heldout (seed 0) and harmful xstest (seed 1): 2 of 4 harmful
    assert result["refusal"]["dlma"]["harmful"]["mean"] == pytest.approx(0.5) and result["refusal"]["dlma"]["safe"]["mean"] == 0.0
    assert result["refusal"]["base"]["harmful"]["mean"] == 0.0
    assert result["quality"]["dlma"]["perplexity"] == pytest.approx(7.5) and result["quality"]["base"]["perplexity"] == 8.0
    assert result["quality"]["rlcd"]["generated_pairs"] == [10, 11]
    assert result["headline"] == {"judges": ["rm"]} and result["prompts"] == {"all": 4, "heldout": 2, "xstest": 2}
    text = render(result, name="cmp", minutes=1.0, model="tiny")
    assert "| dlma | +37.5 [" in text and "Headline judges" in text
    assert "The rule on 48 hand-labelled answers (16 refusals): accuracy 90.0% [80.0, 100.0]" in text
    # Label agreement: every labeller's row with the paired difference against the contrastive score.
    assert result["agreement"] == AGREEMENT
    assert "| hh | reward model (evaluate.reward_model) | 65.0% [55.0%, 75.0%] | 20 of 20 | +10.0 pp [-15.0 pp, +35.0 pp] |" in text
    assert "| hh | A/B judge (RLAIF, base model) | 60.0% [50.0%, 70.0%] | 5 of 20 | +20.0 pp [-20.0 pp, +60.0 pp] | both orders agree on 25.0%" in text
    assert "| gone | skipped: x.jsonl not found |" in text
    # A judge that fails validity in one run is out of the headline, with the reason.
    runs[3] = run("rlcd", 1, ["tie"] * 4, [0.0] * 4, [False] * 4, informative=False)
    result = compare_runs(runs, ["dlma", "rlcd", "base"], [0, 1], samples=50, seed=0)
    assert result["headline"]["judges"] == [] and "labelled accuracy 0.5 < 0.55" in result["headline"]["none_because"]["rm"]
    assert "No headline" in render(result, name="cmp", minutes=None, model="tiny")
    # A method left out (it could not train) keeps its row, with the reason.
    text = render(result | {"left_out": {"rlaif": "t-rlaif-s0: error: filter dropped every row"}}, name="cmp", minutes=None, model="x")
    assert "| rlaif | not trained: t-rlaif-s0: error: filter dropped every row |" in text


def test_compare_runs_refuses_mismatched_runs():
    runs = [run("dlma", 0, ["win"] * 4, [0.0] * 4, [False] * 4)]
    with pytest.raises(DlmaError, match=r"lacks runs \[\('dlma', 1\)\]"):
        compare_runs(runs, ["dlma"], [0, 1], samples=50, seed=0)
    other = run("dlma", 1, ["win"] * 4, [0.0] * 4, [False] * 4)
    runs.append(RunResult("dlma", 1, "x", other.samples.head(3), other.metrics))
    with pytest.raises(DlmaError, match="judged other prompts"):
        compare_runs(runs, ["dlma"], [0, 1], samples=50, seed=0)


def test_method_params_as_dvc_set_params():
    assert as_set_params(METHODS["rlaif"]) == ["generate.pairs_from=bare", "score.labeller=ab_judge", "filter.swap_negative=true",
                                               "train.margin_weight=0.0"]
    assert as_set_params({"evaluate.judges": ["a", "b"], "data.limit": 60}) == ["evaluate.judges=[a, b]", "data.limit=60"]


def controlled_run(method: str, seed: int, aligned: list[float], base: list[float], kl: list[float], pairs: int, steps: int,
                   truth_rows: pl.DataFrame | None = None) -> RunResult:
    samples = PROMPTS.with_columns(
        pl.Series("answer_base", [f"base {seed} {i}" for i in range(4)]), pl.Series("answer_aligned", [f"{method} {i}" for i in range(4)]),
        pl.Series("verdict_sentiment", ["win" if a > b else "lose" if a < b else "tie" for a, b in zip(aligned, base)]),
        pl.Series("sentiment_aligned", aligned), pl.Series("sentiment_base", base), pl.Series("kl_aligned", kl))
    entry = {"independent": True, "informative": True, "validity": {"labelled_accuracy": 0.9}, "not_informative_because": []}
    metrics = {"win_rate": {"sentiment": entry}, "perplexity": {"base": 8.0, "aligned": 7.0},
               "text": {"base": {"mean_tokens": 50.0, "distinct_2": 0.8}, "aligned": {"mean_tokens": 40.0, "distinct_2": 0.7}},
               "training_data": {"pairs": 12}}
    truth = {"skipped": "score.labeller is sentiment"} if truth_rows is None else {"ab_rule": "average"}
    return RunResult(method=method, seed=seed, name=f"c-{method}-s{seed}", samples=samples, metrics=metrics,
                     train={"pairs": pairs, "steps": steps}, truth=truth, truth_rows=truth_rows, base_method=method)


def truth_rows(ids: list[str], contrastive: list[float], ab: list[float]) -> pl.DataFrame:
    return pl.DataFrame({"id": ids, "true_pos": [0.5] * len(ids), "true_neg": [0.1] * len(ids), "true_order": [1.0] * len(ids),
                         "contrastive_right": contrastive, "ab_judge_right": ab})


def test_true_reward_kl_budget_and_experiment_one_by_hand():
    base0, base1 = [0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 0.5, 0.5]
    runs = [controlled_run("dlma", 0, [0.5, 0.2, 0.9, 0.4], base0, [1.0, 2.0, 3.0, 4.0], 8, 2,
                           truth_rows(["p1", "p2", "p3"], [1.0, 1.0, 0.0], [0.0, 1.0, float("nan")])),
            controlled_run("dlma", 1, [0.0, 0.4, 0.5, 0.9], base1, [0.0, 0.0, 1.0, 1.0], 8, 2,
                           truth_rows(["p1", "p4"], [1.0, 0.0], [1.0, 1.0])),
            controlled_run("oracle", 0, [0.1, 0.2, 0.3, 0.4], base0, [0.5] * 4, 8, 2),
            controlled_run("oracle", 1, [0.0, 0.0, 0.5, 0.5], base1, [0.5] * 4, 7, 2)]
    result = compare_runs(runs, ["dlma", "oracle", "base"], [0, 1], samples=200, seed=0)
    sentiment = result["true_reward"]["sentiment"]
    assert sentiment["base"]["all"]["mean"] == pytest.approx((1.0 + 1.0) / 8)
    assert sentiment["dlma"]["mean"]["all"]["mean"] == pytest.approx((2.0 + 1.8) / 8)
    # gains: seed 0 (0.4, 0, 0.6, 0), seed 1 (0, 0.4, 0, 0.4)
    assert sentiment["dlma"]["gain"]["all"]["mean"] == pytest.approx(1.8 / 8)
    assert sentiment["dlma"]["per_seed"][0]["mean"] == pytest.approx(1.0 / 4) and sentiment["oracle"]["gain"]["all"]["mean"] == 0.0
    assert result["kl"]["dlma"]["all"]["mean"] == pytest.approx(12.0 / 8) and result["kl"]["dlma"]["per_seed"][1]["mean"] == 0.5
    assert result["vs_dlma"]["oracle"]["true_sentiment"]["all"]["mean"] == pytest.approx(1.8 / 8)
    # budgets: oracle trained on 7 pairs in seed 1, so the budgets are not equal, and the report says so
    assert result["budget"]["oracle"] == {"pairs": [8, 7], "steps": [2, 2], "point": {}, "method": "oracle"}
    assert result["equal_budget"] is False and "Equal budgets: **no**" in render(result, name="c", minutes=None, model="tiny")
    # each experiment's wall time sits beside its budget, seed by seed; "?" where it was not timed (a queue ran it)
    result["budget"]["dlma"]["minutes"], result["budget"]["oracle"]["minutes"] = [20.71, 19.0], [7.3, None]
    text = render(result, name="c", minutes=None, model="tiny")
    assert "| dlma | 8 / 8 | 2 / 2 | 20.7 / 19.0 |" in text and "| oracle | 8 / 7 | 2 / 2 | 7.3 / ? |" in text
    # Experiment 1 pooled over seeds from the runs that measured it; NaN (no verdict) left out.
    truth = result["truth_agreement"]
    assert truth["pairs"] == 5 and truth["from_runs"] == ["dlma"] and truth["prompts"] == 4
    assert truth["contrastive"]["mean"] == pytest.approx(3 / 5) and truth["contrastive"]["n"] == 5
    assert truth["ab_judge"]["mean"] == pytest.approx(3 / 4) and truth["ab_judge"]["n"] == 4
    assert truth["contrastive_minus_ab_judge"]["mean"] == pytest.approx(((1 - 0) + (1 - 1) + (1 - 1) + (0 - 1)) / 4)
    assert truth["contrastive"]["ci_low"] <= truth["contrastive"]["mean"] <= truth["contrastive"]["ci_high"]


def test_cluster_bootstrap_resamples_whole_prompts():
    from dlma.evaluate.stats import cluster_bootstrap

    values = np.array([1.0, 1.0, 0.0, 0.0, np.nan])
    clusters = np.array(["a", "a", "b", "b", "b"])
    result = cluster_bootstrap(values, clusters, samples=500, seed=0)
    assert result["mean"] == 0.5 and result["n"] == 4 and result["clusters"] == 2
    # Two clusters only: every resample is all-a (1), all-b (0) or one of each (0.5).
    assert result["ci_low"] == 0.0 and result["ci_high"] == 1.0


def test_the_margin_table_takes_w_0_and_the_default_from_the_frontier():
    from dlma.compare.study import frontier_lines, margin_rows

    def row(preset, method, beta, w, seed="all", mean=0.1):
        entry = {"mean": mean, "ci_low": mean - 0.05, "ci_high": mean + 0.05}
        return {"preset": preset, "method": method, "beta": beta, "w": w, "seed": seed, "pairs": [8], "steps": [2],
                "true_reward": entry, "gain": entry, "kl": entry}

    rows = [row("margin", "base", None, None), row("margin", "dlma", 0.1, 0.5), row("margin", "dlma", 0.1, 1.0),
            row("frontier", "base", None, None), row("frontier", "dlma", 0.1, 0.2), row("frontier", "rlcd", 0.1, 0.0),
            row("frontier", "dlma", 0.3, 0.2), row("frontier", "oracle", 0.1, 0.0), row("frontier", "dlma", 0.1, 0.2, seed=0)]
    roles = {"experiments": [], "frontier": ["frontier"], "margin": ["margin"]}
    picked = margin_rows(rows, roles)
    # its own rows, and from the frontier only dlma / rlcd at the margin preset's beta and seeds (pooled)
    assert [(r["method"], r["w"]) for r in picked if r["preset"] == "frontier"] == [("dlma (from frontier)", 0.2),
                                                                                   ("rlcd (from frontier)", 0.0)]
    table = frontier_lines(picked, ["margin", "frontier"], "w", "w", "margin")
    ws = [line.split(" | ")[1] for line in table[3:] if line.startswith("|")]
    assert ws == ["0.0", "0.2", "0.5", "1.0"]  # sorted by w, the base model first
    assert table[2].startswith("| base |") and sum(line.startswith("| base |") for line in table) == 1
