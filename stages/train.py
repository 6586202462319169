"""Stage `train`: DLMA margin-DPO of the base model on the preference pairs.

    python -m stages.train --preferences data/preferences.parquet --model-id data/model.json \
        --out models/dlma --checkpoints models/checkpoints --report reports/train.json --curve reports/plots/train.csv

Under `run.processes` > 1 it trains data-parallel (DDP through the Trainer); the global
batch is processes x train.batch_size x gradient_accumulation_steps.
Checkpoints go to models/checkpoints/<version>/ (not a DVC output, so a killed run
resumes there on the next `dvc repro`); everything is logged to the repository's MLflow
store in one run per pipeline version, and the model is registered there.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path

import polars as pl
import torch
import typer

from dlma.core.config import flatten, load_section, read_params_file
from dlma.core.errors import DlmaError
from dlma.core.hashing import file_sha256
from dlma.core.io import write_csv, write_json
from dlma.core.parallel import is_main_process
from dlma.core.paths import repository_root
from dlma.core.stage import stage_entry
from dlma.generate.params import GenerateParams
from dlma.lm.params import PromptsParams
from dlma.model import MODEL_CARD, ModelParams, load_checked, resolve_device, stage_dtype
from dlma.tracking import store
from dlma.tracking.params import TrackingParams
from dlma.tracking.pyfunc import predict_signature
from dlma.train.data import (
    add_reference_logps,
    check_preferences,
    check_reference_numerics,
    tokenise_preferences,
)
from dlma.train.params import TrainParams
from dlma.train.run import check_lora_targets, curve_rows, final_metrics, hold_version_lock, save_model, train

log = logging.getLogger(__name__)


@stage_entry
def main(
    preferences: Path = typer.Option(..., help="input: preference pairs (Parquet)"),
    model_id: Path = typer.Option(..., help="input: model identity written by the model stage"),
    out: Path = typer.Option(..., help="output: the trained adapter (or model) directory"),
    report: Path = typer.Option(..., help="output: final training metrics (JSON)"),
    curve: Path = typer.Option(..., help="output: per-step training curve (CSV)"),
    checkpoints: Path = typer.Option(..., help="where resumable checkpoints live (one folder per pipeline version)"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Train the base model with the DLMA loss and log the run and model to MLflow."""
    import mlflow

    model_params, prompt_params = load_section(ModelParams, "model", params_file), load_section(PromptsParams, "prompts", params_file)
    params, tracking_params = load_section(TrainParams, "train", params_file), load_section(TrackingParams, "tracking", params_file)
    generate_params = load_section(GenerateParams, "generate", params_file)
    if not preferences.is_file():
        raise DlmaError(f"preference file '{preferences}' does not exist; run the filter stage first")
    frame = pl.read_parquet(preferences)
    has_reference = check_preferences(frame, str(preferences))
    # Weights stay float32 (optimiser master copy); train.dtype=bfloat16 trains under autocast.
    numerics = stage_dtype(model_params, "train.dtype", params.dtype)
    params = dataclasses.replace(params, dtype=numerics.name)  # `auto` resolved: the trainer sees what runs
    model, tokenizer, resolved = load_checked(model_params, model_id, stage_dtype(model_params, "train (master weights)", "float32"), "eager")
    check_lora_targets(model, params)
    rows, data_report = tokenise_preferences(frame, tokenizer, prompt_params, max_length=params.max_length)
    autocast = numerics.dtype if numerics.dtype != torch.float32 else None
    if autocast is not None:
        # Reduced precision: the policy's step-0 log-probs under autocast differ from score's
        # float32 ones by up to ~0.6 nats per response (SmolLM2, bf16, 44-token answers:
        # README). DPO's log-ratios must start at 0, so the reference is computed in the
        # numerics the policy trains in, as trl's reference model is; score stays float32,
        # which keeps the self-rewarding score's sign faithful.
        log.info("train.dtype=%s: reference log-probs recomputed in it, once, before training", numerics.name)
        moved = add_reference_logps(rows, model, tokenizer, batch_size=params.batch_size * 2, autocast_dtype=autocast)
        data_report["reference_logps"] = {"source": f"recomputed ({numerics.name} autocast)", "moved_from_stored": moved}
    elif not has_reference:
        log.info("no reference log-probs in %s: computing them once, before training", preferences)
        add_reference_logps(rows, model, tokenizer, batch_size=params.batch_size * 2)
        data_report["reference_logps"] = {"source": "computed (float32)"}
    else:
        data_report["reference_logps"] = {"source": "stored by score"}
    gap = check_reference_numerics(rows, model, tokenizer, pairs=4, tolerance=params.reference_tolerance, autocast_dtype=autocast)
    log.info("reference log-probs match the policy at step 0 (largest gap %.2e nats)", gap)

    root = repository_root()
    version = store.version_id({"model": resolved.sha256, "preferences": file_sha256(preferences),
                                "train": params.__dict__, "bare": [prompt_params.bare, prompt_params.bare_tag]})
    lock = hold_version_lock(checkpoints, version)  # noqa: F841 (held until the stage ends)
    device = resolve_device(model_params.device)
    # What `dlma export` and the served model need to know: how prompts were formatted, how the
    # pipeline sampled, and what the model was trained on (the training data's digest) and how.
    card = {"base": model_params.base, "base_sha256": resolved.sha256, "peft": params.peft, "bare": prompt_params.bare,
            "bare_tag": prompt_params.bare_tag, "version": version, "generate": dataclasses.asdict(generate_params),
            "train": dataclasses.asdict(params), "preferences_sha256": file_sha256(preferences), "pairs": frame.height}
    if not is_main_process():
        # Data-parallel run (DDP, FSDP, ZeRO): every process trains its share of each global
        # batch and joins the final metrics and the model save; only the main process logs
        # to MLflow and writes the model, the reports and the registry.
        trainer, _, _ = train(model, tokenizer, rows, params, checkpoints / version, device)
        final_metrics(trainer, params)
        save_model(trainer, tokenizer, card, out, MODEL_CARD)
        return
    experiment_id = store.configure(tracking_params, root)
    with store.start_version_run(experiment_id, version, f"dlma-{version[:8]}", {"dlma.stage": "train", **store.run_tags(root, tracking_params.group)}) as run:
        store.log_run_params(run.info.run_id, {k: str(v)[:500] for k, v in flatten(read_params_file(params_file)).items()})
        mlflow.log_input(mlflow.data.from_polars(frame.select("id", "prompt", "chosen", "rejected", "margin"),
                                                 source=str(preferences), name="preferences"), context="training")
        trainer, summary, timings = train(model, tokenizer, rows, params, checkpoints / version, device)
        summary |= final_metrics(trainer, params) | data_report | {"version": version, "numerics": {numerics.key: numerics.record()}}
        save_model(trainer, tokenizer, card, out, MODEL_CARD)
        write_csv(pl.DataFrame(curve_rows(trainer.state.log_history), infer_schema_length=None), curve)
        write_json(summary, report)
        mlflow.log_metrics({f"final/{k}": float(v) for k, v in summary.items() if isinstance(v, (int, float))})
        mlflow.log_metrics({f"timing/{k}": float(v) for k, v in timings.items()})  # not in train.json: see train()
        mlflow.log_artifact(str(report))
        mlflow.log_artifact(str(curve))
        store.log_trained_model(out, model_name=tracking_params.model_name, version=version, signature=predict_signature(generate_params),
                                aliases=store.run_aliases(run.info.run_name, os.environ.get("DVC_EXP_NAME")))
        log.info("MLflow run %s (version %s) in %s", run.info.run_id, version, mlflow.get_tracking_uri())
    store.replace_version_runs(experiment_id, version, keep_run_id=run.info.run_id)  # only now that it finished
    shutil.rmtree(checkpoints / version, ignore_errors=True)  # finished: nothing left to resume
    log.info("train: %s; timings: %s", summary, timings)


if __name__ == "__main__":
    typer.run(main)
