"""Is a judge judging? Its own validity measures against the thresholds in
`evaluate.validity`; a judge that fails one is reported as "not informative" and kept out
of the headline, and a self-judge (the base model grading its own fine-tune) never makes
the headline on its own."""

from __future__ import annotations

from dlma.evaluate.params import ValidityParams

# validity key -> the threshold it must reach (a lower bound)
THRESHOLDS = {
    "order_consistency": "min_order_consistency",
    "answer_token_mass": "min_answer_token_mass",
    "labelled_accuracy": "min_labelled_accuracy",
    "holdout_accuracy": "min_labelled_accuracy",  # the reward stage's model, on its held-out human pairs
}


def failed_checks(validity: dict[str, float], thresholds: ValidityParams) -> list[str]:
    """Why a judge is not informative, one phrase per failed check; empty when it passes.
    A measure that is missing or NaN (no labelled pairs, say) cannot vouch for the judge,
    so it fails too."""
    reasons = []
    for key, threshold_name in THRESHOLDS.items():
        if key not in validity:
            continue
        value, least = validity[key], getattr(thresholds, threshold_name)
        if value is None or value != value or value < least:  # value != value: NaN
            reasons.append(f"{key.replace('_', ' ')} {value if value is None else round(value, 3)} < {least}")
    return reasons


def headline(win_rates: dict[str, dict]) -> dict:
    """The headline of aligned vs base: the informative, independent judges' net wins, or
    why there is none."""
    judges = {name: {k: r[k] for k in ("net", "net_ci_low", "net_ci_high", "win", "tie", "lose", "n")}
              for name, r in win_rates.items() if r["informative"] and r["independent"]}
    if judges:
        return {"judges": judges}
    excluded = {name: ("self-judge" if not r["independent"] else "; ".join(r["not_informative_because"]))
                for name, r in win_rates.items()}
    return {"judges": {}, "none_because": "no judge is both independent of the model under test and informative (each "
                                          "judge's reason is under `excluded`; the independent ones are the reward model, "
                                          "evaluate.reward_model, and a second model, evaluate.judge_model)",
            "excluded": excluded}
