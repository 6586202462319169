"""Stage `human`: the human-labelled pairs (`human` params) split into training and
held-out parts, without any pair whose prompt evaluate judges (an evaluation set's, or one
of the pipeline's held-out prompts).

    python -m stages.human --eval-prompts data/prompts_eval.parquet --train data/human_train.parquet --holdout data/human_holdout.parquet --report reports/human.json

The `dpo_human` method trains on the training part (generate.pairs_from: human) and the
`reward` stage fits its reward model on it and measures it on the held-out part. A
missing file with `human.optional: true` gives two empty tables and a report that says
why; the stages that need the pairs then say so.
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl
import typer

from dlma.core.config import load_section
from dlma.core.errors import DlmaError
from dlma.core.io import write_json, write_parquet
from dlma.core.paths import looks_like_path, resolve_source
from dlma.core.stage import stage_entry
from dlma.data.human import empty_pairs, split_human_pairs
from dlma.data.params import HumanParams
from dlma.data.loaders import load_records
from dlma.evaluate.params import EvaluateParams
from dlma.evaluate.sets import evaluation_prompts

log = logging.getLogger(__name__)


@stage_entry
def main(
    eval_prompts: Path = typer.Option(..., help="input: the pipeline's held-out evaluation prompts (their pairs are removed)"),
    train: Path = typer.Option(..., help="output: human-labelled training pairs (Parquet)"),
    holdout: Path = typer.Option(..., help="output: held-out human-labelled pairs (Parquet)"),
    report: Path = typer.Option(..., help="output: counts and skips (JSON metrics)"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Split the human-labelled pairs into training and held-out parts."""
    params = load_section(HumanParams, "human", params_file)
    source = resolve_source(params.source) if params.source else ""
    if not params.source or (looks_like_path(params.source) and not Path(source).is_file()):
        reason = f"human.source {params.source} not found" if params.source else "human.source is empty"
        if params.source and not params.optional:
            raise DlmaError(f"{reason}; give an HH-RLHF / PKU-SafeRLHF / table file, or set human.optional: true")
        log.warning("%s: no human-labelled pairs (dpo_human and the reward stage need them)", reason)
        write_parquet(empty_pairs(), train)
        write_parquet(empty_pairs(), holdout)
        write_json({"skipped": reason, "train_pairs": 0, "holdout_pairs": 0}, report)
        return
    frame, loaded = load_records(source, format=params.format, columns=params.columns, pku_label=params.pku_label,
                                 hint="human.columns", source_key="human.source")
    exclude = evaluation_prompts(load_section(EvaluateParams, "evaluate", params_file))
    if not eval_prompts.is_file():
        raise DlmaError(f"evaluation prompts '{eval_prompts}' do not exist; run the prepare stage first")
    heldout = set(pl.read_parquet(eval_prompts, columns=["prompt"])["prompt"].to_list())
    train_pairs, holdout_pairs, summary = split_human_pairs(frame, exclude, params, params.source, heldout_prompts=heldout)
    summary["skipped"] |= loaded.skipped
    summary["rows_read"] = loaded.rows_read
    write_parquet(train_pairs, train)
    write_parquet(holdout_pairs, holdout)
    write_json(summary, report)
    log.info("human pairs: %s", summary)


if __name__ == "__main__":
    typer.run(main)
