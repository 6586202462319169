"""Params of the `compare` section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dlma.core.errors import DlmaError


@dataclass(frozen=True)
class CompareParams:
    name: str
    methods: list[str]
    seeds: list[int]
    set: dict[str, Any]  # params every run of the comparison sets (its size), as `dvc exp run -S` would
    bootstrap: int

    def __post_init__(self) -> None:
        from dlma.compare.methods import check_methods

        check_methods(self.methods)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise DlmaError(f"compare.seeds must be distinct and not empty, got {self.seeds}")
        if not self.name.replace("-", "").isalnum():
            raise DlmaError(f"compare.name must be letters, digits and '-' (it names DVC experiments), got {self.name!r}")
        if self.bootstrap < 1:
            raise DlmaError("compare.bootstrap must be >= 1")
