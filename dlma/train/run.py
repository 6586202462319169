"""Configure and run MarginDPOTrainer: its config from params, LoRA, checkpoints, curves."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from dlma.core.errors import DlmaError
from dlma.core.parallel import is_main_process, world_size
from dlma.train.loss import dpo_logratio_difference
from dlma.train.params import TrainParams
from dlma.train.trainer import (
    MarginDPOConfig,
    MarginDPOTrainer,
    MarginPreferenceCollator,
    sequence_logps,
)

log = logging.getLogger(__name__)

CURVE_KEYS = (
    "loss", "learning_rate", "grad_norm", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
    "rewards/margins", "logps/chosen", "logps/rejected", "self_reward/margin",
)


def per_process_batch(batch_size: int, processes: int) -> int:
    """train.batch_size is the batch of one step over all processes, so `run.processes`
    changes where the work runs, never what is computed (HF's per-device batch would grow
    the global batch with the process count)."""
    if batch_size % processes:
        raise DlmaError(f"train.batch_size={batch_size} must be a multiple of run.processes={processes}: "
                        "it is the batch of one step over all processes")
    return batch_size // processes


def trainer_config(params: TrainParams, output_dir: Path, device: torch.device) -> MarginDPOConfig:
    """Every train param, loss params included, goes to the trainer through this config."""
    per_process = per_process_batch(params.batch_size, world_size())
    return MarginDPOConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=per_process,
        per_device_eval_batch_size=per_process,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        learning_rate=params.learning_rate,
        optim=params.optimizer,
        lr_scheduler_type=params.lr_scheduler,
        warmup_steps=params.warmup_steps,
        num_train_epochs=params.epochs,
        max_steps=params.max_steps,
        max_grad_norm=params.max_grad_norm,
        gradient_checkpointing=params.gradient_checkpointing,
        beta=params.beta,
        dlma_loss=params.loss,
        margin_weight=params.margin_weight,
        margin_min=params.margin_min,
        margin_max=params.margin_max,
        seed=params.seed,
        data_seed=params.seed,
        logging_steps=1,
        save_strategy="steps",
        save_steps=params.save_steps,
        save_total_limit=2,
        report_to="none",  # MLflow is logged by CurveLogger into the pipeline version's run
        remove_unused_columns=False,
        precompute_ref_log_probs=True,  # they are in the data: no reference model is built
        use_cpu=device.type == "cpu",
        bf16=params.dtype == "bfloat16",
        fp16=params.dtype == "float16",
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def lora_config(params: TrainParams):
    if params.peft == "none":
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=params.lora_r, lora_alpha=params.lora_alpha, lora_dropout=params.lora_dropout,
        target_modules=list(params.lora_target_modules), task_type="CAUSAL_LM",
    )


def check_lora_targets(model, params: TrainParams) -> None:
    """Every train.lora_target_modules entry must name modules of the model (peft matches a
    name or the end of a dotted name), checked before training starts: peft's own error
    comes as a traceback once the trainer is built."""
    if params.peft != "lora" or list(params.lora_target_modules) == ["all-linear"]:
        return
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in params.lora_target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise DlmaError(f"train.lora_target_modules: {', '.join(repr(t) for t in missing)} not in the model; its linear "
                        f"layers are {', '.join(linear)} (or use [all-linear])")


def restore_lora_dropout(model, probability: float) -> int:
    """trl's `disable_dropout` (the DPO convention, kept for the base model) also zeroes the
    LoRA adapter's dropout; give `train.lora_dropout` back to the adapter. Returns how many
    dropout layers it set."""
    count = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Dropout) and ".lora_dropout." in f".{name}.":
            module.p = probability
            count += 1
    return count


def hold_version_lock(checkpoints: Path, version: str):
    """One `train` of a pipeline version at a time (the main process holds it; the kernel
    drops it when the process dies): a second one, e.g. a rerun while an orphaned stage of a
    killed `dvc` still trains, would resume the same MLflow run and register the model twice.
    Keep the returned lock referenced while training."""
    from filelock import FileLock, Timeout

    if int(os.environ.get("RANK", "0")) != 0:
        return None
    directory = checkpoints / version  # removed with the checkpoints when the version is done
    directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(directory / ".train.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise DlmaError(f"another train of pipeline version {version} is running (it holds {lock.lock_file}); "
                        "wait for it or stop it, then run again") from None
    return lock


def latest_checkpoint(directory: Path) -> Path | None:
    found = [p for p in directory.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name) and (p / "trainer_state.json").is_file()]
    return max(found, key=lambda p: int(p.name.split("-")[1])) if found else None


class CurveLogger(TrainerCallback):
    """Send each logged step to the active MLflow run (trl's metric names)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        mlflow = sys.modules.get("mlflow")  # not imported means no run is active
        if not logs or mlflow is None or mlflow.active_run() is None:
            return
        metrics = {k: float(v) for k, v in logs.items() if k in CURVE_KEYS and isinstance(v, (int, float)) and math.isfinite(v)}
        if metrics:
            mlflow.log_metrics(metrics, step=state.global_step)


def curve_rows(log_history: list[dict]) -> list[dict]:
    """One row per optimiser step with the curve keys (the trainer's log history, which
    survives a resume)."""
    rows = []
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            rows.append({"step": entry["step"], **{k: entry.get(k) for k in CURVE_KEYS}})
    return rows


def train(model, tokenizer, rows: list[dict], params: TrainParams, checkpoint_dir: Path, device: torch.device,
          callbacks: list | None = None) -> tuple[MarginDPOTrainer, dict, dict]:
    """Train (resuming from the last checkpoint in checkpoint_dir). Returns the trainer,
    a summary that depends only on the inputs, and the wall-clock timings (kept apart:
    they must not make an output of a pipeline version differ between identical runs)."""
    from datasets import Dataset

    dataset = Dataset.from_list(rows)
    trainer = MarginDPOTrainer(
        model=model,
        args=trainer_config(params, checkpoint_dir, device),
        train_dataset=dataset,
        processing_class=tokenizer,
        data_collator=MarginPreferenceCollator(tokenizer.pad_token_id),
        # A model that has its adapter already (a later round training on) trains that adapter.
        peft_config=None if hasattr(model, "peft_config") else lora_config(params),
        callbacks=[CurveLogger(), *(callbacks or [])],
    )
    restore_lora_dropout(trainer.model, params.lora_dropout)
    kind = trainer.accelerator.distributed_type.value
    log.info("training on %d process(es): %s", trainer.accelerator.num_processes, kind)
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and kind != "FSDP":
        # accelerate (1.x) shards with FSDP on accelerators only; on CPU it runs DDP instead.
        log.warning("run.accelerate_config asks for FSDP, but accelerate runs FSDP on GPUs (and other accelerators) "
                    "only: this run is %s, every process holding the whole model", kind)
    resume = latest_checkpoint(checkpoint_dir)
    if resume is not None:
        log.info("resuming from %s", resume)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    elapsed = time.perf_counter() - started
    resumed_from = int(resume.name.split("-")[1]) if resume else 0
    curve_losses = [row["loss"] for row in curve_rows(trainer.state.log_history)]
    # From the logged curve (it survives a resume), not the trainer's running total (it does not).
    # How the processes shared the work (DDP, FSDP, DeepSpeed or one process): what ran, as
    # accelerate set it up from run.launcher / run.accelerate_config.
    parallel = {"processes": trainer.accelerator.num_processes, "type": trainer.accelerator.distributed_type.value}
    summary = {"steps": trainer.state.global_step, "pairs": len(dataset),
               "train_loss_mean": sum(curve_losses) / len(curve_losses) if curve_losses else result.training_loss,
               "parallel": parallel}
    timings = {"train_seconds": elapsed, "seconds_per_step": elapsed / max(trainer.state.global_step - resumed_from, 1),
               "resumed_from_step": resumed_from}
    return trainer, summary, timings


def final_metrics(trainer: MarginDPOTrainer, params: TrainParams) -> dict:
    """With `train.final_metrics`, loss, reward margin and accuracy over the whole training set
    with the final weights; else nothing. The pass is a forward over every pair (24 s after 150 s
    of training on the controlled preset's 128 pairs, 2 CPU cores), and trl's per-step curve
    already shows how training went, so it is opt-in. In a multi-process run every process must
    call it: each runs its shard through the wrapped model (a sharded FSDP / ZeRO model needs
    all of them) and gather_for_metrics brings every pair, once, to every process."""
    return final_pass_metrics(trainer) if params.final_metrics else {}


@torch.no_grad()
def final_pass_metrics(trainer: MarginDPOTrainer) -> dict:
    """Loss, reward margin and accuracy over the whole training set with the final weights."""
    trainer.model.eval()
    losses, accuracies, margins, count = 0.0, 0.0, 0.0, 0
    for batch in trainer.get_train_dataloader():
        inputs = trainer._prepare_inputs(batch)
        logps = sequence_logps(trainer.model_wrapped, inputs)
        pair_losses, chosen, rejected = trainer.per_pair_loss(inputs, logps)
        delta = dpo_logratio_difference(chosen, rejected, inputs["ref_chosen_logps"], inputs["ref_rejected_logps"])
        # Drops the pairs accelerate repeated to even out the processes' last batches.
        pair_losses, reward_margin = trainer.accelerator.gather_for_metrics((pair_losses, trainer.args.beta * delta))
        losses += float(pair_losses.sum())
        accuracies += float((reward_margin > 0).sum())
        margins += float(reward_margin.sum())
        count += pair_losses.numel()
    return {"final_loss": losses / count, "reward_accuracy": accuracies / count, "reward_margin": margins / count, "pairs": count}


def sharded(trainer) -> bool:
    """FSDP / DeepSpeed ZeRO: no process holds the whole model."""
    return bool(getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False))


def save_model(trainer, tokenizer, card: dict, out: Path, card_name: str) -> None:
    """Write adapter (or full model), tokenizer and card to `out` atomically: a crash
    never leaves a half-written model for DVC to cache. Every process calls it; a sharded
    model is gathered by the Trainer (all processes), and only the main process writes."""
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    if sharded(trainer):
        trainer.save_model(str(tmp))  # collective; the Trainer writes on the main process only
    if not is_main_process():
        return
    if not sharded(trainer):
        shutil.rmtree(tmp, ignore_errors=True)
        # peft writes the base model's path into adapter_config.json and README.md: name it
        # as model.base does instead (a hub id, say), not as the local cache folder it was
        # loaded from, so the folder is the same on every machine (and DVC sees no change).
        if hasattr(trainer.model, "peft_config"):
            for config in trainer.model.peft_config.values():
                config.base_model_name_or_path = card["base"]
            base = trainer.model.get_base_model()
            base.config._name_or_path = base.name_or_path = card["base"]  # README.md's base_model and tags
            # The vocabulary is never resized here, so the base embeddings are never saved; saying so
            # also keeps peft from asking the hub whether model.base (a hub id now) has a config.json.
            trainer.model.save_pretrained(tmp, safe_serialization=True, save_embedding_layers=False)
        else:
            trainer.model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    _sort_adapter_config(tmp / "adapter_config.json")
    (tmp / card_name).write_text(json.dumps(card, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def _sort_adapter_config(path: Path) -> None:
    """peft keeps target_modules as a set and writes it in hash order, which changes from
    run to run: sort it, so identical training gives an identical model folder (and DVC
    does not rerun evaluate)."""
    if not path.is_file():
        return
    config = json.loads(path.read_text())
    for key, value in config.items():
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            config[key] = sorted(value)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
