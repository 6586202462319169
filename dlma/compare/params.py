"""Params of the `compare` section: the default comparison, and named presets beside it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlma.compare.methods import check_methods
from dlma.core.config import build, read_params_file
from dlma.core.errors import DlmaError


@dataclass(frozen=True)
class CompareParams:
    name: str
    methods: list[str]
    seeds: list[int]
    set: dict[str, Any]  # params every run of the comparison sets (its size), as `dvc exp run -S` would
    grid: dict[str, list[Any]]  # params varied within each method: every combination is a variant (a frontier)
    bootstrap: int
    bootstrap_seed: int  # the resampling's seed (intervals reproducible to the digit)
    report: str  # "" = reports/compare.{md,json}; else the study it belongs to: reports/<report>.{md,json}
    presets: dict[str, dict[str, Any]]  # named comparisons (`dlma compare --preset NAME`): keys that replace these

    def __post_init__(self) -> None:
        check_methods(self.methods)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise DlmaError(f"compare.seeds must be distinct and not empty, got {self.seeds}")
        if not self.name.replace("-", "").isalnum():
            raise DlmaError(f"compare.name must be letters, digits and '-' (it names DVC experiments), got {self.name!r}")
        if self.bootstrap < 1:
            raise DlmaError("compare.bootstrap must be >= 1")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise DlmaError(f"compare.grid.{key} must be a non-empty list of values, got {values!r}")
        if self.report and not self.report.replace("-", "").isalnum():
            raise DlmaError(f"compare.report must be letters, digits and '-' (it names report files), got {self.report!r}")


def load_compare(path: str | Path, preset: str | None = None) -> CompareParams:
    """The `compare` section, or one of its presets: the preset's keys over the section's,
    named after the preset."""
    raw = read_params_file(path).get("compare")
    if not isinstance(raw, dict):
        raise DlmaError(f"params file '{path}' has no section 'compare'")
    if preset is None:
        return build(CompareParams, raw, "compare")
    presets = raw.get("presets") or {}
    if preset not in presets:
        raise DlmaError(f"compare.presets has no '{preset}'; known: {sorted(presets)}")
    return build(CompareParams, {**raw, **presets[preset], "name": preset, "presets": {}}, f"compare.presets.{preset}")
