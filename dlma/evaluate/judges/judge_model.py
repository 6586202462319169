"""Judge `judge_model`: a second, independent causal LM (`evaluate.judge_model`) asked which
answer is better, in both orders; a win only when both orders pick the aligned answer.
Its validity: order consistency and answer-token mass here, and its accuracy on the
human-labelled sets where both orders agree, measured by the agreement stage."""

from __future__ import annotations

from dlma.agreement.labellers import second_judge
from dlma.evaluate.judges.ab_judge import (
    labelled_validity,
    order_validity,
    two_order_verdicts,
)
from dlma.evaluate.judges.base import JudgeContext, JudgeResult, register
from dlma.model import stage_dtype


@register("judge_model", description="independent: evaluate.judge_model asked A or B, in both orders",
          needs_params=("judge_model",), independent=True)
def judge_model(context: JudgeContext) -> JudgeResult:
    p = context.params
    ask = second_judge(p.model, p.evaluate.judge_model, p.evaluate.judge_prompt, p.evaluate.judge_tokens,
                       numerics=stage_dtype(p.model, "score.dtype", p.score.dtype), attn_implementation=p.score.attn_implementation, batch_size=p.score.batch_size)
    judged = ask(context.queries, context.aligned, context.base)
    return JudgeResult(verdicts=two_order_verdicts(judged), columns={"judge_model_prob_aligned": judged["prob_chosen"].tolist()},
                       validity=order_validity(judged) | labelled_validity(context.labelled, "judge_model"))
