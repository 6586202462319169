"""Judges of aligned vs base answers (see base.py). Import order is registration order,
which is the order of their columns in the samples table."""

from dlma.evaluate.judges.base import (
    JUDGES,
    Judge,
    JudgeContext,
    JudgeResult,
    register,
    run_judges,
)

# One line per judge module: importing it registers the judge.
from dlma.evaluate.judges import refusal  # noqa: E402,F401  isort: skip
from dlma.evaluate.judges import self_contrast  # noqa: E402,F401  isort: skip
from dlma.evaluate.judges import ab_judge  # noqa: E402,F401  isort: skip
from dlma.evaluate.judges import reward_model  # noqa: E402,F401  isort: skip
from dlma.evaluate.judges import judge_model  # noqa: E402,F401  isort: skip
from dlma.evaluate.judges import true_reward  # noqa: E402,F401  isort: skip

__all__ = ["JUDGES", "Judge", "JudgeContext", "JudgeResult", "register", "run_judges"]
