"""Judges from the true rewards (dlma/truth): one judge per registered true reward, named
after it (`sentiment`). Both answers get the true reward; the higher one wins (equal is a
tie). Its metrics: each model's mean true reward and the paired gain aligned - base, with
95% intervals over prompts. Its validity: its accuracy on its own hand-labelled sample
(`labelled_accuracy`, against evaluate.validity.min_labelled_accuracy). Independent of
every model here, so it can make the headline."""

from __future__ import annotations

import numpy as np

from dlma.evaluate.judges.base import JudgeContext, JudgeResult, register
from dlma.evaluate.stats import accuracy_summary, paired_difference, verdict_from_margin
from dlma.truth import TRUE_REWARDS, TrueReward


def mean_summary(values: np.ndarray, *, samples: int, seed: int) -> dict:
    summary = accuracy_summary(values, samples=samples, seed=seed)  # a mean with its bootstrap interval
    return {"mean": summary["accuracy"], "ci_low": summary["ci_low"], "ci_high": summary["ci_high"], "n": int(values.size)}


def true_reward_judge(reward: TrueReward):
    def judge(context: JudgeContext) -> JudgeResult:
        e = context.params.evaluate
        aligned, base = reward.score(context.aligned), reward.score(context.base)
        check = reward.check(samples=e.bootstrap, seed=e.seed)
        metrics = {"base": mean_summary(base, samples=e.bootstrap, seed=e.seed),
                   "aligned": mean_summary(aligned, samples=e.bootstrap, seed=e.seed),
                   "gain": paired_difference(aligned, base, samples=e.bootstrap, seed=e.seed),
                   "check": {k: v for k, v in check.items() if k != "mistakes"}}  # its mistakes: in the truth report
        return JudgeResult(
            verdicts=[verdict_from_margin(a - b, 0.0) for a, b in zip(aligned, base)],
            columns={f"{reward.name}_aligned": aligned.tolist(), f"{reward.name}_base": base.tolist()},
            metrics={reward.name: metrics},
            validity={"labelled_accuracy": check["accuracy"]["accuracy"], "labelled_pairs": check["n"]},
        )

    return judge


for _reward in TRUE_REWARDS.values():
    register(_reward.name, description=f"independent, true reward: {_reward.description}", independent=True)(
        true_reward_judge(_reward))
