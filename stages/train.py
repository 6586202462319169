"""Stage `train`: DLMA margin-DPO of the base model on the preference pairs.

    python -m stages.train --preferences data/preferences.parquet --model-id data/model.json \
        --out models/dlma --report reports/train.json --curve reports/plots/train.csv

Checkpoints go to models/checkpoints/<version>/ (not a DVC output, so a killed run
resumes there on the next `dvc repro`); everything is logged to the repository's MLflow
store in one run per pipeline version, and the model is registered there.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import polars as pl
import typer

from dlma import tracking
from dlma.errors import DlmaError
from dlma.io import write_csv, write_json
from dlma.mlflow_model import MODEL_CARD, PREDICT_SIGNATURE, AlignedModel
from dlma.modelio import resolve_device
from dlma.params import ModelParams, PromptsParams, TrackingParams, TrainParams, flatten, load_section, read_params_file
from dlma.stage import stage_entry
from dlma.stagemodel import load_checked
from dlma.train_data import add_reference_logps, check_preferences, tokenise_preferences
from dlma.training import curve_rows, final_metrics, train

log = logging.getLogger(__name__)


def save_model(trainer, tokenizer, card: dict, out: Path) -> None:
    """Write adapter (or full model), tokenizer and card to `out` atomically."""
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / MODEL_CARD).write_text(json.dumps(card, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


@stage_entry
def main(
    preferences: Path = typer.Option(..., help="input: preference pairs (Parquet)"),
    model_id: Path = typer.Option(..., help="input: model identity written by the model stage"),
    out: Path = typer.Option(..., help="output: the trained adapter (or model) directory"),
    report: Path = typer.Option(..., help="output: final training metrics (JSON)"),
    curve: Path = typer.Option(..., help="output: per-step training curve (CSV)"),
    checkpoints: Path = typer.Option(Path("models/checkpoints"), help="where resumable checkpoints live"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Train the base model with the DLMA loss and log the run and model to MLflow."""
    import mlflow

    model_params = load_section(ModelParams, "model", params_file)
    prompt_params = load_section(PromptsParams, "prompts", params_file)
    params = load_section(TrainParams, "train", params_file)
    tracking_params = load_section(TrackingParams, "tracking", params_file)
    if not preferences.is_file():
        raise DlmaError(f"preference file '{preferences}' does not exist; run the filter stage first")
    frame = pl.read_parquet(preferences)
    has_reference = check_preferences(frame, str(preferences))

    # Weights stay float32 (optimiser master copy); train.dtype=bfloat16 trains under autocast.
    model, tokenizer, resolved = load_checked(model_params, model_id, "float32", "eager")
    rows, data_report = tokenise_preferences(frame, tokenizer, prompt_params, max_length=params.max_length)
    if not has_reference:
        log.info("no reference log-probs in %s: computing them once, before training", preferences)
        add_reference_logps(rows, model, tokenizer, batch_size=params.batch_size * 2)

    root = tracking.repository_root()
    version = tracking.version_id({
        "model": resolved.sha256, "preferences": tracking.file_sha256(preferences),
        "train": params.__dict__, "bare": [prompt_params.bare, prompt_params.bare_tag],
    })
    checkpoint_dir = checkpoints / version
    experiment_id = tracking.configure(tracking_params, root)
    tags = {"dlma.stage": "train", "mlflow.source.git.commit": tracking.git_commit(root) or "unknown"}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.experiment"] = os.environ["DVC_EXP_NAME"]

    with tracking.start_version_run(experiment_id, version, f"dlma-{version[:8]}", tags) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in flatten(read_params_file(params_file)).items()})
        mlflow.log_input(
            mlflow.data.from_polars(frame.select("id", "prompt", "chosen", "rejected", "margin"), source=str(preferences), name="preferences"),
            context="training",
        )
        device = resolve_device(model_params.device)
        trainer, summary = train(model, tokenizer, rows, params, checkpoint_dir, device)
        summary.update(final_metrics(trainer))
        summary.update(data_report)
        summary["version"] = version
        card = {
            "base": model_params.base, "base_sha256": resolved.sha256, "peft": params.peft,
            "bare": prompt_params.bare, "bare_tag": prompt_params.bare_tag, "version": version,
        }
        save_model(trainer, tokenizer, card, out)
        write_csv(pl.DataFrame(curve_rows(trainer.state.log_history), infer_schema_length=None), curve)
        write_json(summary, report)
        mlflow.log_metrics({f"final/{k}": float(v) for k, v in summary.items() if isinstance(v, (int, float))})
        mlflow.log_artifact(str(report))
        mlflow.log_artifact(str(curve))
        mlflow.pyfunc.log_model(
            name="model", python_model=AlignedModel(), artifacts={"model": str(out)}, signature=PREDICT_SIGNATURE,
            registered_model_name=tracking_params.model_name, pip_requirements=["dlma"],
            tags={tracking.VERSION_TAG: version},
        )
        log.info("MLflow run %s (version %s) in %s", run.info.run_id, version, mlflow.get_tracking_uri())
    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # finished: nothing left to resume
    log.info("train: %s", summary)


if __name__ == "__main__":
    typer.run(main)
