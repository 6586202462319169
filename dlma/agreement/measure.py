"""Label agreement (the paper's first experiment): on human-labelled (chosen, rejected)
pairs, how often each labeller picks the human's choice, and how each compares with the
contrastive score on the same pairs (paired differences, not two separate intervals).

Labellers: the contrastive score, plain likelihood and the A/B judge use the base model;
the reward model (the reward stage's, or any sequence-classification model) and a second
judge model are given as callables when configured. A/B judges label by score.ab_rule, as
the RLAIF labeller does: `average` (the paper's) labels every pair by P(chosen) averaged
over both orders; `consistent` counts only the pairs where both orders agree (the share so
counted sits beside the accuracy). The bookkeeping is in dlma.evaluate.stats.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import polars as pl

from dlma.evaluate.params import EvaluateParams
from dlma.evaluate.sets import agreement_sets
from dlma.evaluate.stats import accuracy_summary, paired_difference
from dlma.lm.ab_judge import ab_judge
from dlma.lm.params import PromptsParams
from dlma.lm.prompts import pairs_of
from dlma.score.contrastive import score_table
from dlma.score.labellers import two_order_labels
from dlma.score.params import ScoreParams

log = logging.getLogger(__name__)

# (queries, answers) -> one reward per answer
RewardFn = Callable[[list[str], list[str]], np.ndarray]
# (queries, first, second) -> dlma.lm.ab_judge.ab_judge's summary, both orders
AskFn = Callable[[list[str], list[str], list[str]], dict]


def two_order_summary(judged: dict, contrastive: np.ndarray, rule: str, *, samples: int,
                      seed: int) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    """An A/B judge's accuracy on the pairs its `rule` labels (two_order_labels: all of them
    for `average`), its validity beside it, and the paired difference contrastive - judge on
    those same pairs. Returns also, per pair, whether it is counted and whether it is right."""
    score, counted = two_order_labels(judged, rule)
    right = counted & (score > 0)
    judge_right = right[counted].astype(float)
    summary = accuracy_summary(judge_right, samples=samples, seed=seed) | {
        "rule": rule,
        "counted": int(judge_right.size),
        "order_consistency": float(judged["consistent"].mean()),
        "prefers_a_both_orders": float(judged["prefers_a_both"].mean()),
        "answer_token_mass": float(judged["answer_mass"].mean()),
    }
    difference = paired_difference(contrastive[counted], judge_right, samples=samples, seed=seed)
    return summary, difference, counted, right


def label_agreement(model, tokenizer, frame: pl.DataFrame, prompts: PromptsParams, score: ScoreParams,
                    template: str, tokens: list[str], *, samples: int, seed: int,
                    reward: RewardFn | None = None, judge: AskFn | None = None) -> tuple[dict, pl.DataFrame]:
    """Agreement with the human labels of (chosen, rejected) pairs for every labeller, and
    one row per pair with each labeller's verdict."""
    if "pair" not in frame.columns:  # judged by each row's category
        frame = frame.with_columns(pl.Series("pair", pairs_of(prompts, frame["category"].to_list(), frame.height), dtype=pl.String))
    pairs = frame.select("id", "prompt", "pair", pl.col("chosen").alias("response_pos"), pl.col("rejected").alias("response_neg"))
    scored = score_table(model, tokenizer, pairs, prompts, score, with_reference=False)
    contrastive = (scored["score"].to_numpy() > 0).astype(float)
    # Plain likelihood under the positive prompt: is the human-preferred answer more likely?
    likelihood = (scored["logp_pos_given_pos"].to_numpy() > scored["logp_neg_given_pos"].to_numpy()).astype(float)
    queries, chosen, rejected = frame["prompt"].to_list(), frame["chosen"].to_list(), frame["rejected"].to_list()
    ab = ab_judge(model, tokenizer, prompts.bare, template, tokens, queries, chosen, rejected, batch_size=score.batch_size)
    ab_summary, ab_difference, ab_counted, ab_right = two_order_summary(ab, contrastive, score.ab_rule, samples=samples,
                                                                         seed=seed)
    shorter = (scored["n_tokens_pos"].to_numpy() < scored["n_tokens_neg"].to_numpy()).astype(float)
    summary = {
        "rows": frame.height,
        "contrastive": accuracy_summary(contrastive, samples=samples, seed=seed) | {"order_consistency": 1.0},
        "ab_judge": ab_summary,
        "likelihood": accuracy_summary(likelihood, samples=samples, seed=seed),
        # Paired: the same pairs judged by both labellers, so the interval is of the difference.
        "contrastive_minus_likelihood": paired_difference(contrastive, likelihood, samples=samples, seed=seed),
        "contrastive_minus_ab_judge": ab_difference,
        "chosen_is_shorter": float(shorter.mean()),
    }
    columns = {"score": scored["score"], "contrastive_right": contrastive, "likelihood_right": likelihood,
               "ab_prob_chosen": ab["prob_chosen"], "ab_consistent": ab["consistent"], "ab_counted": ab_counted,
               "ab_right": ab_right}
    if reward is not None:
        reward_chosen, reward_rejected = reward(queries, chosen), reward(queries, rejected)
        reward_right = (reward_chosen > reward_rejected).astype(float)  # a tie is no pick: wrong
        summary["reward_model"] = accuracy_summary(reward_right, samples=samples, seed=seed)
        summary["contrastive_minus_reward_model"] = paired_difference(contrastive, reward_right, samples=samples, seed=seed)
        columns |= {"reward_chosen": reward_chosen, "reward_rejected": reward_rejected, "reward_model_right": reward_right}
    if judge is not None:
        judged = judge(queries, chosen, rejected)
        summary["judge_model"], summary["contrastive_minus_judge_model"], judge_counted, judge_right = two_order_summary(
            judged, contrastive, score.ab_rule, samples=samples, seed=seed)
        columns |= {"judge_model_prob_chosen": judged["prob_chosen"], "judge_model_consistent": judged["consistent"],
                    "judge_model_counted": judge_counted, "judge_model_right": judge_right}
    rows = frame.select("id", "prompt", "pair", "chosen", "rejected").with_columns(
        *[pl.Series(name, values) for name, values in columns.items()])
    return summary, rows


def agreement_results(model, tokenizer, params: EvaluateParams, prompts: PromptsParams, score: ScoreParams,
                      identities: dict | None = None, *, reward: RewardFn | None = None,
                      judge: AskFn | None = None) -> tuple[dict, pl.DataFrame]:
    """label_agreement on every configured set, in params order; a missing optional set is
    reported as skipped, identical pairs dropped and counted. Returns the summaries by set
    and every set's rows in one table (column `set`)."""
    loaded, skipped = agreement_sets(params, identities)
    results, rows = {}, []
    for spec in params.agreement_sets:
        if spec.name in skipped:
            results[spec.name] = skipped[spec.name]
            continue
        frame, identical = loaded[spec.name]
        frame = frame.with_columns(pl.Series("pair", pairs_of(prompts, frame["category"].to_list(), frame.height, spec.pair), dtype=pl.String))
        summary, detail = label_agreement(
            model, tokenizer, frame, prompts, score, score.judge_prompt, score.judge_tokens,  # the RLAIF labeller's question
            samples=params.bootstrap, seed=params.seed, reward=reward, judge=judge,
        )
        if identical:
            summary["dropped_identical_pairs"] = identical
        results[spec.name] = summary
        rows.append(detail.with_columns(pl.lit(spec.name).alias("set")))
        log.info("agreement %s: %s", spec.name, {k: v for k, v in summary.items() if not isinstance(v, dict)}
                 | {k: round(v["accuracy"], 3) for k, v in summary.items() if isinstance(v, dict) and "accuracy" in v})
    table = pl.concat(rows, how="diagonal") if rows else pl.DataFrame(schema={"set": pl.String})
    return results, table
