"""Stage `truth`: label agreement against the true reward on the pipeline's own generated
pairs (experiment 1 of the controlled task; dlma/truth/agreement.py).

    python -m stages.truth --scored data/scored.parquet --model-id data/model.json \
        --metrics reports/truth.json --samples reports/truth_samples.parquet

It writes a report that says why it skipped, and an empty table, when the objective has no
true reward (`truth.reward: ""`, the harmlessness default) or the pairs carry no
contrastive score (score.labeller is not contrastive: the oracle and RLAIF runs of a
comparison; their pairs' agreement is measured in the dlma run with the same pairs).
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl
import typer

from dlma.core.config import load_section
from dlma.core.io import write_json, write_parquet
from dlma.core.stage import stage_entry
from dlma.lm.params import PromptsParams
from dlma.model import ModelParams, load_checked, stage_dtype
from dlma.reward.params import RewardParams
from dlma.score.params import ScoreParams
from dlma.truth import true_reward
from dlma.truth.agreement import true_agreement
from dlma.truth.params import TruthParams

log = logging.getLogger(__name__)


@stage_entry
def main(
    scored: Path = typer.Option(..., help="input: the score stage's table (Parquet)"),
    model_id: Path = typer.Option(..., help="input: model identity written by the model stage"),
    metrics: Path = typer.Option(..., help="output: each labeller's agreement with the true reward (JSON metrics)"),
    samples: Path = typer.Option(..., help="output: every pair with its true rewards and each labeller's verdict (Parquet)"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Measure every labeller against the true reward on the generated pairs."""
    params = load_section(TruthParams, "truth", params_file)
    score = load_section(ScoreParams, "score", params_file)
    skipped = ("truth.reward is empty: this objective has no true reward" if not params.reward else
               f"score.labeller is {score.labeller}, not contrastive: the pairs carry no self-rewarding score"
               if score.labeller != "contrastive" else None)
    if skipped:
        log.info("truth: skipped (%s)", skipped)
        write_parquet(pl.DataFrame(schema={"id": pl.String}), samples)
        write_json({"skipped": skipped}, metrics)
        return
    model_params = load_section(ModelParams, "model", params_file)
    reward_params = load_section(RewardParams, "reward", params_file)
    numerics = stage_dtype(model_params, "score.dtype", score.dtype)
    model, tokenizer, resolved = load_checked(model_params, model_id, numerics, score.attn_implementation)
    summary, rows = true_agreement(model, tokenizer, pl.read_parquet(scored), true_reward(params.reward),
                                   load_section(PromptsParams, "prompts", params_file), score, reward_params, params,
                                   resolved.path, stage_dtype(model_params, "reward.dtype", reward_params.dtype))
    write_parquet(rows, samples)
    write_json(summary, metrics)
    log.info("truth: agreement with the true order: %s",
             {k: round(summary[k]["accuracy"], 3) for k in ("contrastive", "likelihood", "ab_judge", "reward_model") if k in summary})


if __name__ == "__main__":
    typer.run(main)
