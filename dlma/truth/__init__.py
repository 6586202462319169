"""True rewards: objectives whose reward of an answer is known independently of every model
in the pipeline (the controlled task, as the DPO paper's IMDb sentiment experiment). They
judge aligned against base answers (`evaluate.judges`: the judge of the same name), label
pairs (`score.labeller`: the oracle baseline) and are the reference that label agreement is
measured against on generated pairs (the `truth` stage).

A true reward is a function list[str] -> np.ndarray (one float per answer, higher = better),
registered under its name, with the check of its own accuracy on a hand-labelled sample
(reported beside every use, as the refusal rule's is). Add one: a module here with both,
and its import line below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from dlma.core.errors import DlmaError


@dataclass(frozen=True)
class TrueReward:
    name: str
    score: Callable[[list[str]], np.ndarray]
    check: Callable[..., dict]  # (samples=, seed=) -> its accuracy on its labelled sample, with intervals
    description: str


TRUE_REWARDS: dict[str, TrueReward] = {}


def register(reward: TrueReward) -> TrueReward:
    TRUE_REWARDS[reward.name] = reward
    return reward


def true_reward(name: str) -> TrueReward:
    if name not in TRUE_REWARDS:
        raise DlmaError(f"unknown true reward '{name}'; known: {sorted(TRUE_REWARDS)}")
    return TRUE_REWARDS[name]


from dlma.truth import sentiment  # noqa: E402,F401  isort: skip  (registers `sentiment`)
