"""Prompts for the pipeline: drop empty and duplicate prompts (counted), cap, split train/eval."""

from __future__ import annotations

import numpy as np
import polars as pl

from dlma.core.errors import DlmaError
from dlma.data.loaders import LoadReport


def prepare_prompts(
    frame: pl.DataFrame, report: LoadReport, *, limit: int | None, eval_fraction: float, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Drop empty and duplicate prompts (counted), cap at `limit`, split train/eval by seed.

    The split is a seeded permutation, so the same source, limit and seed always put the
    same prompts aside for evaluation.
    """
    nonempty = frame.filter(pl.col("prompt").str.strip_chars() != "")
    report.skip("empty_prompt", frame.height - nonempty.height)
    unique = nonempty.unique(subset=["prompt"], keep="first", maintain_order=True)
    report.skip("duplicate_prompt", nonempty.height - unique.height)
    duplicated = unique.filter(pl.col("id").is_duplicated())
    if duplicated.height:
        # Ids key every row through the pipeline; the table loader already names the lines.
        raise DlmaError(f"{report.source}: id {duplicated['id'][0]!r} is used by {duplicated.height} different prompts; ids must be unique")
    if limit is not None:
        unique = unique.head(limit)
    n_eval = int(round(unique.height * eval_fraction))
    order = np.random.default_rng(seed).permutation(unique.height)
    is_eval = np.zeros(unique.height, dtype=bool)
    is_eval[order[:n_eval]] = True
    flagged = unique.with_columns(pl.Series("is_eval", is_eval))
    train = flagged.filter(~pl.col("is_eval")).drop("is_eval")
    evaluation = flagged.filter(pl.col("is_eval")).drop("is_eval")
    if train.height == 0:
        raise DlmaError("no training prompts left after the split; lower data.eval_fraction or raise data.limit")
    return train, evaluation
