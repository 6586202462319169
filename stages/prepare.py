"""Stage `prepare`: load the prompt source, drop empty/duplicate prompts, split train/eval.

    python -m stages.prepare --train data/prompts_train.parquet --eval data/prompts_eval.parquet --report reports/prepare.json

The evaluation prompts are set aside here, by a seeded split, so no training stage sees them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from dlma.core.config import load_section
from dlma.core.io import write_json, write_parquet
from dlma.core.paths import resolve_source
from dlma.core.stage import stage_entry
from dlma.data.loaders import load_records
from dlma.data.params import DataParams
from dlma.data.prepare import prepare_prompts

log = logging.getLogger(__name__)


@stage_entry
def main(
    train: Path = typer.Option(..., help="output: training prompts (Parquet)"),
    eval: Path = typer.Option(..., help="output: held-out evaluation prompts (Parquet)"),
    report: Path = typer.Option(..., help="output: counts of what was read and dropped (JSON)"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Load prompts from `data.source` and split them into training and evaluation sets."""
    params = load_section(DataParams, "data", params_file)
    records, load_report = load_records(
        resolve_source(params.source), format=params.format, columns=params.columns, split=params.split,
        pku_label=params.pku_label,
    )
    train_frame, eval_frame = prepare_prompts(
        records, load_report, limit=params.limit, eval_fraction=params.eval_fraction, seed=params.seed
    )
    write_parquet(train_frame, train)
    write_parquet(eval_frame, eval)
    summary = {
        "source": params.source,
        "format": load_report.format,
        "rows_read": load_report.rows_read,
        "skipped": load_report.skipped,
        "train_prompts": train_frame.height,
        "eval_prompts": eval_frame.height,
    }
    write_json(summary, report)
    log.info("%s", summary)


if __name__ == "__main__":
    typer.run(main)
