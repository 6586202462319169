"""Params of the `train` section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dlma.core.config import DTypeName
from dlma.core.errors import DlmaError


@dataclass(frozen=True)
class TrainParams:
    loss: Literal["margin", "weighted", "sft"]
    beta: float
    margin_weight: float
    margin_min: float
    margin_max: float
    peft: Literal["lora", "none"]
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_target_modules: list[str]
    learning_rate: float
    optimizer: str
    lr_scheduler: str
    warmup_steps: int
    epochs: float
    max_steps: int
    batch_size: int
    gradient_accumulation_steps: int
    max_length: int
    max_grad_norm: float
    gradient_checkpointing: bool
    save_steps: int
    seed: int
    dtype: DTypeName
    reference_tolerance: float | None
    final_metrics: bool

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise DlmaError(f"train.beta must be > 0, got {self.beta}")
        if self.margin_min > self.margin_max:
            raise DlmaError("train.margin_min must be <= train.margin_max")
        if self.loss == "weighted" and self.margin_weight != 0:
            raise DlmaError("train.loss 'weighted' multiplies the loss by R; set train.margin_weight to 0 with it")
        if self.batch_size < 1 or self.save_steps < 1 or self.gradient_accumulation_steps < 1:
            raise DlmaError("train.batch_size, train.gradient_accumulation_steps and train.save_steps must be >= 1")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise DlmaError(f"train.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.reference_tolerance is not None and self.reference_tolerance < 0:
            raise DlmaError("train.reference_tolerance must be >= 0 or null")
        if self.learning_rate <= 0:
            raise DlmaError(f"train.learning_rate must be > 0, got {self.learning_rate}")
        if self.margin_weight < 0:  # a negative weight inverts the self-rewarding margin
            raise DlmaError(f"train.margin_weight must be >= 0 (0 is plain DPO), got {self.margin_weight}")
        if self.max_steps <= 0 and self.epochs <= 0:  # would register an untrained adapter as a model
            raise DlmaError(f"train.epochs must be > 0 (or train.max_steps > 0), got {self.epochs}")
        if self.lora_r < 1 or self.lora_alpha < 1 or self.warmup_steps < 0 or self.max_length < 2:
            raise DlmaError("train.lora_r and train.lora_alpha must be >= 1, train.warmup_steps >= 0 and train.max_length >= 2")
        from transformers.trainer_utils import SchedulerType
        from transformers.training_args import OptimizerNames

        for key, value, known in (("optimizer", self.optimizer, OptimizerNames), ("lr_scheduler", self.lr_scheduler, SchedulerType)):
            names = [member.value for member in known]
            if value not in names:
                raise DlmaError(f"train.{key}: unknown '{value}'; transformers knows {names}")
