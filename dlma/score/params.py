"""Params of the `score` section (also the judging numerics of `evaluate`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dlma.core.config import DTypeName
from dlma.core.errors import DlmaError
from dlma.lm.ab_judge import check_question
from dlma.score.labellers import LABELLERS


@dataclass(frozen=True)
class ScoreParams:
    labeller: str
    dtype: DTypeName
    attn_implementation: Literal["eager", "sdpa"]
    batch_size: int
    max_length: int
    padding_side: Literal["right", "left"]
    judge_prompt: str  # the A/B question of the ab_judge labeller (RLAIF)
    judge_tokens: list[str]
    ab_rule: Literal["average", "consistent"]  # how the A/B judge's two orders make a label (see labellers.rlaif)

    def __post_init__(self) -> None:
        if self.labeller not in LABELLERS:
            raise DlmaError(f"score.labeller: unknown labeller '{self.labeller}'; known labellers: {sorted(LABELLERS)}")
        check_question("score", self.judge_prompt, self.judge_tokens)
        if self.batch_size < 1 or self.max_length < 1:
            raise DlmaError("score.batch_size and score.max_length must be >= 1")
