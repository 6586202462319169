"""Stage `round@k` (k > 1): one later round of iterative self-alignment.

    python -m dlma.core.launch -- stages.round --round 2 --plan data/rounds/2.json \
        --previous-model models/dlma --previous-preferences data/preferences.parquet \
        --prompts data/prompts_train.parquet --eval-prompts data/prompts_eval.parquet --model-id data/model.json \
        --sets data/eval_sets.json --agreement reports/agreement.json --agreement-samples reports/agreement_samples.parquet \
        --checkpoints models/checkpoints --out rounds/2 --metrics reports/rounds/2.json

Round k's model is written to <out>/model, its data and reports beside it (dlma/rounds/run.py).
A round past rounds.count writes only <out>/inactive.json and says so in its metrics.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import typer

from dlma.core.config import load_section
from dlma.core.errors import DlmaError
from dlma.core.io import write_json
from dlma.core.parallel import is_main_process
from dlma.core.stage import stage_entry
from dlma.rounds.params import RoundsParams, inactive

log = logging.getLogger(__name__)


@stage_entry
def main(
    round_number: int = typer.Option(..., "--round", help="this round's number (2, 3, ...)"),
    plan: Path = typer.Option(..., help="input: whether this round runs (the plan stage's file for it)"),
    previous_model: Path = typer.Option(..., help="input: round k-1's model folder"),
    previous_preferences: Path = typer.Option(..., help="input: the pairs round k-1 trained on (Parquet)"),
    prompts: Path = typer.Option(..., help="input: training prompts (Parquet)"),
    eval_prompts: Path = typer.Option(..., help="input: held-out prompts (Parquet)"),
    model_id: Path = typer.Option(..., help="input: model identity written by the model stage"),
    sets: Path = typer.Option(..., help="input: evaluation sets' identities from the sets stage"),
    agreement: Path = typer.Option(..., help="input: the agreement stage's summary (JSON)"),
    agreement_samples: Path = typer.Option(..., help="input: the agreement stage's per-pair verdicts (Parquet)"),
    base_answers: Path = typer.Option(None, help="input: the base model's answers to the evaluation prompts (Parquet); "
                                      "without it they are sampled here"),
    checkpoints: Path = typer.Option(..., help="where resumable checkpoints live (one folder per model version)"),
    out: Path = typer.Option(..., help="output: this round's folder (data, model, reports)"),
    metrics: Path = typer.Option(..., help="output: this round's metrics (JSON)"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Round k: round k-1's model samples and scores the pairs, then the round trains and evaluates."""
    rounds = load_section(RoundsParams, "rounds", params_file)
    if not plan.is_file():
        raise DlmaError(f"round plan '{plan}' does not exist; run the plan stage first (dvc repro)")
    if not json.loads(plan.read_text()).get("active"):
        if is_main_process():
            out.mkdir(parents=True, exist_ok=True)
            write_json(inactive(round_number, rounds.count), out / "inactive.json")
            write_json(inactive(round_number, rounds.count), metrics)
        log.info("round %d: not run (rounds.count is %d)", round_number, rounds.count)
        return
    # Imported only for a round that runs: torch, transformers, trl and mlflow take ~8 s to import
    # here, and every `dvc exp run` of a one-round pipeline reruns the inactive rounds (their
    # inputs, the first round's model among them, changed): 13.4 s each before, 0.55 s now (measured).
    from dlma.evaluate.run import EvaluateConfig
    from dlma.rounds.run import RoundConfig, RoundPaths, run_round

    paths = RoundPaths(round_number, previous_model, previous_preferences, prompts, eval_prompts, model_id, sets, agreement,
                       agreement_samples, checkpoints, out, base_answers)
    # Written into a partial folder, renamed when complete: a crash leaves no half round for DVC
    # to cache (a rerun starts the folder again; training resumes from its checkpoints).
    partial = out.with_name(f".{out.name}.partial")
    if is_main_process():
        shutil.rmtree(partial, ignore_errors=True)
    result = run_round(RoundConfig.load(params_file), EvaluateConfig.load(params_file),
                       RoundPaths(**{**paths.__dict__, "out": partial}))
    if is_main_process():
        shutil.rmtree(out, ignore_errors=True)
        partial.rename(out)
        write_json(result, metrics)
    log.info("round %d: %s", round_number, {k: result[k] for k in ("train", "score")})


if __name__ == "__main__":
    typer.run(main)
