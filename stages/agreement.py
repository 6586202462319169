"""Stage `agreement`: does each labeller agree with human labels? (the paper's first experiment)

    python -m stages.agreement --model-id data/model.json --sets data/eval_sets.json \
        --metrics reports/agreement.json --samples reports/agreement_samples.parquet

Labellers: the contrastive score, likelihood and the A/B judge (base model), the reward
model (evaluate.reward_model) and a second judge model (evaluate.judge_model) when set.
What it measures is in dlma/agreement/measure.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from dlma.agreement.run import AgreementConfig, measure_agreement, write_agreement
from dlma.core.stage import stage_entry

log = logging.getLogger(__name__)


@stage_entry
def main(
    model_id: Path = typer.Option(..., help="input: model identity written by the model stage"),
    sets: Path = typer.Option(None, help="input: evaluation sets' identities from the sets stage (checked when given)"),
    metrics: Path = typer.Option(..., help="output: accuracy of every labeller per set, paired differences (JSON)"),
    samples: Path = typer.Option(..., help="output: every labelled pair with each labeller's verdict (Parquet)"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Measure every labeller's agreement with the human labels of the configured pair sets."""
    config = AgreementConfig.load(params_file)
    results, rows = measure_agreement(config, model_id, sets)
    write_agreement(results, rows, metrics, samples)  # the main process writes (dlma.core.io)
    log.info("agreement written to %s (%d pairs)", metrics, rows.height)


if __name__ == "__main__":
    typer.run(main)
