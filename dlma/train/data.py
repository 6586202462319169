"""Preference table -> tokenised training set (the exact tokens `score` used)."""

from __future__ import annotations

import logging
import math

import polars as pl

from dlma.core.errors import DlmaError
from dlma.core.tables import require_table
from dlma.lm.logprobs import response_logprobs
from dlma.lm.params import PromptsParams
from dlma.lm.prompts import encode_contexts, encode_response

log = logging.getLogger(__name__)

REQUIRED = ("id", "prompt", "chosen", "rejected", "margin")
REFERENCE = ("ref_logp_chosen", "ref_logp_rejected")


def check_preferences(frame: pl.DataFrame, source: str) -> bool:
    """Validate the table; return whether it carries the reference log-probs."""
    require_table(frame, REQUIRED, source, producer="filter",
                  empty_hint=": no preference pairs to train on (see reports/filter.json)")
    has_reference = all(c in frame.columns for c in REFERENCE)
    numeric = ["margin", *REFERENCE] if has_reference else ["margin"]
    for column in numeric:
        values = frame[column].cast(pl.Float64)
        bad = frame.filter(values.is_null() | values.is_nan() | values.is_infinite())
        if bad.height:
            raise DlmaError(f"'{source}': field '{column}' is NaN or missing in row id={bad['id'][0]!r} ({bad.height} rows)")
    return has_reference


def tokenise_preferences(
    frame: pl.DataFrame, tokenizer, prompts: PromptsParams, *, max_length: int
) -> tuple[list[dict], dict]:
    """Rows of prompt_ids / chosen_ids / rejected_ids (+ margin, ids, reference log-probs
    when present); the response tokens are the table's chosen_ids / rejected_ids when it
    has them (the filter stage writes the scored tokens). Pairs longer than max_length are skipped and counted: truncating them
    would change the tokens the reference log-probs were computed on."""
    prompt_ids = encode_contexts(tokenizer, prompts, frame["prompt"].to_list(), "bare")
    rows, skipped = [], 0
    has_reference = all(c in frame.columns for c in REFERENCE)
    has_ids = all(c in frame.columns for c in ("chosen_ids", "rejected_ids"))
    for index, record in enumerate(frame.iter_rows(named=True)):
        if has_ids:  # the tokens that were sampled and scored
            chosen, rejected = list(record["chosen_ids"]), list(record["rejected_ids"])
        else:  # a preference file of texts only: encoded as the official code does, with EOS
            chosen, rejected = encode_response(tokenizer, record["chosen"]), encode_response(tokenizer, record["rejected"])
        if len(prompt_ids[index]) + max(len(chosen), len(rejected)) > max_length:
            skipped += 1
            continue
        row = {
            "id": record["id"], "prompt_ids": prompt_ids[index], "chosen_ids": chosen,
            "rejected_ids": rejected, "margin": float(record["margin"]),
        }
        if has_reference:
            row["ref_chosen_logps"] = float(record["ref_logp_chosen"])
            row["ref_rejected_logps"] = float(record["ref_logp_rejected"])
        rows.append(row)
    if skipped:
        log.warning("skipped %d pair(s) longer than train.max_length=%d tokens", skipped, max_length)
    if not rows:
        raise DlmaError(f"every pair is longer than train.max_length={max_length}; raise it")
    return rows, {"pairs": len(rows), "skipped_too_long": skipped}


def add_reference_logps(rows: list[dict], model, tokenizer, *, batch_size: int, autocast_dtype=None) -> dict | None:
    """Compute the reference log-probs of every pair once, before training: when the table
    lacks them, or (`autocast_dtype`) in training's reduced precision. Returns, where the
    rows had stored ones, how far the new values moved from them (nats per response)."""
    import contextlib

    import numpy as np
    import torch

    pairs = [(r["prompt_ids"], r["chosen_ids"]) for r in rows] + [(r["prompt_ids"], r["rejected_ids"]) for r in rows]
    device_type = next(model.parameters()).device.type
    autocast = torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    with autocast:
        logps = response_logprobs(model, pairs, pad_id=tokenizer.pad_token_id, batch_size=batch_size,
                                  padding_side="right", desc="reference")  # trl's collator pads on the right
    stored = [r.get("ref_chosen_logps") for r in rows] + [r.get("ref_rejected_logps") for r in rows]
    for index, row in enumerate(rows):
        row["ref_chosen_logps"] = float(logps[index])
        row["ref_rejected_logps"] = float(logps[len(rows) + index])
        if not (math.isfinite(row["ref_chosen_logps"]) and math.isfinite(row["ref_rejected_logps"])):
            raise DlmaError(f"reference log-prob is not finite for id={row['id']!r}")
    if any(value is None for value in stored):
        return None
    gaps = np.abs(np.asarray(logps) - np.asarray(stored, dtype=np.float64))
    return {"responses": int(gaps.size), "median_gap": float(np.median(gaps)), "max_gap": float(gaps.max())}


def check_reference_numerics(rows: list[dict], model, tokenizer, *, pairs: int, tolerance: float | None,
                             autocast_dtype=None) -> float:
    """The numerics contract between score and train: on the first `pairs` pairs, the
    policy's log-probs at step 0 (the base weights, in training's numerics) must equal the
    stored reference log-probs within `tolerance` nats per response; else the DPO rewards
    start from noise. Returns the largest difference found."""
    import contextlib

    import torch

    if tolerance is None or not rows:
        return 0.0
    sample = rows[:pairs]
    sequences = [(r["prompt_ids"], r["chosen_ids"]) for r in sample] + [(r["prompt_ids"], r["rejected_ids"]) for r in sample]
    stored = [r["ref_chosen_logps"] for r in sample] + [r["ref_rejected_logps"] for r in sample]
    device_type = next(model.parameters()).device.type
    autocast = torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    with autocast:
        policy = response_logprobs(model, sequences, pad_id=tokenizer.pad_token_id, batch_size=len(sequences),
                                   padding_side="right", desc="check")
    gaps = [abs(a - b) for a, b in zip(policy, stored)]
    worst = max(range(len(gaps)), key=gaps.__getitem__)
    if gaps[worst] > tolerance:
        row = sample[worst % len(sample)]
        raise DlmaError(
            f"stored reference log-probs differ from the policy's at step 0 by {gaps[worst]:.4f} nats on id={row['id']!r} "
            f"(train.reference_tolerance={tolerance}): the score stage ran with other numerics or another format than "
            "training (score.dtype, score.attn_implementation, train.dtype, prompts.*). Use the same, or rerun score"
        )
    return float(gaps[worst])
