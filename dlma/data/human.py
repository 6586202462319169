"""Human-labelled preference pairs for training: the `dpo_human` method trains on them and
the `reward` stage fits its reward model on them (the `human` params section).

Pairs whose prompt is also in an evaluation set are removed first (counted), so no judge
is checked on pairs it was trained on; the rest are shuffled by a seeded hash of their
id (stable across library versions) and split into a training part and a held-out part
on which the reward model's accuracy is measured.
"""

from __future__ import annotations

import hashlib
import polars as pl

from dlma.core.errors import DlmaError
from dlma.data.params import HumanParams

HUMAN_COLUMNS = ("id", "prompt", "category", "pair", "chosen", "rejected")
HUMAN_SCHEMA = {name: pl.String for name in HUMAN_COLUMNS}


def empty_pairs() -> pl.DataFrame:
    return pl.DataFrame(schema=HUMAN_SCHEMA)


def shuffle_key(seed: int, row_id: str) -> str:
    return hashlib.sha256(f"{seed}:{row_id}".encode()).hexdigest()


def split_human_pairs(frame: pl.DataFrame, evaluation_prompts: set[str], params: HumanParams,
                      source: str, heldout_prompts: set[str] = frozenset()) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """(training pairs, held-out pairs, report). Identical answers carry no label, and a
    prompt that evaluate judges (in an evaluation set, or among the pipeline's own held-out
    prompts: when data.source is the file human.source reads, the paper's setup) would give
    the reward-model judge human labels for the very prompts it judges: all are dropped and
    counted. The held-out share is at least one pair."""
    if "chosen" not in frame.columns or "rejected" not in frame.columns:
        raise DlmaError(f"human.source '{source}' has no chosen/rejected fields; map them with human.columns")
    identical = frame.filter(pl.col("chosen") == pl.col("rejected")).height
    in_evaluation = frame.filter(pl.col("prompt").is_in(sorted(evaluation_prompts))).height
    in_heldout = frame.filter(pl.col("prompt").is_in(sorted(set(heldout_prompts) - set(evaluation_prompts)))).height
    judged = sorted(set(evaluation_prompts) | set(heldout_prompts))
    usable = frame.filter((pl.col("chosen") != pl.col("rejected")) & ~pl.col("prompt").is_in(judged))
    usable = usable.with_columns(pl.Series("_key", [shuffle_key(params.seed, i) for i in usable["id"]], dtype=pl.String))
    usable = usable.sort("_key").drop("_key")
    if params.limit is not None:
        usable = usable.head(params.limit)
    if usable.height < 2:
        raise DlmaError(f"human.source '{source}': {usable.height} usable pair(s) after dropping {identical} identical, "
                        f"{in_evaluation} in evaluation sets and {in_heldout} among the held-out prompts; at least 2 are "
                        "needed (one to train, one to hold out)")
    held = max(1, round(usable.height * params.holdout_fraction))
    usable = usable.with_columns(pl.lit(params.pair).alias("pair")).select(HUMAN_COLUMNS)
    report = {"source": source, "rows_read": frame.height, "train_pairs": usable.height - held, "holdout_pairs": held,
              "skipped": {"identical_answers": identical, "prompt_in_evaluation_sets": in_evaluation,
                          "prompt_in_heldout_prompts": in_heldout}}
    return usable.tail(usable.height - held), usable.head(held), report
