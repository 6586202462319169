"""Judge `ab_judge`: the base model as an RLAIF-style A/B judge, asked in both orders; a win
needs the aligned answer picked in both. A self-judge: shown with its validity, never the
headline."""

from __future__ import annotations

import polars as pl

from dlma.evaluate.judges.base import JudgeContext, JudgeResult, register
from dlma.evaluate.stats import verdict_from_two_orders
from dlma.lm.ab_judge import ab_judge as ask_both_orders


def two_order_verdicts(judged: dict) -> list[str]:
    """win / tie / lose of the first answer ("chosen" in the judge's terms) from both orders."""
    return [verdict_from_two_orders(bool(first), not bool(swapped))
            for first, swapped in zip(judged["picks_chosen_first_order"], judged["picks_chosen_swapped_order"])]


def order_validity(judged: dict) -> dict[str, float]:
    return {
        "order_consistency": float(judged["consistent"].mean()),
        "prefers_a_both_orders": float(judged["prefers_a_both"].mean()),
        "answer_token_mass": float(judged["answer_mass"].mean()),
    }


def labelled_validity(labelled: pl.DataFrame, labeller: str) -> dict[str, float]:
    """An A/B judge's accuracy on the human-labelled pairs, as the agreement stage measured
    it (columns <labeller>_counted, <labeller>_right): over the pairs score.ab_rule labels
    (all of them for `average`; for `consistent` only where both orders agree), with the
    share so counted. NaN (so: not informative) when the agreement stage did not measure it."""
    if f"{labeller}_right" not in labelled.columns or labelled.height == 0:
        return {"labelled_accuracy": float("nan"), "labelled_counted": 0.0, "labelled_pairs": 0}
    counted = labelled[f"{labeller}_counted"].to_numpy().astype(bool)
    right = labelled[f"{labeller}_right"].to_numpy().astype(bool)
    return {"labelled_accuracy": float(right.sum() / counted.sum()) if counted.any() else float("nan"),
            "labelled_counted": float(counted.mean()), "labelled_pairs": int(counted.size)}


@register("ab_judge", description="self-judge: the base model asked A or B, in both orders")
def ab_judge(context: JudgeContext) -> JudgeResult:
    p = context.params
    judged = ask_both_orders(
        context.judge_model, context.tokenizer, p.prompts.bare, p.evaluate.judge_prompt, p.evaluate.judge_tokens,
        context.queries, context.aligned, context.base, batch_size=p.score.batch_size,
    )
    # "chosen" is the aligned answer: shown first, then second (base first).
    return JudgeResult(verdicts=two_order_verdicts(judged), columns={"ab_judge_prob_aligned": judged["prob_chosen"].tolist()},
                       validity=order_validity(judged))
