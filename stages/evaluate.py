"""Stage `evaluate`: is the aligned model better than the base model, by judges that say how far they can be trusted?

    python -m stages.evaluate --eval-prompts data/prompts_eval.parquet --model-id data/model.json \
        --aligned models/dlma --scored data/scored.parquet --curve reports/plots/train.csv --sets data/eval_sets.json \
        --agreement reports/agreement.json --agreement-samples reports/agreement_samples.parquet \
        --base-answers data/base_answers.parquet --metrics reports/metrics.json --samples reports/eval_samples.parquet \
        --report reports/report.md \
        --score-hist reports/plots/score_hist.csv --win-rate reports/plots/win_rate.csv \
        --figure-score-hist reports/figures/score_hist.png --figure-win-rate reports/figures/win_rate.png \
        --figure-train-curve reports/figures/train_curve.png

What it measures is in dlma/evaluate/run.py; the judges are in dlma/evaluate/judges/.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from dlma.core.parallel import is_main_process
from dlma.core.stage import stage_entry
from dlma.evaluate.run import (
    EvaluateConfig,
    EvaluateInputs,
    EvaluateOutputs,
    evaluate,
    log_evaluation,
    write_outputs,
)

log = logging.getLogger(__name__)


@stage_entry
def main(
    eval_prompts: Path = typer.Option(..., help="input: held-out prompts (Parquet)"),
    model_id: Path = typer.Option(..., help="input: model identity written by the model stage"),
    aligned: Path = typer.Option(..., help="input: the trained model directory"),
    scored: Path = typer.Option(..., help="input: scored pairs, for the score histogram"),
    curve: Path = typer.Option(..., help="input: training curve CSV"),
    sets: Path = typer.Option(None, help="input: evaluation sets' identities from the sets stage (checked when given)"),
    agreement: Path = typer.Option(..., help="input: the agreement stage's summary (JSON), for the report"),
    agreement_samples: Path = typer.Option(..., help="input: the agreement stage's per-pair verdicts (Parquet), the judges' validity"),
    base_answers: Path = typer.Option(None, help="input: the base model's answers (Parquet, the base_answers stage); "
                                      "without it they are sampled here"),
    metrics: Path = typer.Option(..., help="output: headline metrics (JSON)"),
    samples: Path = typer.Option(..., help="output: every prompt, both answers, every verdict (Parquet)"),
    report: Path = typer.Option(..., help="output: the Markdown report"),
    score_hist: Path = typer.Option(..., help="output: score histogram plot data (CSV)"),
    win_rate: Path = typer.Option(..., help="output: win / tie / lose plot data (CSV)"),
    figure_score_hist: Path = typer.Option(..., help="output: score histogram (PNG)"),
    figure_win_rate: Path = typer.Option(..., help="output: win rates (PNG)"),
    figure_train_curve: Path = typer.Option(..., help="output: training curve (PNG)"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Evaluate the aligned model against the base model; report the label agreement beside it."""
    config = EvaluateConfig.load(params_file)
    inputs = EvaluateInputs(eval_prompts, model_id, aligned, scored, curve, agreement, agreement_samples, sets,
                            base_answers=base_answers)
    outputs = EvaluateOutputs(metrics, samples, report, score_hist, win_rate,
                              figure_score_hist, figure_win_rate, figure_train_curve)
    evaluation = evaluate(config, inputs)
    write_outputs(evaluation, inputs, outputs)  # the main process writes (dlma.core.io)
    if not is_main_process():  # in a multi-process run only the main process logs
        return
    run_id = log_evaluation(evaluation, outputs, config, inputs)
    log.info("evaluation logged to MLflow run %s", run_id)
    log.info("win rates: %s; perplexity: %s", evaluation.metrics["win_rate"], evaluation.metrics["perplexity"])


if __name__ == "__main__":
    typer.run(main)
