"""Judge `self_contrast`: the base model's contrastive score of (aligned as a1, base as a2);
a self-judge, and the very score DLMA trains on."""

from __future__ import annotations

import polars as pl

from dlma.evaluate.judges.base import JudgeContext, JudgeResult, register
from dlma.evaluate.stats import verdict_from_margin
from dlma.score.contrastive import score_table


@register("self_contrast", description="self-judge: the base model's contrastive score")
def self_contrast(context: JudgeContext) -> JudgeResult:
    p = context.params
    frame = pl.DataFrame({
        "id": [str(i) for i in range(len(context.queries))], "prompt": context.queries, "pair": context.prompts["pair"],
        "response_pos": context.aligned, "response_neg": context.base,
    })
    scored = score_table(context.judge_model, context.tokenizer, frame, p.prompts, p.score)
    margins = scored["score"].to_numpy()
    return JudgeResult(
        verdicts=[verdict_from_margin(m, p.evaluate.tie_margin) for m in margins],
        columns={"self_contrast_score": margins.tolist()},
    )
