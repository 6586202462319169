"""Stage `reward`: fit the reward-model judge on the human stage's training pairs (trl's
RewardTrainer) and measure its accuracy on the held-out pairs.

    python -m stages.reward --train data/human_train.parquet --holdout data/human_holdout.parquet \
        --out models/reward --report reports/reward.json

With no human pairs (an optional human.source that is missing) it writes a folder that
holds only a card saying so; evaluate's reward_model judge then reports itself skipped.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import polars as pl
import typer

from dlma.core.config import load_section
from dlma.core.io import write_json
from dlma.core.stage import stage_entry
from dlma.model import ModelParams, resolve_model, stage_dtype
from dlma.reward.params import RewardParams
from dlma.reward.run import REWARD_CARD, train_reward

log = logging.getLogger(__name__)


@stage_entry
def main(
    train: Path = typer.Option(..., help="input: human-labelled training pairs (Parquet)"),
    holdout: Path = typer.Option(..., help="input: held-out human-labelled pairs (Parquet)"),
    out: Path = typer.Option(..., help="output: reward model folder (safetensors)"),
    report: Path = typer.Option(..., help="output: training and held-out accuracy (JSON metrics)"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Train the reward model on human labels; report its held-out accuracy."""
    params = load_section(RewardParams, "reward", params_file)
    model_params = load_section(ModelParams, "model", params_file)
    base = params.model or model_params.base
    train_pairs = pl.read_parquet(train)
    if train_pairs.height == 0:
        log.warning("reward: no human-labelled pairs; the reward_model judge will report itself skipped")
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        (out / REWARD_CARD).write_text(json.dumps({"skipped": "no human-labelled pairs (see reports/human.json)"}) + "\n")
        write_json({"skipped": "no human-labelled pairs"}, report)
        return
    resolved = resolve_model(base)
    card = {"base": base, "base_sha256": resolved.sha256, "objective": "Bradley-Terry (trl RewardTrainer)"}
    numerics = stage_dtype(model_params, "reward.dtype", params.dtype)
    summary = train_reward(params, resolved.path, train_pairs, pl.read_parquet(holdout), out, card, numerics)
    write_json(summary, report)
    log.info("reward model: %s", summary)


if __name__ == "__main__":
    typer.run(main)
