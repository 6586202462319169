"""Params of the `reward` section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dlma.core.config import DTypeName
from dlma.core.errors import DlmaError


@dataclass(frozen=True)
class RewardParams:
    model: str  # causal LM to start from; "" = model.base
    peft: Literal["lora", "none"]
    lora_r: int
    lora_alpha: int
    learning_rate: float
    epochs: float
    batch_size: int
    micro_batch_size: int  # pairs per forward pass; gradients accumulate to batch_size
    max_length: int
    dtype: DTypeName
    seed: int
    bootstrap: int

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_length < 8 or self.bootstrap < 1:
            raise DlmaError("reward.batch_size and reward.bootstrap must be >= 1 and reward.max_length >= 8")
        if self.micro_batch_size < 1 or self.batch_size % self.micro_batch_size:
            raise DlmaError(f"reward.micro_batch_size must divide reward.batch_size={self.batch_size} "
                            f"(got {self.micro_batch_size}); e.g. 2")
        if self.epochs <= 0 or self.learning_rate <= 0:
            raise DlmaError("reward.epochs and reward.learning_rate must be > 0")
