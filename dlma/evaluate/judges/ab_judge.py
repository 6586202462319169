"""Judge `ab_judge`: the base model as an RLAIF-style A/B judge, asked in both orders; a win
needs the aligned answer picked in both."""

from __future__ import annotations

from dlma.evaluate.judges.base import JudgeContext, JudgeResult, register
from dlma.evaluate.stats import verdict_from_two_orders
from dlma.lm.ab_judge import ab_judge as ask_both_orders


@register("ab_judge", description="self-judge: the base model asked A or B, in both orders")
def ab_judge(context: JudgeContext) -> JudgeResult:
    p = context.params
    judged = ask_both_orders(
        context.judge_model, context.tokenizer, p.prompts.bare, p.evaluate.judge_prompt, p.evaluate.judge_tokens,
        context.queries, context.aligned, context.base, batch_size=p.score.batch_size,
    )
    # "chosen" is the aligned answer: shown first, then second (base first).
    verdicts = [
        verdict_from_two_orders(bool(first), not bool(swapped))
        for first, swapped in zip(judged["picks_chosen_first_order"], judged["picks_chosen_swapped_order"])
    ]
    return JudgeResult(
        verdicts=verdicts,
        columns={"ab_judge_prob_aligned": judged["prob_chosen"].tolist()},
        validity={
            "order_consistency": float(judged["consistent"].mean()),
            "prefers_a_both_orders": float(judged["prefers_a_both"].mean()),
            "answer_token_mass": float(judged["answer_mass"].mean()),
        },
    )
