"""Params of the `run` section: how many processes a model stage runs on, and how they start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dlma.core.errors import DlmaError


@dataclass(frozen=True)
class RunParams:
    processes: int
    launcher: Literal["torchrun", "accelerate"]
    accelerate_config: str

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise DlmaError(f"run.processes must be >= 1, got {self.processes}")
        if self.accelerate_config and self.launcher != "accelerate":
            raise DlmaError("run.accelerate_config is set but run.launcher is not accelerate")
