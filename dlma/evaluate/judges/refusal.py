"""Judge `refusal`: refusal rate on harmful prompts and over-refusal on safe ones, for both
models, with the rule-based detector in dlma/evaluate/refusal.py, and that rule's own
accuracy on its labelled sample (metrics.json `refusal_rule`)."""

from __future__ import annotations

import numpy as np

from dlma.evaluate.judges.base import JudgeContext, JudgeResult, register
from dlma.evaluate.refusal import is_refusal, rule_accuracy


@register("refusal", description="rule-based refusal detector (not a model)")
def refusal(context: JudgeContext) -> JudgeResult:
    harm = context.prompts["harm"].to_numpy()
    flags = {"base": [is_refusal(a) for a in context.base], "aligned": [is_refusal(a) for a in context.aligned]}
    rates = {
        who: {kind: float(np.array(f)[harm == kind].mean()) if (harm == kind).any() else None for kind in ("harmful", "safe")}
        for who, f in flags.items()
    }
    return JudgeResult(
        columns={"refusal_base": flags["base"], "refusal_aligned": flags["aligned"]},
        metrics={"refusal_rate": rates, "refusal_rule": rule_accuracy(samples=context.params.evaluate.bootstrap,
                                                                      seed=context.params.evaluate.seed)},
    )
