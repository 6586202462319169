"""Params of the `rounds` section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dlma.core.errors import DlmaError


@dataclass(frozen=True)
class RoundsParams:
    count: int  # 1 = the pipeline as it is (one round)
    start: Literal["previous", "base"]  # what round k > 1 trains from: round k-1's model, or the base model
    reference: Literal["base", "previous"]  # the reference of round k's DPO: the base model, or round k-1's model
    keep_pairs: bool  # round k also trains on the earlier rounds' pairs

    def __post_init__(self) -> None:
        if self.count < 1:
            raise DlmaError(f"rounds.count must be >= 1 (1 is the one-round pipeline), got {self.count}")


def inactive(round_number: int, count: int) -> dict:
    """The metrics of a round past rounds.count (it writes only these)."""
    return {"round": round_number, "active": False, "reason": f"rounds.count is {count}"}
