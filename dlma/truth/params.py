"""Params of the `truth` section: the objective's true reward, for the controlled task."""

from __future__ import annotations

from dataclasses import dataclass

from dlma.core.errors import DlmaError
from dlma.truth import TRUE_REWARDS


@dataclass(frozen=True)
class TruthParams:
    reward: str  # a true reward of dlma/truth (sentiment), or "" (the objective has none)
    folds: int  # the reward-model labeller's cross-fitting folds; 0 = no reward-model labeller
    bootstrap: int
    seed: int

    def __post_init__(self) -> None:
        if self.reward and self.reward not in TRUE_REWARDS:
            raise DlmaError(f"truth.reward: unknown true reward '{self.reward}'; known: {sorted(TRUE_REWARDS)} (or \"\")")
        if self.folds == 1 or self.folds < 0:
            raise DlmaError(f"truth.folds must be 0 (no reward-model labeller) or >= 2, got {self.folds}")
        if self.bootstrap < 1:
            raise DlmaError("truth.bootstrap must be >= 1")
