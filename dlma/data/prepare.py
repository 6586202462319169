"""Prompts for the pipeline: drop empty and duplicate prompts (counted), cap, split train/eval."""

from __future__ import annotations

import hashlib

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
    if unique["id"].n_unique() != unique.height:
        # Ids must be unique keys through the pipeline; derive stable ones from the text.
        unique = unique.with_columns(
            pl.col("prompt").map_elements(lambda p: hashlib.sha1(p.encode()).hexdigest()[:12], return_dtype=pl.String).alias("id")
        )
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
