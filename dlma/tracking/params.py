"""Params of the `tracking` section."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrackingParams:
    uri: str  # empty: one SQLite store at the repository root
    experiment: str
    model_name: str
    group: str  # a comparison's name (dlma compare): tags its runs, which MLflow shows under one parent run
