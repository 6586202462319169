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
    max_pairs: int | None  # the training budget: at most this many pairs, the first in table order; null = all

    def __post_init__(self) -> None:
        if self.min_abs_score < 0:
            raise DlmaError(f"filter.min_abs_score must be >= 0, got {self.min_abs_score}")
        if self.max_pairs is not None and self.max_pairs < 1:
            raise DlmaError(f"filter.max_pairs must be >= 1 or null, got {self.max_pairs}")
