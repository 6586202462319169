"""Label agreement (the paper's first experiment): on human-labelled (chosen, rejected)
pairs, how often each labelling method, with the base model as judge, picks the human's
choice. The bookkeeping is in dlma.evaluate.stats."""

from __future__ import annotations

import logging

import polars as pl

from dlma.evaluate.params import EvaluateParams
from dlma.evaluate.sets import agreement_sets
from dlma.evaluate.stats import accuracy_summary, paired_difference
from dlma.lm.ab_judge import ab_judge
from dlma.lm.prompts import PromptsParams, pairs_of
from dlma.score.contrastive import score_table
from dlma.score.params import ScoreParams

log = logging.getLogger(__name__)


def label_agreement(model, tokenizer, frame: pl.DataFrame, prompts: PromptsParams, score: ScoreParams,
                    template: str, tokens: list[str], *, samples: int, seed: int) -> tuple[dict, pl.DataFrame]:
    """Agreement with human labels of (chosen, rejected) pairs for three judging methods."""
    if "pair" not in frame.columns:  # judged by each row's category
        frame = frame.with_columns(pl.Series("pair", pairs_of(prompts, frame["category"].to_list(), frame.height), dtype=pl.String))
    pairs = frame.select("id", "prompt", "pair", pl.col("chosen").alias("response_pos"), pl.col("rejected").alias("response_neg"))
    scored = score_table(model, tokenizer, pairs, prompts, score, with_reference=False)
    contrastive = (scored["score"].to_numpy() > 0).astype(float)
    # Plain likelihood under the positive prompt: is the human-preferred answer more likely?
    likelihood = (scored["logp_pos_given_pos"].to_numpy() > scored["logp_neg_given_pos"].to_numpy()).astype(float)
    judge = ab_judge(model, tokenizer, prompts.bare, template, tokens, frame["prompt"].to_list(),
                     frame["chosen"].to_list(), frame["rejected"].to_list(), batch_size=score.batch_size)
    # A pick that flips with the order is no label: count only rows where both orders agree.
    ab_correct = judge["picks_chosen_first_order"][judge["consistent"]].astype(float)
    shorter = (scored["n_tokens_pos"].to_numpy() < scored["n_tokens_neg"].to_numpy()).astype(float)
    summary = {
        "rows": frame.height,
        "contrastive": accuracy_summary(contrastive, samples=samples, seed=seed) | {"order_consistency": 1.0},
        "ab_judge": accuracy_summary(ab_correct, samples=samples, seed=seed) | {
            "counted": int(ab_correct.size),
            "order_consistency": float(judge["consistent"].mean()),
            "prefers_a_both_orders": float(judge["prefers_a_both"].mean()),
            "answer_token_mass": float(judge["answer_mass"].mean()),
        },
        "likelihood": accuracy_summary(likelihood, samples=samples, seed=seed),
        # Paired: the same pairs judged by both labellers, so the interval is of the difference.
        "contrastive_minus_likelihood": paired_difference(contrastive, likelihood, samples=samples, seed=seed),
        "chosen_is_shorter": float(shorter.mean()),
    }
    rows = frame.select("id", "prompt", "chosen", "rejected").with_columns(
        pl.Series("score", scored["score"]), pl.Series("contrastive_right", contrastive),
        pl.Series("likelihood_right", likelihood), pl.Series("ab_prob_chosen", judge["prob_chosen"]),
        pl.Series("ab_consistent", judge["consistent"]), pl.Series("ab_answer_mass", judge["answer_mass"]),
    )
    return summary, rows


def agreement_results(model, tokenizer, params: EvaluateParams, prompts: PromptsParams, score: ScoreParams,
                      identities: dict | None = None) -> tuple[dict, list[pl.DataFrame], dict[str, pl.DataFrame]]:
    """label_agreement on every configured set, in params order; a missing optional set is
    reported as skipped, identical pairs dropped and counted. Also returns the sets, each
    row with its pair (judges check themselves on them)."""
    loaded, skipped = agreement_sets(params, identities)
    results, rows, labelled = {}, [], {}
    for spec in params.agreement_sets:
        if spec.name in skipped:
            results[spec.name] = skipped[spec.name]
            continue
        frame, identical = loaded[spec.name]
        frame = frame.with_columns(pl.Series("pair", pairs_of(prompts, frame["category"].to_list(), frame.height, spec.pair), dtype=pl.String))
        labelled[spec.name] = frame
        summary, detail = label_agreement(
            model, tokenizer, frame, prompts, score, params.judge_prompt, params.judge_tokens,
            samples=params.bootstrap, seed=params.seed,
        )
        if identical:
            summary["dropped_identical_pairs"] = identical
        results[spec.name] = summary
        rows.append(detail.with_columns(pl.lit(spec.name).alias("set")))
        log.info("agreement %s: %s", spec.name, summary)
    return results, rows, labelled
