"""Params of the `data` section and of the data sets named elsewhere (evaluate's sets)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dlma.core.errors import DlmaError

SourceFormat = Literal["auto", "table", "hh", "pku"]
COLUMN_NAMES = ("prompt", "id", "category", "chosen", "rejected")


def _check_columns(where: str, columns: dict[str, str]) -> None:
    unknown = set(columns) - set(COLUMN_NAMES)
    if unknown:
        raise DlmaError(f"{where}.columns has unknown key(s) {sorted(unknown)}; allowed: {', '.join(COLUMN_NAMES)}")


@dataclass(frozen=True)
class DataParams:
    source: str
    format: SourceFormat
    split: str
    columns: dict[str, str]
    pku_label: Literal["safer", "better"]
    limit: int | None
    eval_fraction: float
    seed: int

    def __post_init__(self) -> None:
        if not 0.0 <= self.eval_fraction < 1.0:
            raise DlmaError(f"data.eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.limit is not None and self.limit < 1:
            raise DlmaError(f"data.limit must be a positive integer or null, got {self.limit}")
        _check_columns("data", self.columns)


@dataclass(frozen=True)
class EvalSetSpec:
    """An evaluation set named in params: where it is, how to read it (keys as in
    DataParams), the contrastive pair that judges it ("" = by each row's category), and
    whether a missing file is reported as skipped (optional) instead of being an error."""

    name: str
    source: str
    format: SourceFormat
    columns: dict[str, str]
    pair: str
    optional: bool

    def __post_init__(self) -> None:
        _check_columns(f"evaluation set '{self.name}'", self.columns)


@dataclass(frozen=True)
class AgreementSet(EvalSetSpec):
    """A human-labelled pair set; pku_label picks `chosen` in PKU-SafeRLHF files."""

    pku_label: Literal["safer", "better"]


@dataclass(frozen=True)
class PromptSet(EvalSetSpec):
    """An extra prompt set; `kind` labels its prompts harmful / safe, or `mixed` (by category)."""

    kind: Literal["mixed", "harmful", "safe"]


@dataclass(frozen=True)
class HumanParams:
    """The `human` section: human-labelled pairs for dpo_human and the reward model."""

    source: str
    format: SourceFormat
    columns: dict[str, str]
    pku_label: Literal["safer", "better"]
    pair: str
    limit: int | None
    holdout_fraction: float
    seed: int
    optional: bool

    def __post_init__(self) -> None:
        _check_columns("human", self.columns)
        if not 0.0 < self.holdout_fraction < 1.0:
            raise DlmaError(f"human.holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.limit is not None and self.limit < 2:
            raise DlmaError(f"human.limit must be >= 2 (a training and a held-out pair) or null, got {self.limit}")
