"""The prompt sets and human-labelled pair sets that `evaluate` reads, as configured."""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from dlma.core.errors import DlmaError
from dlma.data.loaders import load_records
from dlma.evaluate.params import EvaluateParams

log = logging.getLogger(__name__)
HARMFUL_CATEGORIES = {"harmful", "unsafe"}
SAFE_CATEGORIES = {"helpful", "borderline", "safe"}


def missing_local_file(source: str) -> bool:
    """A file path (not a hub id) that is not there: the set is skipped and reported."""
    return source.lower().endswith((".jsonl", ".gz", ".csv", ".parquet", ".json")) and not Path(source).expanduser().exists()


def _with_harm(frame: pl.DataFrame, name: str, kind: str, limit: int | None) -> pl.DataFrame:
    frame = frame.head(limit) if limit else frame
    category = frame["category"].str.to_lowercase()
    if kind == "mixed":
        harm = pl.when(category.is_in(list(HARMFUL_CATEGORIES))).then(pl.lit("harmful")).when(
            category.is_in(list(SAFE_CATEGORIES))).then(pl.lit("safe")).otherwise(pl.lit("unknown"))
    else:
        harm = pl.lit(kind)
    return frame.select("id", "prompt", "category").with_columns(pl.lit(name).alias("set"), harm.alias("harm"))


def prompt_sets(eval_prompts: Path, params: EvaluateParams) -> tuple[pl.DataFrame, dict[str, str]]:
    """Held-out prompts plus extra sets, with a `harm` label (harmful / safe / unknown);
    and the sets skipped because their file is missing, with the reason."""
    frames = [_with_harm(pl.read_parquet(eval_prompts), "heldout", "mixed", params.limit)]
    skipped = {}
    for spec in params.prompt_sets:
        if missing_local_file(spec.source):
            skipped[spec.name] = f"{spec.source} not found"
            log.warning("prompt set %s skipped: %s not found", spec.name, spec.source)
            continue
        records, _ = load_records(spec.source, format=spec.format, columns=spec.columns)
        frames.append(_with_harm(records, spec.name, spec.kind, params.limit))
    prompts = pl.concat(frames, how="vertical")
    if prompts.height == 0:
        raise DlmaError("no evaluation prompts: the held-out split is empty and no prompt set was loaded")
    return prompts, skipped


def agreement_sets(params: EvaluateParams) -> tuple[dict[str, pl.DataFrame], dict[str, str]]:
    """Each configured labelled set (capped at evaluate.limit rows), and the skipped ones."""
    loaded, skipped = {}, {}
    for spec in params.agreement_sets:
        if missing_local_file(spec.source):
            skipped[spec.name] = f"{spec.source} not found"
            log.warning("agreement set %s skipped: %s not found", spec.name, spec.source)
            continue
        frame, _ = load_records(spec.source, format=spec.format, columns=spec.columns, pku_label=spec.pku_label)
        if "chosen" not in frame.columns:
            raise DlmaError(f"agreement set '{spec.name}' ({spec.source}) has no chosen/rejected fields; map them with columns")
        loaded[spec.name] = frame.head(params.limit) if params.limit else frame
    return loaded, skipped
