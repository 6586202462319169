"""Params of the `filter` section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dlma.core.errors import DlmaError


@dataclass(frozen=True)
class FilterParams:
    drop_empty: bool
    drop_identical: bool
    drop_truncated: Literal["none", "both", "either"]
    swap_negative: bool
    min_abs_score: float
    max_prompt_words: int | None

    def __post_init__(self) -> None:
        if self.min_abs_score < 0:
            raise DlmaError(f"filter.min_abs_score must be >= 0, got {self.min_abs_score}")
