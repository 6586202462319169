"""Fit a reward model on human-labelled pairs with trl's RewardTrainer (Bradley-Terry
loss, -log sigmoid(r_chosen - r_rejected)) and measure it on the held-out pairs.

trl does the training; what is here is the wiring: the pairs arrive tokenised by
`dlma.reward.inputs` (the format the judge scores later), pairs over reward.max_length
are skipped and counted (trl would drop them silently), and the held-out accuracy gets
a bootstrap interval.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import torch

from dlma.core.errors import DlmaError
from dlma.core.numerics import DtypeChoice
from dlma.evaluate.stats import accuracy_summary
from dlma.reward.inputs import reward_inputs
from dlma.reward.params import RewardParams

log = logging.getLogger(__name__)
REWARD_CARD = "dlma_reward.json"


def tokenised_pairs(tokenizer, frame: pl.DataFrame, max_length: int) -> tuple[list[dict], int]:
    """trl's pre-tokenised rows (chosen_ids, rejected_ids), and how many pairs were over
    max_length (skipped)."""
    rows, too_long = [], 0
    for query, chosen, rejected in zip(frame["prompt"], frame["chosen"], frame["rejected"]):
        chosen_ids, rejected_ids = reward_inputs(tokenizer, query, chosen), reward_inputs(tokenizer, query, rejected)
        if max(len(chosen_ids), len(rejected_ids)) > max_length:
            too_long += 1
            continue
        rows.append({"chosen_ids": chosen_ids, "rejected_ids": rejected_ids})
    return rows, too_long


@torch.inference_mode()
def reward_scores(model, pad_id: int, sequences: list[list[int]], *, batch_size: int) -> np.ndarray:
    """One scalar reward per token sequence. Batches are formed by length (less padding)
    and right-padded; the classification head reads the last token that is not the pad
    id, which is the sequence's own last token whatever the padding (also when pad = EOS:
    the chat template ends with a newline after it)."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    out = np.empty(len(sequences))
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        width = max(len(sequences[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, index in enumerate(chunk):
            ids[row, : len(sequences[index])] = torch.tensor(sequences[index])
            mask[row, : len(sequences[index])] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, 0]
        out[chunk] = logits.float().cpu().numpy()
    return out


def holdout_accuracy(model, tokenizer, frame: pl.DataFrame, params: RewardParams) -> dict:
    """Share of held-out pairs where the human-chosen answer gets the higher reward, with
    its 95% bootstrap interval over pairs (ties count as wrong)."""
    rows, too_long = tokenised_pairs(tokenizer, frame, params.max_length)
    if not rows:
        raise DlmaError(f"no held-out human pair fits reward.max_length={params.max_length}; raise it")
    chosen = reward_scores(model, tokenizer.pad_token_id, [r["chosen_ids"] for r in rows], batch_size=params.batch_size)
    rejected = reward_scores(model, tokenizer.pad_token_id, [r["rejected_ids"] for r in rows], batch_size=params.batch_size)
    correct = chosen > rejected
    return accuracy_summary(correct, samples=params.bootstrap, seed=params.seed) | {
        "pairs": int(correct.size), "skipped_too_long": too_long}


def train_reward(params: RewardParams, base_path: Path, train: pl.DataFrame, holdout: pl.DataFrame, out: Path,
                 card: dict, numerics: DtypeChoice) -> dict:
    """Train, measure on the held-out pairs, and write the merged model (safetensors),
    tokenizer and card to `out` atomically. Returns the report."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from dlma.model import load_tokenizer

    if train.height == 0:
        raise DlmaError("the human stage wrote no training pairs (reports/human.json says why); the reward model needs them")
    tokenizer = load_tokenizer(base_path)
    rows, too_long = tokenised_pairs(tokenizer, train, params.max_length)
    if not rows:
        raise DlmaError(f"every human training pair is over reward.max_length={params.max_length} tokens; raise it")
    if too_long:
        log.warning("reward: skipped %d training pair(s) over reward.max_length=%d", too_long, params.max_length)
    device = numerics.device
    torch.manual_seed(params.seed)  # the new head's initial weights
    # sdpa: eager attention would hold every layer's full attention matrix (GBs at batch 8 x 2 x 384).
    model = AutoModelForSequenceClassification.from_pretrained(str(base_path), num_labels=1, dtype=torch.float32,
                                                               attn_implementation="sdpa")
    model.config.pad_token_id = tokenizer.pad_token_id
    peft_config = LoraConfig(task_type="SEQ_CLS", r=params.lora_r, lora_alpha=params.lora_alpha, lora_dropout=0.0,
                             target_modules="all-linear") if params.peft == "lora" else None
    with tempfile.TemporaryDirectory(prefix="dlma-reward-") as scratch:
        config = RewardConfig(
            # Memory goes with the pairs of one forward pass (activations kept for the backward
            # pass: ~0.7 GiB per pair of 256-token answers here, float32), so a step of
            # batch_size pairs runs as micro-batches whose gradients add up to the same update.
            output_dir=scratch, per_device_train_batch_size=params.micro_batch_size,
            gradient_accumulation_steps=params.batch_size // params.micro_batch_size, num_train_epochs=params.epochs,
            learning_rate=params.learning_rate, gradient_checkpointing=False, seed=params.seed, data_seed=params.seed,
            bf16=numerics.dtype == torch.bfloat16, fp16=numerics.dtype == torch.float16, use_cpu=device.type == "cpu",
            max_length=params.max_length, logging_steps=1, save_strategy="no", report_to="none",
            dataloader_num_workers=0, disable_tqdm=False,
        )
        trainer = RewardTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                                peft_config=peft_config)
        result = trainer.train()
    fitted = trainer.model.merge_and_unload() if peft_config is not None else trainer.model
    fitted = fitted.eval().float()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    report = {"train_pairs": len(rows), "skipped_too_long": too_long, "steps": result.global_step,
              "numerics": {numerics.key: numerics.record()},
              "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
              "holdout": holdout_accuracy(fitted, tokenizer, holdout, params) if holdout.height else {"skipped": "no held-out pairs"}}
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    fitted.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / REWARD_CARD).write_text(json.dumps(card | {"holdout": report["holdout"]}, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return report
