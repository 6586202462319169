"""Judge `ab_judge`: the base model as an RLAIF-style A/B judge, asked in both orders; a win
needs the aligned answer picked in both. A self-judge: shown with its validity, never the
headline."""

from __future__ import annotations

import numpy as np

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


def labelled_validity(ask, labelled: dict) -> dict[str, float]:
    """Accuracy of an A/B judge on human-labelled pairs, counted only where both orders
    agree (a pick that flips with the order is no label), and the share so counted."""
    consistent, right = [], []
    for frame in labelled.values():
        judged = ask(frame["prompt"].to_list(), frame["chosen"].to_list(), frame["rejected"].to_list())
        consistent.append(judged["consistent"])
        right.append(judged["picks_chosen_first_order"] & judged["consistent"])
    if not consistent:
        return {}
    consistent, right = np.concatenate(consistent), np.concatenate(right)
    return {"labelled_accuracy": float(right.sum() / consistent.sum()) if consistent.any() else float("nan"),
            "labelled_counted": float(consistent.mean()), "labelled_pairs": int(consistent.size)}


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
