"""Judge `judge_model`: a second, independent causal LM (`evaluate.judge_model`) asked which
answer is better, in both orders; a win only when both orders pick the aligned answer.
It checks itself on the human-labelled sets (accuracy where both orders agree)."""

from __future__ import annotations

from dataclasses import replace

from dlma.evaluate.judges.ab_judge import (
    labelled_validity,
    order_validity,
    two_order_verdicts,
)
from dlma.evaluate.judges.base import JudgeContext, JudgeResult, register
from dlma.lm.ab_judge import ab_judge as ask_both_orders
from dlma.model import load_for_stage


@register("judge_model", description="independent: evaluate.judge_model asked A or B, in both orders",
          needs_params=("judge_model",), independent=True)
def judge_model(context: JudgeContext) -> JudgeResult:
    p = context.params
    # Its own format: the chat template when the judge has one (bare "auto").
    model, tokenizer, _ = load_for_stage(replace(p.model, base=p.evaluate.judge_model), p.score.dtype, p.score.attn_implementation)

    def ask(queries, first, second) -> dict:
        return ask_both_orders(model, tokenizer, "auto", p.evaluate.judge_prompt, p.evaluate.judge_tokens,
                               queries, first, second, batch_size=p.score.batch_size)

    judged = ask(context.queries, context.aligned, context.base)
    return JudgeResult(verdicts=two_order_verdicts(judged), columns={"judge_model_prob_aligned": judged["prob_chosen"].tolist()},
                       validity=order_validity(judged) | labelled_validity(ask, context.labelled))
