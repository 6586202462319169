"""The registry of true rewards (see the package's docstring): the modules that define one
register it here, and its users read it from the package."""

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
