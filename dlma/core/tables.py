"""Checks shared by the stages that read a table written by an earlier stage."""

from __future__ import annotations

import polars as pl

from dlma.core.errors import DlmaError


def require_table(frame: pl.DataFrame, columns, source: str, *, producer: str, empty_hint: str = "") -> None:
    """Named columns present, at least one row, and no nulls in them (error names the row id)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DlmaError(f"'{source}' lacks column(s) {missing}; it must come from the {producer} stage")
    if frame.height == 0:
        raise DlmaError(f"'{source}' has no rows{empty_hint}")
    for column in columns:
        nulls = frame.filter(pl.col(column).is_null())
        if nulls.height:
            raise DlmaError(f"'{source}': field '{column}' is null in row id={nulls['id'][0]!r}")
