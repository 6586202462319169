"""Judge `reward_model`: a sequence-classification reward model (`evaluate.reward_model`: the
reward stage's folder, another local model or a hub id) scores both answers; the higher
reward wins. Its validity is its accuracy on the human-labelled sets, measured by the
agreement stage on the same model, and, for the reward stage's model, its accuracy on the
held-out human pairs."""

from __future__ import annotations

import polars as pl

from dlma.agreement.labellers import reward_card, reward_function
from dlma.evaluate.judges.base import JudgeContext, JudgeResult, register
from dlma.evaluate.stats import verdict_from_margin


def labelled_accuracy(labelled: pl.DataFrame) -> dict[str, float]:
    """Pooled over the agreement sets: share of human-labelled pairs where the reward model
    gives the chosen answer the higher reward. NaN (so: not informative) when the agreement
    stage did not measure it."""
    if "reward_model_right" not in labelled.columns or labelled.height == 0:
        return {"labelled_accuracy": float("nan"), "labelled_pairs": 0}
    return {"labelled_accuracy": float(labelled["reward_model_right"].mean()), "labelled_pairs": labelled.height}


@register("reward_model", description="independent: a reward model fitted on human labels (evaluate.reward_model)",
          needs_params=("reward_model",), independent=True)
def reward_model(context: JudgeContext) -> JudgeResult:
    p = context.params
    card = reward_card(p.evaluate.reward_model)
    if "skipped" in card:  # the reward stage had no human pairs
        return JudgeResult(metrics={"reward_model": {"skipped": card["skipped"]}})
    rewards = reward_function(p.evaluate.reward_model, batch_size=p.score.batch_size, trust_remote_code=p.model.trust_remote_code)
    reward_aligned, reward_base = rewards(context.queries, context.aligned), rewards(context.queries, context.base)
    validity = labelled_accuracy(context.labelled)
    if "holdout" in card and "accuracy" in card["holdout"]:
        validity |= {"holdout_accuracy": card["holdout"]["accuracy"], "holdout_pairs": card["holdout"]["pairs"]}
    return JudgeResult(
        verdicts=[verdict_from_margin(a - b, 0.0) for a, b in zip(reward_aligned, reward_base)],
        columns={"reward_aligned": reward_aligned.tolist(), "reward_base": reward_base.tolist()},
        validity=validity,
    )
